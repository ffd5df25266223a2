"""An MLX folder as an `Engine` for `eval`: mlx-lm (CPU) in its own Python, loaded once, one window at a time.

`worker.py serve` loads the folder with `mlx_lm.load` and answers one request per line (token
ids in, the logits at every position out, as a float32 .npy file), so `evaluate.measure` runs it
beside the native engine, transformers and llama.cpp on the same windows, and eval's KL
divergence and perplexity code reads its logits as it reads theirs. The worker ends when its
input closes, so it never outlives this process.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from mythos_convert.engines.base import Engine, Ids, greedy_continue
from mythos_convert.errors import MythosError
from mythos_convert.mlx.runtime import WORKER, worker_env

ENGINE_NAME = "mlx-lm (CPU)"


class MLXWorker:
    """One `worker.py serve` process holding one loaded MLX folder."""

    def __init__(self, python: str, folder: Path) -> None:
        self.folder = folder
        self.tmp = Path(tempfile.mkdtemp(prefix="mythos-mlx-eval-"))
        self.errors: IO[str] = (self.tmp / "stderr.txt").open("w+")
        self.process = subprocess.Popen(
            [python, str(WORKER), "serve", str(folder.resolve())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.errors,
            text=True,
            env=worker_env(),
        )
        self.info: dict[str, Any] = self._answer("loading")

    def _answer(self, doing: str) -> dict[str, Any]:
        line = self.process.stdout.readline() if self.process.stdout else ""
        if not line:
            self.process.wait()
            self.errors.seek(0)
            last = (self.errors.read().strip().splitlines() or [f"exit status {self.process.returncode}"])[-1]
            self.close()
            raise MythosError(f"mlx-lm failed {doing} {self.folder}: {last}")
        return json.loads(line)

    def logits(self, ids: Ids) -> torch.Tensor:
        """Logits [T, V] (float32) of one sequence from an empty cache."""
        out = self.tmp / "logits.npy"
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"ids": [int(i) for i in ids], "out": str(out)}) + "\n")
        self.process.stdin.flush()
        self._answer("running")
        return torch.from_numpy(np.load(out))

    def close(self) -> None:
        if self.process.poll() is None:
            if self.process.stdin is not None:
                self.process.stdin.close()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.errors.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def mlx_engine(target: str, folder: Path, python: str, label: str, vocab: int) -> Engine:
    """An Engine over `folder` run by mlx-lm in `python`; `label` names its type (e.g. "MLX 4-bit")."""
    worker = MLXWorker(python, folder)
    return Engine(
        target=target,
        kind="mlx",
        engine=ENGINE_NAME,
        dtype=label,
        vocab=vocab,
        run=worker.logits,
        decode=lambda ids, n: greedy_continue(worker.logits, ids, n),
        close=worker.close,
        model=worker,
    )
