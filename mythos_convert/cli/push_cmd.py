"""`mythos-convert push [OUT] --repo OWNER/NAME`: check the folder, then publish it in one commit."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mythos_convert.cli.common import QuietOpt, apply_quiet


def push(
    out: Annotated[Path, typer.Argument(help="The exported folder to publish.")] = Path("out"),
    repo: Annotated[str, typer.Option("--repo", help="Hub repo id OWNER/NAME (created if missing).")] = "",
    gguf_repo: Annotated[
        str | None,
        typer.Option(
            "--gguf-repo", help="Publish the GGUF files, Modelfile and a GGUF card to this repo (OWNER/NAME-GGUF)."
        ),
    ] = None,
    endpoint: Annotated[str | None, typer.Option(help="Hub URL (default: HF_ENDPOINT or huggingface.co).")] = None,
    token: Annotated[str | None, typer.Option(help="Write token (default: HF_TOKEN or `hf auth login`).")] = None,
    private: Annotated[bool, typer.Option("--private", help="Create the repo private.")] = False,
    revision: Annotated[str | None, typer.Option(help="Branch to commit to (created if missing).")] = None,
    create_pr: Annotated[bool, typer.Option("--create-pr", help="Open a pull request instead of committing.")] = False,
    commit_message: Annotated[str | None, typer.Option(help="Commit message.")] = None,
    include: Annotated[
        list[str] | None, typer.Option(help="Only upload files matching this glob (repeatable).")
    ] = None,
    exclude: Annotated[
        list[str] | None, typer.Option(help="Skip files matching this glob, e.g. '*.gguf' (repeatable).")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be uploaded; upload nothing.")] = False,
    skip_checks: Annotated[
        bool, typer.Option("--skip-checks", help="Publish even if the folder fails its checks.")
    ] = False,
    quiet: QuietOpt = False,
) -> None:
    """Publish OUT to the Hub: checks (config, weights, tokenizer, card, last verify), then one commit."""
    apply_quiet(quiet)
    import contextlib

    from mythos_convert.errors import MythosError
    from mythos_convert.hub.push import (
        checked_push,
        dry_run_summary,
        plan_table,
        refuse_plan_credentials,
        resolve_token,
    )
    from mythos_convert.hub.push import push as do_push
    from mythos_convert.support.ui import info, is_quiet, result, warn

    if not repo:
        raise MythosError("--repo is required: pass the Hub repo id as OWNER/NAME")
    if skip_checks:
        warn("--skip-checks: publishing without the checks (the last verify and its file hashes are not checked)")
    if not dry_run:
        token = resolve_token(token)  # before the slow checks: a missing token is the commonest mistake
    options = dict(
        dry_run=dry_run,
        skip_checks=skip_checks,
        endpoint=endpoint,
        revision=revision,
        create_pr=create_pr,
        private=private,
        commit_message=commit_message,
        include=include,
        exclude=exclude,
    )
    with contextlib.ExitStack() as stack:  # the plans' private copy lives until the last commit
        if gguf_repo:
            from mythos_convert.hub.gguf_repo import checked_pushes

            plans = stack.enter_context(checked_pushes(out, repo, gguf_repo, **options))
        else:
            plans = [stack.enter_context(checked_push(out, repo, **options))]
        if dry_run:
            for plan in plans:
                result(plan_table(plan))
                result(dry_run_summary(plan))
            return
        if is_quiet():
            from huggingface_hub.utils import disable_progress_bars

            disable_progress_bars()
        for plan in plans:  # every file, before the first commit
            refuse_plan_credentials(plan, token)
        for plan in plans:
            info(f"uploading {len(plan.files)} files to {plan.endpoint}/{plan.repo_id} ({plan.revision})")
            pushed = do_push(plan, token)
            result(pushed.commit_url)
            if pushed.pr_url:
                result(pushed.pr_url)
