"""Verify an MLX folder in mlx-lm against the native engine in float32, as GGUF files are verified in llama.cpp.

The sequences are the verifier's prompts and random ids; the figure is the KL divergence of mlx-lm's
next-token distribution from the native one at every position (mean and 99th percentile), the
measure the quantized GGUF types are gated by. The gates are `verify.gates.MLX_KL_GATES`
(docs/parity.md has the table).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mythos_convert.engines.divergence import DivergenceAccumulator
from mythos_convert.verify.gates import MLX_KL_GATES


def within_kl_gate(bits: int, mean_kl: float, p99_kl: float) -> bool:
    """True when both figures are at or under the gate of `bits` (NaN never passes)."""
    mean_gate, p99_gate = MLX_KL_GATES[bits]
    return mean_kl <= mean_gate and p99_kl <= p99_gate


def compare(bits: int, reference: list[torch.Tensor], mlx: list[torch.Tensor], greedy_equal: bool) -> dict[str, Any]:
    """The verify result for one MLX folder from both sides' logits per sequence."""
    acc = DivergenceAccumulator()
    for ref, got in zip(reference, mlx, strict=True):
        acc.add(ref, got)
    div = acc.summary()
    mean_gate, p99_gate = MLX_KL_GATES[bits]
    passed = within_kl_gate(bits, div.mean_kl, div.p99_kl)
    failures = [] if passed else [f"KL mean {div.mean_kl:.3g} / p99 {div.p99_kl:.3g} over {mean_gate:g} / {p99_gate:g}"]
    return {
        "passed": passed,
        "failures": failures,
        "runtime": "mlx-lm",
        "kind": "mlx",
        "dtype": f"MLX {bits}-bit",
        "bits": bits,
        "n_tokens": div.positions,  # the card's Parity table reads these three
        "argmax_agreement": div.top1_agreement,
        "tolerance": f"mean KL <= {mean_gate:g}, p99 <= {p99_gate:g}",
        "gate": {"mean_kl": mean_gate, "p99_kl": p99_gate},
        "greedy_equal": greedy_equal,
        **{k: div.as_dict()[k] for k in ("mean_kl", "p99_kl", "max_kl", "top1_agreement", "positions")},
    }


def verify_mlx(folder: Path, bits: int, python: str, model, seqs: list[list[int]]) -> dict[str, Any]:
    """Run `folder` in mlx-lm (in `python`) and gate it against `model` (the native engine, float32)."""
    from mythos_convert.mlx.parity import native_run, run_mlx

    got = run_mlx(python, folder, seqs)
    reference, greedy = native_run(model, seqs)
    result = compare(bits, reference, got.logits, got.greedy == greedy)
    result["versions"] = got.info["versions"]
    return result
