"""KL divergence and top-1 agreement, against values worked out by hand and scipy-free closed forms."""

from __future__ import annotations

import math

import torch

from mythos_convert.verify.divergence import DivergenceAccumulator, divergence, kl_per_position


def test_kl_of_a_distribution_against_itself_is_zero():
    logits = torch.randn(7, 50, generator=torch.Generator().manual_seed(0))
    d = divergence(logits, logits.clone())
    assert d.mean_kl == 0.0 and d.max_kl == 0.0 and d.top1_agreement == 1.0 and d.positions == 7


def test_kl_matches_the_closed_form_for_two_tokens():
    """P = softmax(0, 0) = (1/2, 1/2), Q = softmax(0, ln 3) = (1/4, 3/4): KL = 1/2 ln 2 + 1/2 ln(2/3)."""
    p = torch.tensor([[0.0, 0.0]], dtype=torch.float64)
    q = torch.tensor([[0.0, math.log(3.0)]], dtype=torch.float64)
    want = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert abs(kl_per_position(p, q).item() - want) < 1e-15
    assert want > 0


def test_summary_statistics_over_batches():
    acc = DivergenceAccumulator()
    base = torch.zeros(100, 2)
    shifted = base.clone()
    shifted[:, 1] = torch.linspace(0.0, 3.0, 100)  # KL grows with the shift; top-1 flips once shift > 0
    acc.add(base[:60], shifted[:60])
    acc.add(base[60:], shifted[60:])
    d = acc.summary()
    kl = kl_per_position(base, shifted).numpy()
    assert d.positions == 100
    assert abs(d.mean_kl - kl.mean()) < 1e-15 and d.max_kl == kl.max()
    assert d.top1_agreement == 0.01  # argmax of (0, 0) is 0; only the unshifted first row agrees


def test_nan_is_never_dropped():
    ref = torch.zeros(5, 3)
    out = torch.zeros(5, 3)
    out[3, 1] = float("nan")
    d = divergence(ref, out)
    assert math.isnan(d.mean_kl) and math.isnan(d.max_kl) and math.isnan(d.p99_kl)
    assert math.isnan(kl_per_position(ref, out)[3].item()) and kl_per_position(ref, out)[2].item() == 0.0
