"""`mythos-convert verify OUT`: parity of an exported folder (or .gguf file) with the native model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from typer import Argument, Option

from mythos_convert.cli import options as o
from mythos_convert.cli.common import skip_exit_collection


def verify(
    out: Annotated[Path, Argument(help="Exported folder (from `hf`) or .gguf file.")],
    ckpt: Annotated[Path | None, Option(help="Native checkpoint (default: the one recorded at export time).")] = None,
    tokenizer: o.TokenizerOpt = None,
    config: o.ConfigOpt = None,
    layerwise: Annotated[
        bool | None,
        Option(
            "--layerwise/--whole",
            help="Block by block (memory: about two blocks) or the whole models (logits and greedy). "
            "Default: layerwise only where 2x the weights exceed the available memory.",
        ),
    ] = None,
    quiet: o.QuietOpt = False,
) -> None:
    """Run the native model and the export on the same tokens; exit non-zero past tolerance."""
    from mythos_convert import api

    mode = "auto" if layerwise is None else ("layerwise" if layerwise else "whole")
    api.verify(out, ckpt, tokenizer=tokenizer, config_yaml=config, mode=mode)
    skip_exit_collection()  # verify.json is written and closed, the hashing thread joined
