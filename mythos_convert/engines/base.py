"""The one interface every runtime offers: token ids -> float32 logits [T, V], and greedy tokens.

Verify and eval hold an `Engine` and never ask which runtime is behind it: the native model in
torch (`engines.native`), transformers' LlamaForCausalLM (`engines.hf`) or llama.cpp
(`engines.llamacpp`). Each module builds one; what only a verifier needs of a runtime (transformers'
KV cache, its modules for `localise`) stays reachable through `model`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

Ids = Sequence[int] | np.ndarray  # one sequence of token ids (eval's windows are numpy arrays)


@dataclass
class Engine:
    """One loaded model: its logits and greedy functions, and how long it has spent computing logits."""

    target: str  # the name results are reported and recorded under
    kind: str  # "native", "hf" or "gguf"
    engine: str  # "native (torch)", "transformers", "llama.cpp", ...
    dtype: str  # F16, Q4_K_M, float32, ...
    vocab: int  # logits per position
    run: Callable[[Ids], torch.Tensor]  # logits [T, V] of the whole sequence from an empty cache
    decode: Callable[[list[int], int], list[int]]  # (ids, n) -> n greedy tokens
    close: Callable[[], None] = lambda: None
    model: Any = None  # the runtime's own model object (torch module, llama_cpp.Llama)
    seconds: float = 0.0
    tokens: int = 0

    def logits(self, ids: Ids) -> torch.Tensor:
        """Logits [T, V] (float32) of one sequence, timed."""
        started = time.perf_counter()
        out = self.run(ids)
        self.seconds += time.perf_counter() - started
        self.tokens += len(ids)
        return out

    def greedy(self, ids: Sequence[int], n: int) -> list[int]:
        """The `n` tokens greedy decoding appends to `ids`."""
        return self.decode(list(ids), n)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else float("nan")


def greedy_continue(step_fn: Callable[[list[int]], torch.Tensor], ids: Sequence[int], n: int) -> list[int]:
    """Greedy-decode `n` tokens: `step_fn(ids) -> logits [T, V]` of the sequence so far (its last row is read).

    A full recompute each step keeps an engine's cache out of a comparison; `incremental` turns a
    runtime with a cache into a step function that feeds only the new token.
    """
    seq = list(ids)
    new: list[int] = []
    for _ in range(n):
        logits = step_fn(seq)
        token = int(logits[-1].float().argmax())
        seq.append(token)
        new.append(token)
    return new


def incremental(
    prefill: Callable[[list[int]], torch.Tensor], step: Callable[[int, int], torch.Tensor]
) -> Callable[[list[int]], torch.Tensor]:
    """A `greedy_continue` step function that feeds only the new token when the sequence grew by one.

    `prefill(ids)` and `step(token, position)` return the last row of logits [V]. Greedy decoding
    then costs one cached step per token instead of a recompute of the whole sequence.
    """
    state: dict[str, list[int]] = {"ids": []}

    def run(ids: list[int]) -> torch.Tensor:
        prev = state["ids"]
        if prev and len(ids) == len(prev) + 1 and ids[:-1] == prev:
            last = step(ids[-1], len(prev))
        else:
            last = prefill(ids)
        state["ids"] = list(ids)
        return last[None, :]

    return run
