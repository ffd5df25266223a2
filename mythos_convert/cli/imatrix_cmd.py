"""`mythos-convert imatrix CKPT --out FILE`: an importance matrix for K-quants, from the native model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from typer import Option

from mythos_convert.cli import options as o


def imatrix(
    ckpt: o.CheckpointArg,
    out: Annotated[Path, Option(help="Output imatrix file (llama.cpp's GGUF imatrix format).")],
    data: Annotated[
        list[Path] | None,
        Option(help="Calibration text (as `train --data`); default: the run's validation split."),
    ] = None,
    ctx: Annotated[int, Option(help="Tokens per window (capped at the model's context).")] = 512,
    chunks: o.ChunksOpt = None,
    tokenizer: o.TokenizerOpt = None,
    config: o.ConfigOpt = None,
    force: o.ForceOpt = False,
    quiet: o.QuietOpt = False,
) -> None:
    """Collect the mean squared input of every matrix on calibration text; `gguf --imatrix OUT` uses it.

    Example: mythos-convert imatrix runs/tiny/ckpt.pt --out runs/tiny/imatrix.gguf
    """
    from mythos_convert.quant.imatrix import make_imatrix
    from mythos_convert.support.ui import result

    stats = make_imatrix(
        ckpt, out, force=force, data=data, tokenizer=tokenizer, config_yaml=config, ctx=ctx, chunks=chunks
    )
    result(f"{out}  {len(stats.sums)} matrices  {stats.chunk_count} x {stats.chunk_size} tokens")
