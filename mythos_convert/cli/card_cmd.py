"""`mythos-convert card OUT [--meta FILE]`: (re)write the model card of an exported folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from typer import Argument, Option

from mythos_convert.cli import options as o


def card(
    out: Annotated[Path, Argument(help="The exported folder (written by `mythos-convert hf`).")] = Path("out"),
    meta: Annotated[
        Path | None,
        Option(help="Card metadata YAML (license, developer, prompts, ...); default: the packaged one."),
    ] = None,
    quiet: o.QuietOpt = False,
) -> None:
    """Render OUT/README.md from the folder's real tensors, training record, GGUF files and verify results."""
    from mythos_convert.api import render_card
    from mythos_convert.support.ui import result

    result(str(render_card(out, meta)))
