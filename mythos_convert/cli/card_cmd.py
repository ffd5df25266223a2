"""`mythos-convert card OUT [--meta FILE]`: (re)write the model card of an exported folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mythos_convert.cli.common import QuietOpt, apply_quiet


def card(
    out: Annotated[Path, typer.Argument(help="The exported folder (written by `mythos-convert hf`).")] = Path("out"),
    meta: Annotated[
        Path | None,
        typer.Option(
            "--meta", help="Card metadata YAML (license, developer, prompts, ...); default: the packaged one."
        ),
    ] = None,
    quiet: QuietOpt = False,
) -> None:
    """Render OUT/README.md from the folder's real tensors, training record, GGUF files and verify results."""
    apply_quiet(quiet)
    from mythos_convert.card import REQUIRED_CONFIG_FIELDS, read_config, write_card
    from mythos_convert.errors import MythosError
    from mythos_convert.support.ui import result

    if out.is_dir():  # a card for no model, or for a damaged config, would mislead
        if not (out / "config.json").is_file():
            raise MythosError(f"{out} has no config.json: pass the folder `mythos-convert hf` wrote")
        missing = [key for key in REQUIRED_CONFIG_FIELDS if key not in read_config(out)]
        if missing:
            raise MythosError(
                f"{out / 'config.json'} lacks {missing}, which the card states: re-export the folder with "
                "`mythos-convert hf`"
            )
    result(str(write_card(out, meta)))
