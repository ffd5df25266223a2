"""`mythos-convert space OUT --repo OWNER/NAME-demo`: a Gradio demo of a published model, pushed as a Space."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from typer import Argument, Option

from mythos_convert.cli import options as o


def space(
    out: Annotated[Path, Argument(help="Folder to write the Space into (app.py, requirements.txt, README.md).")],
    repo: Annotated[str, o.repo_option("The Space's repo id OWNER/NAME-demo (created if missing).")] = "",
    model: Annotated[
        str | None, Option(help="The published model it demonstrates (default: --repo without -demo).")
    ] = None,
    endpoint: o.EndpointOpt = None,
    token: o.TokenOpt = None,
    private: Annotated[bool, Option("--private", help="Create the Space private.")] = False,
    dry_run: Annotated[bool, o.dry_run_option("Write the files and show the upload; upload nothing.")] = False,
    force: o.ForceOpt = False,
    quiet: o.QuietOpt = False,
) -> None:
    """Write OUT/app.py (loads the model with transformers, samples as its card says) and push it as a Space."""
    from mythos_convert.hub.publish import publish_space, render_published
    from mythos_convert.support.ui import results

    published = publish_space(
        out, repo, model=model, token=token, dry_run=dry_run, force=force, endpoint=endpoint, private=private
    )
    results(render_published(published))
