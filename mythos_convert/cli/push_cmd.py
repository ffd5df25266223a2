"""`mythos-convert push [OUT] --repo OWNER/NAME`: check the folder, then publish it in one commit."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from typer import Argument, Option

from mythos_convert.cli import options as o


def push(
    out: Annotated[Path, Argument(help="The exported folder to publish.")] = Path("out"),
    repo: Annotated[str, o.repo_option("Hub repo id OWNER/NAME (created if missing).")] = "",
    gguf_repo: Annotated[str | None, Option(help=o.GGUF_REPO)] = None,
    endpoint: o.EndpointOpt = None,
    token: o.TokenOpt = None,
    private: Annotated[bool, Option("--private", help="Create the repo private.")] = False,
    revision: Annotated[str | None, Option(help="Branch to commit to (created if missing).")] = None,
    create_pr: Annotated[bool, Option("--create-pr", help="Open a pull request instead of committing.")] = False,
    commit_message: Annotated[str | None, Option(help="Commit message.")] = None,
    include: Annotated[list[str] | None, Option(help="Only upload files matching this glob (repeatable).")] = None,
    exclude: Annotated[
        list[str] | None, Option(help="Skip files matching this glob, e.g. '*.gguf' (repeatable).")
    ] = None,
    dry_run: Annotated[bool, o.dry_run_option("Show what would be uploaded; upload nothing.")] = False,
    skip_checks: Annotated[bool, Option("--skip-checks", help="Publish even if the folder fails its checks.")] = False,
    quiet: o.QuietOpt = False,
) -> None:
    """Publish OUT to the Hub: checks (config, weights, tokenizer, card, last verify), then one commit."""
    from mythos_convert.hub.publish import publish, render_published
    from mythos_convert.support.ui import results

    commit = dict(revision=revision, create_pr=create_pr, private=private, commit_message=commit_message)
    upload = dict(endpoint=endpoint, include=include, exclude=exclude)
    published = publish(
        out, repo, gguf_repo=gguf_repo, token=token, dry_run=dry_run, skip_checks=skip_checks, **commit, **upload
    )
    results(render_published(published))
