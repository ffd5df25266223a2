"""`mythos-convert demo [OUT]`: the whole product on the embedded default, ending with one table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from typer import Argument, Option

from mythos_convert.cli import options as o


def demo(
    out: Annotated[Path, Argument(help="Folder for everything the demo makes.")] = Path("demo-out"),
    max_steps: Annotated[int | None, Option(help="Training steps (default: the tiny preset's).")] = None,
    force: o.ForceOpt = False,
    quiet: o.QuietOpt = False,
) -> None:
    """Train tiny on the embedded corpus, export to HF and GGUF (f16, q8_0), verify, eval, card, push --dry-run."""
    from mythos_convert.demo import render_demo, run_demo
    from mythos_convert.support.ui import results

    results(render_demo(run_demo(out, force=force, max_steps=max_steps)))
