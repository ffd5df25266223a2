"""KL divergence and top-1 agreement, against values worked out by hand and scipy-free closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mythos_convert.engines.divergence import DivergenceAccumulator, divergence, kl_per_position, log_probs


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


def test_summary_statistics_match_numpy_on_a_known_distribution():
    """Reference uniform over 4 tokens, the other with logits (0, 0, 0, x): the KL has a closed form in x.

    With P uniform and Q = softmax(0, 0, 0, x), KL(P || Q) = log((3 + e^x) / 4) - x / 4 per position. 200
    positions with x = 0.02 * i give 200 distinct KL values whose median and 99th percentile numpy
    computes independently (linear interpolation between the two neighbouring ranks).
    """
    x = np.arange(200, dtype=np.float64) * 0.02
    want = np.log((3.0 + np.exp(x)) / 4.0) - x / 4.0
    rng = np.random.default_rng(7)
    order = rng.permutation(200)  # positions arrive out of order: the statistics must sort
    logits = torch.zeros(200, 4, dtype=torch.float64)
    logits[:, 3] = torch.from_numpy(x[order])
    acc = DivergenceAccumulator()
    for part in torch.split(torch.arange(200), [50, 1, 149]):
        acc.add(torch.zeros(len(part), 4, dtype=torch.float64), logits[part])
    d = acc.summary()
    assert d.positions == 200
    assert d.mean_kl == pytest.approx(want.mean(), rel=1e-12)
    assert d.median_kl == pytest.approx((want[99] + want[100]) / 2, rel=1e-12)
    assert d.p99_kl == pytest.approx(want[197] + 0.01 * (want[198] - want[197]), rel=1e-12)  # rank 0.99 * 199
    assert d.max_kl == pytest.approx(want[199], rel=1e-12)
    assert d.p99_kl != pytest.approx(float(np.percentile(want, 90)), rel=1e-3)
    assert d.top1_agreement == 1 / 200  # x = 0 keeps argmax 0 (the first of equals); every x > 0 moves it to 3
    assert d.as_dict() == {
        "mean_kl": d.mean_kl,
        "median_kl": d.median_kl,
        "p99_kl": d.p99_kl,
        "max_kl": d.max_kl,
        "top1_agreement": d.top1_agreement,
        "positions": 200,
    }


def test_kl_is_per_position_over_the_last_axis_and_never_negative():
    p = torch.tensor([[[0.0, 0.0, 0.0]], [[1.0, 2.0, 3.0]]])  # [2, 1, 3]
    q = torch.tensor([[[0.0, 0.0, 3.0]], [[1.0, 2.0, 3.0]]])
    kl = kl_per_position(p, q)
    assert kl.shape == (2, 1) and kl.dtype == torch.float64
    # P uniform, Q = softmax(0, 0, 3): KL = log((2 + e^3) / 3) - 1
    assert kl[0, 0].item() == pytest.approx(math.log((2 + math.exp(3)) / 3) - 1, rel=1e-12)
    assert kl[1, 0].item() == 0.0  # identical rows: rounding never leaves a negative KL
    # KL is not symmetric: the reference is the first argument
    assert kl_per_position(q, p)[0, 0].item() != pytest.approx(kl[0, 0].item(), rel=1e-3)


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_a_nonfinite_reference_or_export_position_is_nan(bad):
    ref = torch.zeros(3, 4)
    out = torch.zeros(3, 4)
    ref[0, 2] = bad
    out[2, 1] = bad
    kl = kl_per_position(ref, out)
    assert math.isnan(kl[0].item()) and kl[1].item() == 0.0 and math.isnan(kl[2].item())
    d = divergence(ref, out)
    assert math.isnan(d.median_kl) and math.isnan(d.mean_kl) and d.positions == 3
    # +Inf and NaN (torch's argmax takes NaN as the largest) move rows 0 and 2's argmax, -Inf neither
    assert d.top1_agreement == pytest.approx(1 / 3 if bad != -math.inf else 1.0)


def test_an_empty_accumulator_and_mismatched_shapes():
    d = DivergenceAccumulator().summary()
    assert d.positions == 0 and math.isnan(d.mean_kl) and math.isnan(d.top1_agreement)
    assert math.isnan(d.median_kl) and math.isnan(d.p99_kl) and math.isnan(d.max_kl)
    with pytest.raises(ValueError, match=r"logits of shape \(2, 5\) against a reference of \(2, 4\)"):
        DivergenceAccumulator().add(torch.zeros(2, 4), torch.zeros(2, 5))
    lp = log_probs(torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"logits of shape \(1, 4\) against a reference of \(2, 4\)"):
        DivergenceAccumulator().add_log_probs(lp, log_probs(torch.zeros(1, 4)))


def test_log_probs_are_float64_with_finite_rows_and_argmax():
    logits = torch.tensor([[0.0, math.log(3.0)], [math.nan, 0.0]], dtype=torch.float32)
    lp = log_probs(logits)
    assert lp.logp.dtype == torch.float64
    assert lp.logp[0].exp().tolist() == pytest.approx([0.25, 0.75], rel=1e-7)
    assert lp.finite.tolist() == [True, False]
    assert lp.argmax[0].item() == 1
    batch = torch.zeros(2, 3, 4)
    batch[1, 2, 3] = 1.0
    assert log_probs(batch).argmax.tolist() == [[0, 0, 0], [0, 0, 3]]  # over the vocabulary, any batch shape
