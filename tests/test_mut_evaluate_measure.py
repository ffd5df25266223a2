"""evaluate.measure: every engine over every window in blocks of the reference's log-probabilities, KL
for the engines compared (by default all but the reference), and one progress step per window and engine."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch

import mythos_convert.evaluate.measure as measure_module
from mythos_convert.engines.base import Engine
from mythos_convert.evaluate.measure import measure


def _engine(target: str, calls: list, vocab: int = 4) -> Engine:
    def run(window):
        calls.append((target, int(window[0])))
        return torch.zeros(window.size, vocab)

    return Engine(target, "native", "stand-in", "float32", vocab, run, lambda ids, n: [], lambda: None)


def _wins(n: int, ctx: int = 4) -> list[np.ndarray]:
    return [np.full(ctx, i, dtype=np.int64) for i in range(n)]  # window i starts with token i


def test_kl_is_measured_for_every_engine_but_the_reference_by_default():
    calls: list = []
    ref, a, b = _engine("ref", calls), _engine("a", calls), _engine("b", calls)
    got = measure([a, ref, b], _wins(2), reference=ref)
    assert got["ref"].divergence is None
    assert got["a"].divergence is not None and got["b"].divergence is not None
    assert (
        got["a"].divergence.summary().positions == 3 + 1
    )  # window 0 scores 3 positions, window 1 the last of its second half
    assert all(m.perplexity.count == 4 for m in got.values())


def test_windows_go_in_blocks_the_reference_first(monkeypatch):
    calls: list = []
    ref, a = _engine("ref", calls), _engine("a", calls)
    monkeypatch.setattr(measure_module, "BLOCK_BYTES", 256)  # a window: 4 positions x 4 logits x 8 bytes = 128
    measure([a, ref], _wins(3), reference=ref)
    assert calls == [("ref", 0), ("ref", 1), ("a", 0), ("a", 1), ("ref", 2), ("a", 2)]
    calls.clear()
    monkeypatch.setattr(measure_module, "BLOCK_BYTES", 255)  # less than two windows: one at a time
    measure([a, ref], _wins(2), reference=ref)
    assert calls == [("ref", 0), ("a", 0), ("ref", 1), ("a", 1)]


def test_the_block_is_sized_by_the_widest_engine_and_the_window(monkeypatch):
    calls: list = []
    ref, wide = _engine("ref", calls), _engine("wide", calls, vocab=8)
    monkeypatch.setattr(measure_module, "BLOCK_BYTES", 512)  # 4 x 8 x 8 = 256 a window: two at a time
    measure([ref, wide], _wins(3), reference=ref, compare=set())  # logits of two widths: no KL
    assert calls == [("ref", 0), ("ref", 1), ("wide", 0), ("wide", 1), ("ref", 2), ("wide", 2)]
    calls.clear()
    measure([ref, wide], _wins(3, ctx=8), reference=ref, compare=set())  # 512 a window: one at a time
    assert calls == [("ref", 0), ("wide", 0), ("ref", 1), ("wide", 1), ("ref", 2), ("wide", 2)]


def test_no_engines_or_no_windows_measure_nothing():
    assert measure([], _wins(2)) == {}
    calls: list = []
    got = measure([_engine("a", calls)], [])
    assert calls == [] and got["a"].perplexity.count == 0 and got["a"].divergence is None


def test_one_progress_step_per_window_and_engine(monkeypatch):
    seen: list = []

    @contextmanager
    def progress_task(description, total):
        seen.append((description, total))
        yield lambda n=1: seen.append(n)

    monkeypatch.setattr(measure_module, "progress_task", progress_task)
    calls: list = []
    measure([_engine("a", calls), _engine("b", calls)], _wins(3))
    assert seen == [("eval: 2 model(s) x 3 windows", 6), 1, 1, 1, 1, 1, 1]
