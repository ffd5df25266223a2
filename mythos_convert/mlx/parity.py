"""MLX's logits and greedy tokens for an MLX (or HF) folder, beside the native engine's, on the verifier's sequences."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mythos_convert.mlx.runtime import run_worker
from mythos_convert.verify.inputs import GREEDY_TOKENS
from mythos_convert.verify.inputs import sequences as verify_sequences


@dataclass
class MLXRun:
    """What mlx-lm computed: logits [T, V] per sequence, greedy continuations, and what it loaded."""

    logits: list[torch.Tensor]
    greedy: list[list[int]]
    info: dict[str, Any]


def sequences(tokenizer, vocab_size: int, max_len: int) -> list[list[int]]:
    """The verifier's sequences (`verify.inputs.sequences`), those longer than one token."""
    return [s for s in verify_sequences(tokenizer, vocab_size, max_len) if len(s) > 1]


def run_mlx(python: str, folder: Path, seqs: list[list[int]], greedy: int = GREEDY_TOKENS) -> MLXRun:
    """Load `folder` with `mlx_lm.load` in `python` and run every sequence."""
    with tempfile.TemporaryDirectory(prefix="mythos-mlx-") as tmp:
        request, out = Path(tmp) / "request.json", Path(tmp) / "logits.npz"
        request.write_text(json.dumps({"seqs": seqs, "greedy": greedy}))
        info = run_worker(python, "run", Path(folder).resolve(), request, out)
        with np.load(out) as arrays:
            logits = [torch.from_numpy(arrays[f"logits_{i}"].copy()) for i in range(len(seqs))]
    return MLXRun(logits, info.pop("greedy"), info)


def native_run(model, seqs: list[list[int]], greedy: int = GREEDY_TOKENS) -> tuple[list[torch.Tensor], list[list[int]]]:
    """The native engine's logits per sequence and greedy continuations (full recompute, float32)."""
    logits, tokens = [], []
    with torch.no_grad():
        for ids in seqs:
            logits.append(model(torch.tensor([ids]))[0].float())
            seq = list(ids)
            for _ in range(greedy):
                seq.append(int(model(torch.tensor([seq]))[0, -1].argmax()))
            tokens.append(seq[len(ids) :])
    return logits, tokens
