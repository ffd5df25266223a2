"""`mythos-convert space OUT --repo OWNER/NAME-demo`: write a Gradio demo of a published model and push it as a Space."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mythos_convert.cli.common import ForceOpt, QuietOpt, apply_quiet


def space(
    out: Annotated[Path, typer.Argument(help="Folder to write the Space into (app.py, requirements.txt, README.md).")],
    repo: Annotated[str, typer.Option("--repo", help="The Space's repo id OWNER/NAME-demo (created if missing).")] = "",
    model: Annotated[
        str | None, typer.Option(help="The published model it demonstrates (default: --repo without -demo).")
    ] = None,
    endpoint: Annotated[str | None, typer.Option(help="Hub URL (default: HF_ENDPOINT or huggingface.co).")] = None,
    token: Annotated[str | None, typer.Option(help="Write token (default: HF_TOKEN or `hf auth login`).")] = None,
    private: Annotated[bool, typer.Option("--private", help="Create the Space private.")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Write the files and show the upload; upload nothing.")
    ] = False,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Write OUT/app.py (loads the model with transformers, samples as its card says) and push it as a Space."""
    apply_quiet(quiet)
    from mythos_convert.errors import MythosError
    from mythos_convert.hub.push import dry_run_summary, is_repo_id, plan_push, plan_table, resolve_token
    from mythos_convert.hub.space import default_model, push_space, write_space
    from mythos_convert.support.ui import info, result

    if not repo:
        raise MythosError("--repo is required: pass the Space's repo id as OWNER/NAME-demo")
    if not is_repo_id(repo):  # before anything is written
        raise MythosError(f"--repo {repo!r} is not a Hub repo id: use OWNER/NAME-demo, e.g. my-user/mythos-tiny-demo")
    model_id = default_model(repo, model)
    if not dry_run:
        token = resolve_token(token)  # before writing: a missing token is the commonest mistake
    written = write_space(out, model_id, force=force)
    info(f"wrote {', '.join(written.files)} to {written.folder} for {model_id}")
    plan = plan_push(out, repo, endpoint=endpoint, private=private, commit_message=f"Demo of {model_id}")
    if dry_run:
        table = plan_table(plan)
        table.title = f"{plan.endpoint}/spaces/{plan.repo_id} @ {plan.revision}"
        result(table)
        result(dry_run_summary(plan).replace(f"{plan.endpoint}/", f"{plan.endpoint}/spaces/", 1))
        return
    pushed = push_space(plan, token)
    result(pushed.repo_url)
