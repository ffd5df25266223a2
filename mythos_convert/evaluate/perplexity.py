"""Perplexity over windows of a text, scored the way `llama-perplexity` scores them.

The text is cut into non-overlapping windows of `ctx` tokens. In each window the logits at
position j predict token j+1; llama-perplexity scores only the second half of each window
(positions ctx/2 .. ctx-2: the first half is context, so every scored token sees at least ctx/2
tokens before it). Here the first window's first half is scored too, because no window before
it could have served as its context: on a short text (one window) nothing is wasted, and the
perplexity of one window is exactly exp(mean cross-entropy) over all its predictions.

Cross-entropy is computed in float64 from each engine's float32 logits, the same code for every
engine, so the only differences between engines are their logits. It starts from the same float64
log-softmax as KL divergence (`engines.divergence.log_probs`), computed once per window and engine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from mythos_convert.engines.divergence import LogProbs, log_probs

METHOD = (
    "non-overlapping windows of {ctx} tokens; in each window the second half of the predictions is scored "
    "(llama-perplexity's rule: the first half is context), and in the first window all of them"
)


def method_text(ctx: int) -> str:
    """The scoring rule, in words, for the report, eval.json and the card's model-index."""
    return METHOD.format(ctx=ctx)


def first_scored(window: int, ctx: int) -> int:
    """The first position whose prediction window number `window` (from 0) scores."""
    return 0 if window == 0 else ctx // 2


def scored_count(n_windows: int, ctx: int) -> int:
    """How many predictions `n_windows` windows of `ctx` score in all."""
    return sum(ctx - 1 - first_scored(w, ctx) for w in range(n_windows))


def token_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """-log p(target) per position in float64; logits [T, V], targets [T]. Non-finite logits give NaN."""
    return nll_from_log_probs(log_probs(logits), targets)


def nll_from_log_probs(lp: LogProbs, targets: torch.Tensor) -> torch.Tensor:
    """`token_nll` from the logits' `log_probs` (shared with KL divergence: computed once)."""
    nll = -lp.logp.gather(-1, targets.reshape(-1, 1)).reshape(-1)
    return nll.masked_fill(~lp.finite, math.nan)


def scored_logits(logits: torch.Tensor, window: np.ndarray, index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(the logits that window `index` scores, the tokens they predict)."""
    ctx = window.size
    start = first_scored(index, ctx)
    return logits[start : ctx - 1], torch.from_numpy(window[start + 1 : ctx])


@dataclass
class PerplexityAccumulator:
    """Sum of cross-entropy and count of scored predictions, window by window (float64)."""

    nll_sum: float = 0.0
    count: int = 0

    def add(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        self.add_log_probs(log_probs(logits), targets)

    def add_log_probs(self, lp: LogProbs, targets: torch.Tensor) -> None:
        self.nll_sum += float(nll_from_log_probs(lp, targets).sum())
        self.count += int(targets.numel())

    @property
    def mean_nll(self) -> float:
        return self.nll_sum / self.count if self.count else math.nan

    @property
    def perplexity(self) -> float:
        return math.exp(self.mean_nll) if math.isfinite(self.mean_nll) else math.nan
