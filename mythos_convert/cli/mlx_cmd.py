"""`mythos-convert mlx FOLDER --bits 4,8`: MLX quantized folders of an HF export, verified in mlx-lm."""

from __future__ import annotations

from mythos_convert.cli import options as o


def mlx(
    folder: o.MLXFolderArg,
    bits: o.BitsOpt = "4,8",
    mlx_python: o.MlxPythonOpt = None,
    force: o.ForceOpt = False,
    no_verify: o.NoMLXVerifyOpt = False,
    quiet: o.QuietOpt = False,
) -> None:
    """Write MLX quantized folders (mlx-lm's own quantizer), each checked in mlx-lm against the native model."""
    from mythos_convert.mlx.export import export_mlx
    from mythos_convert.support.ui import result

    for out in export_mlx(folder, bits, force=force, verify=not no_verify, python=mlx_python):
        result(out.summary())
