"""How far one model's next-token distribution is from a reference's: KL divergence and top-1.

llama.cpp users choose between quantizations by `llama-perplexity --kl-divergence`: the KL
divergence KL(P_ref || P) of each position's softmax from the F32 reference's, summarised by its
mean, median, 99th percentile and max, with the share of positions whose argmax agrees. This module
computes exactly that, in float64, for `verify`'s gates and `eval`'s report alike.

Positions are accumulated one batch of logits at a time (`DivergenceAccumulator`), so neither side's
logits need to be kept: only one float and one bool per position. `log_probs` is the float64
log-softmax both KL divergence and cross-entropy start from: `eval` computes it once per window and
engine (the reference's once, for every model compared with it), and passes it to both.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch


@dataclass(frozen=True)
class LogProbs:
    """One batch of logits [..., V] as KL divergence and cross-entropy use it."""

    logp: torch.Tensor  # log_softmax in float64, [..., V]
    finite: torch.Tensor  # bool [...]: the position's logits are all finite
    argmax: torch.Tensor  # [...]: the logits' argmax (top-1)


def log_probs(logits: torch.Tensor) -> LogProbs:
    """The float64 log-softmax of `logits` [..., V], which positions are finite, and the argmax."""
    return LogProbs(
        torch.log_softmax(logits.double(), dim=-1), torch.isfinite(logits).all(dim=-1), logits.argmax(dim=-1)
    )


def kl_from_log_probs(reference: LogProbs, other: LogProbs) -> torch.Tensor:
    """KL(P_ref || P) per position from both sides' `log_probs`; NaN where either side is not finite."""
    ref, out = reference.logp, other.logp
    kl = (ref.exp() * (ref - out)).sum(dim=-1)
    bad = ~(reference.finite & other.finite)
    return kl.masked_fill(bad, math.nan).clamp_min(0.0)  # rounding can give -1e-17 for identical rows


def kl_per_position(reference: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """KL(softmax(reference) || softmax(logits)) per position, in float64; inputs [..., V].

    Non-finite logits give NaN (never a finite number that could pass a gate).
    """
    return kl_from_log_probs(log_probs(reference), log_probs(logits))


@dataclass(frozen=True)
class Divergence:
    """A summary over positions; every figure is NaN when any position's is (NaN is never dropped)."""

    mean_kl: float
    median_kl: float
    p99_kl: float
    max_kl: float
    top1_agreement: float  # 0..1
    positions: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


@dataclass
class DivergenceAccumulator:
    """Per-position KL values and top-1 agreement, added batch by batch."""

    kl: list[np.ndarray] = field(default_factory=list)
    agree: list[np.ndarray] = field(default_factory=list)

    def add(self, reference: torch.Tensor, logits: torch.Tensor) -> None:
        """One batch of positions: reference and compared logits of the same shape [..., V]."""
        if reference.shape != logits.shape:
            raise ValueError(f"logits of shape {tuple(logits.shape)} against a reference of {tuple(reference.shape)}")
        self.add_log_probs(log_probs(reference), log_probs(logits))

    def add_log_probs(self, reference: LogProbs, other: LogProbs) -> None:
        """The same from both sides' `log_probs` (the reference's computed once for every model)."""
        if reference.logp.shape != other.logp.shape:
            raise ValueError(
                f"logits of shape {tuple(other.logp.shape)} against a reference of {tuple(reference.logp.shape)}"
            )
        self.kl.append(kl_from_log_probs(reference, other).reshape(-1).numpy())
        self.agree.append((reference.argmax == other.argmax).reshape(-1).numpy())

    def summary(self) -> Divergence:
        kl = np.concatenate(self.kl) if self.kl else np.zeros(0)
        agree = np.concatenate(self.agree) if self.agree else np.zeros(0, dtype=bool)
        if kl.size == 0:
            return Divergence(math.nan, math.nan, math.nan, math.nan, math.nan, 0)
        if not np.isfinite(kl).all():
            return Divergence(math.nan, math.nan, math.nan, math.nan, float(agree.mean()), int(kl.size))
        return Divergence(
            mean_kl=float(kl.mean()),
            median_kl=float(np.median(kl)),
            p99_kl=float(np.percentile(kl, 99)),
            max_kl=float(kl.max()),
            top1_agreement=float(agree.mean()),
            positions=int(kl.size),
        )


def divergence(reference: torch.Tensor, logits: torch.Tensor) -> Divergence:
    """The summary for one pair of logit tensors [..., V]."""
    acc = DivergenceAccumulator()
    acc.add(reference, logits)
    return acc.summary()
