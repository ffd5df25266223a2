"""Which Python runs the MLX folders `eval` measures, and what happens without one.

MLX folders found beside an HF export are measured when a Python with mlx-lm is at hand
(`--mlx-python`, $MYTHOS_MLX_PYTHON, or this one with the `mlx` extra) and skipped otherwise, with
one line naming the install command: an `eval` of a folder must not fail because an optional
runtime is missing. An MLX folder given as a TARGET, or a `--mlx-python` that cannot import
mlx-lm, is a request that cannot be met: one `error:` line.
"""

from __future__ import annotations

from pathlib import Path

from mythos_convert.errors import MythosError
from mythos_convert.evaluate.targets import Target
from mythos_convert.mlx.runtime import INSTALL, mlx_python


def with_mlx_runtime(targets: list[Target], explicit: str | Path | None) -> tuple[list[Target], list[str], str | None]:
    """The targets to measure, the skip line (if any) for the MLX folders left out, and the
    interpreter that runs the MLX targets (None when none is measured).

    Raises:
        MythosError: no Python with mlx-lm while an MLX folder was given as a TARGET or
            `explicit` was given (the message names the install command).
    """
    mlx = [t for t in targets if t.mlx is not None]
    if not mlx:
        return targets, [], None
    try:
        python = mlx_python(explicit)
    except MythosError:
        if explicit is not None or any(not t.found for t in mlx):
            raise
        names = ", ".join(t.key for t in mlx)
        line = f"skipped {names}: MLX folders run in mlx-lm, which is not installed: {INSTALL}, or pass --mlx-python"
        return [t for t in targets if t.mlx is None], [line], None
    return targets, [], python
