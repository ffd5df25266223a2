"""Which Python runs mlx-lm, and running `worker.py` in it.

mlx-lm pins its own transformers range and MLX wheels exist only for some platforms, so it may
live in a separate venv: `--mlx-python`, else $MYTHOS_MLX_PYTHON, else this interpreter when it
has mlx-lm (the `mlx` extra). Every MLX step runs in a subprocess of that Python, so the same code
serves both set-ups and a crash in MLX cannot take this process down.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from mythos_convert.errors import MythosError

MLX_VERSION, MLX_LM_VERSION = "0.32.4", "0.32.2"  # what the tests run; the extra pins the same
INSTALL = f"pip install 'mythos-convert[mlx]' (mlx[cpu]=={MLX_VERSION} and mlx-lm[cpu]=={MLX_LM_VERSION})"
ENV = "MYTHOS_MLX_PYTHON"
WORKER = Path(__file__).with_name("worker.py")


def mlx_python(explicit: str | Path | None = None) -> str:
    """The interpreter that runs mlx-lm.

    Raises:
        MythosError: none has mlx-lm (the message names the install command), or a given path does not.
    """
    given = explicit or os.environ.get(ENV)
    if not given:
        if importlib.util.find_spec("mlx_lm") is None:
            raise MythosError(
                f"MLX export needs mlx-lm, which is not installed: {INSTALL}, "
                f"or pass --mlx-python (or set {ENV}) to a Python that has it"
            )
        return sys.executable
    probe = subprocess.run([str(given), "-c", "import mlx_lm"], capture_output=True, text=True)
    if probe.returncode:
        last = (probe.stderr.strip().splitlines() or ["it did not start"])[-1]
        raise MythosError(f"{given} cannot import mlx_lm ({last}): in that Python, {INSTALL}")
    return str(given)


def worker_env() -> dict[str, str]:
    """The worker's environment: no PYTHONPATH (the other Python must not import this one's packages), offline."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return env


def run_worker(python: str, *args: str | Path) -> dict[str, Any]:
    """Run one worker command; its JSON result, or a MythosError with mlx-lm's last error line."""
    done = subprocess.run([python, str(WORKER), *map(str, args)], capture_output=True, text=True, env=worker_env())
    if done.returncode:
        lines = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
        raise MythosError(f"mlx-lm failed on `{args[0]}`: {lines[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
