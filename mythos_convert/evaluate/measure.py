"""The measurement: every engine over every window, perplexity for each, KL divergence against the reference."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mythos_convert.engines.base import Engine
from mythos_convert.engines.divergence import DivergenceAccumulator, LogProbs, log_probs
from mythos_convert.evaluate.perplexity import PerplexityAccumulator, scored_logits
from mythos_convert.support.ui import progress_task


@dataclass
class Measured:
    """One engine's figures over the windows."""

    perplexity: PerplexityAccumulator
    divergence: DivergenceAccumulator | None


BLOCK_BYTES = 256 << 20  # reference log-probabilities held at once: windows are run in blocks of about this much


def measure(
    engines: list[Engine], wins: list[np.ndarray], reference: Engine | None = None, compare: set[str] | None = None
) -> dict[str, Measured]:
    """Run every engine on every window; KL divergence against `reference` (one of `engines`) for
    the engines named in `compare` (default: all the others).

    Windows go in blocks: the reference runs a block and the float64 log-softmax of its scored
    logits is kept (about BLOCK_BYTES), then each engine runs the whole block in turn. Each
    engine's log-softmax is computed once per window, for its cross-entropy and its KL divergence
    alike, and the reference's once for all the engines compared with it. Switching engine at every window
    made each pay for the other's idle threads spinning (OpenMP's, llama.cpp's): on mythos-172m,
    2 cores (load 3.5), llama.cpp Q4_K_M ran at 90 tokens/s interleaved against 722 alone.
    """
    if compare is None:
        compare = {e.target for e in engines if e is not reference} if reference is not None else set()
    results = {
        e.target: Measured(PerplexityAccumulator(), DivergenceAccumulator() if e.target in compare else None)
        for e in engines
    }
    order = sorted(engines, key=lambda e: e is not reference)
    ctx = wins[0].size if wins else 1
    block = max(1, BLOCK_BYTES // max(1, ctx * _vocab_rows(engines) * 8))  # float64
    with progress_task(f"eval: {len(engines)} model(s) x {len(wins)} windows", len(wins) * len(engines)) as advance:
        for first in range(0, len(wins), block):
            kept: dict[int, LogProbs] = {}
            for engine in order:
                measured = results[engine.target]
                for i in range(first, min(first + block, len(wins))):
                    logits, targets = scored_logits(engine.logits(wins[i]), wins[i], i)
                    lp = log_probs(logits)
                    if engine is reference:
                        kept[i] = lp
                    measured.perplexity.add_log_probs(lp, targets)
                    if measured.divergence is not None and i in kept:
                        measured.divergence.add_log_probs(kept[i], lp)
                    advance(1)
    return results


def _vocab_rows(engines: list[Engine]) -> int:
    """The widest logits among the engines."""
    return max(engine.vocab for engine in engines) if engines else 1
