"""The MLX venv (mlx[cpu] + mlx-lm[cpu], pinned) the MLX tests run mlx-lm in, built once and cached.

A venv of its own, not a `.pth` onto the main one: mlx-lm brings its own transformers, numpy and
huggingface_hub, and mythos_convert runs it only through `mythos_convert/mlx/worker.py` in a
subprocess, as it runs a user's `--mlx-python`. Built under `.compat/` (or $MYTHOS_COMPAT_DIR) on
first use: about 75 s and 370 MB here; reused while the pins are unchanged (a marker file, written
last, says the build finished).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import compat_root

from mythos_convert.mlx.runtime import MLX_LM_VERSION, MLX_VERSION

SPEC = (f"mlx[cpu]=={MLX_VERSION}", f"mlx-lm[cpu]=={MLX_LM_VERSION}")


def mlx_venv_python() -> Path:
    """bin/python of the MLX venv, built if missing or stale; a failed install fails the test with pip's output."""
    final = compat_root() / f"mlx-lm-{MLX_LM_VERSION}"
    marker = final / "mythos-compat.json"
    record = {"spec": list(SPEC)}
    if marker.is_file() and json.loads(marker.read_text()) == record:
        return final / "bin" / "python"
    shutil.rmtree(final, ignore_errors=True)
    final.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(final)], check=True)
    pip = [str(final / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "-q", "install", *SPEC]
    done = subprocess.run(pip, capture_output=True, text=True)
    if done.returncode:
        pytest.fail(f"installing {' '.join(SPEC)} into {final} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    marker.write_text(json.dumps(record))
    return final / "bin" / "python"
