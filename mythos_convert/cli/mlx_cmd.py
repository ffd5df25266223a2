"""`mythos-convert mlx FOLDER --bits 4,8`: MLX quantized folders of an HF export, verified in mlx-lm."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from typer import Argument, Option

from mythos_convert.cli import options as o


def mlx(
    folder: Annotated[Path, Argument(help="HF folder written by `mythos-convert hf` (MLX folders go into it).")],
    bits: Annotated[str, Option(help="4 | 8, or a comma list (4,8).")] = "4,8",
    mlx_python: Annotated[
        Path | None,
        Option(help="A Python with mlx-lm (default: $MYTHOS_MLX_PYTHON, else this one)."),
    ] = None,
    force: o.ForceOpt = False,
    no_verify: Annotated[bool, Option("--no-verify", help="Skip the mlx-lm parity check.")] = False,
    quiet: o.QuietOpt = False,
) -> None:
    """Write MLX quantized folders (mlx-lm's own quantizer), each checked in mlx-lm against the native model."""
    from mythos_convert.mlx.export import export_mlx
    from mythos_convert.support.ui import result

    for out in export_mlx(folder, bits, force=force, verify=not no_verify, python=mlx_python):
        result(out.summary())
