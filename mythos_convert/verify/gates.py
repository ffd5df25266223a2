"""Every tolerance verify gates on, in one file: what a comparison must meet to pass, and why.

The numbers were measured by benchmarks/measure_gates.py (the reference fixture and random
configs: odd heads, GQA 1:1..4:1, odd vocabularies); docs/parity.md has the tables and the machine.
tests/test_verify_gates.py holds each bound as a literal and checks both sides of its edge.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Tolerance:
    """What a comparison must meet to pass. None means "not checked".

    `mean_kl` / `p99_kl` bound the KL divergence of the export's next-token distribution from the
    reference's (mean and 99th percentile over positions, `mythos_convert.engines.divergence`): the
    gate for quantized types, whose logits move by more than any |diff| bound that still catches bugs.
    """

    max_abs_diff: float | None
    mean_abs_diff: float | None = None
    min_argmax_agreement: float | None = None
    greedy_must_match: bool = True
    mean_kl: float | None = None
    p99_kl: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- HF folders (transformers against the native engine) ------------------------------------------
# Keyed by HF dtype name. bf16/f16 are compared with both sides computing in float32 on the same cast
# weights (`mythos_convert.verify.hf`), so they keep float32's tolerance: the cast is the only lossy
# step and both models see it; anything more is a conversion bug. Measured worst max |diff|: 0.
HF_MAX_ABS_DIFF = 1e-5
TOLERANCES: dict[str, Tolerance] = {
    name: Tolerance(max_abs_diff=HF_MAX_ABS_DIFF, min_argmax_agreement=1.0, greedy_must_match=True)
    for name in ("float32", "bfloat16", "float16")
}
# Layerwise verify (`verify.layerwise`): per stage (embedding, each block, the head), max |diff| / max |native|
# of the native stage and transformers' on the same input and the same rounded weights. Measured worst
# 8.66e-7 (block 0, 3h/1kv d768, HF float16) over the reference fixture and 5 random configs, each as HF
# float32/bfloat16/float16 and GGUF F32/F16/BF16 (benchmarks/bench_layerwise.py gates; docs/parity.md).
LAYERWISE_REL = 4e-6
# A sub-layer diverges (`verify.localise`) when max |diff| / max |native| is above this (rounding: ~1e-7).
LOCALISE_REL = 1e-4


def tolerance_for(key: str) -> Tolerance:
    """The tolerance for a dtype/outtype name (case-insensitive lookup, exact names first)."""
    if key in TOLERANCES:
        return TOLERANCES[key]
    lowered = {k.lower(): v for k, v in TOLERANCES.items()}
    if key.lower() in lowered:
        return lowered[key.lower()]
    raise KeyError(f"no tolerance defined for {key!r}; known: {sorted(TOLERANCES)}")


# --- GGUF files (llama.cpp, F32 KV cache, against the native engine in float32) ---------------------
# Each about 4x the worst case measured. |diff| bounds are for reference logits with a standard
# deviation up to 1 and grow with it (`scaled_tolerance`). Quantized types are gated by the KL
# divergence of llama.cpp's next-token distribution from the native one (mean and 99th percentile
# over positions): scale-free, and what `llama-perplexity --kl-divergence` reports.
GGUF_TOLERANCES: dict[str, Tolerance] = {
    # max/sigma' 2.1e-5, top-1 100%, greedy equal in all 6 configs
    "F32": Tolerance(max_abs_diff=1e-4, min_argmax_agreement=1.0, greedy_must_match=True),
    # max/sigma' 0.012, mean 1.4e-3, top-1 99.18%
    "F16": Tolerance(max_abs_diff=0.05, mean_abs_diff=6e-3, min_argmax_agreement=0.965, greedy_must_match=False),
    # max/sigma' 0.087, mean 0.0114, top-1 97.95%
    "BF16": Tolerance(max_abs_diff=0.35, mean_abs_diff=0.05, min_argmax_agreement=0.92, greedy_must_match=False),
}
_KL_GATES = {  # type: (mean KL, p99 KL); measured worst (mean / p99 KL) in the comments
    "Q8_0": (0.0082, 0.02),  # measured 0.00205 / 0.005
    "Q6_K": (0.02, 0.045),  # measured 0.00497 / 0.0112
    "Q5_K_M": (0.15, 0.42),  # measured 0.0368 / 0.105
    "Q5_K_S": (0.15, 0.42),  # measured 0.0373 / 0.104
    "Q5_1": (0.15, 0.43),  # measured 0.0366 / 0.107
    "Q5_0": (0.19, 0.45),  # measured 0.0462 / 0.112
    "Q4_K_M": (0.21, 0.54),  # measured 0.0523 / 0.135
    "Q4_K_S": (0.22, 0.52),  # measured 0.053 / 0.129
    "Q4_1": (0.62, 1.5),  # measured 0.153 / 0.356
    "Q4_0": (0.67, 1.8),  # measured 0.167 / 0.427
    "Q3_K_L": (0.47, 1.2),  # measured 0.117 / 0.286
    "Q3_K_M": (0.5, 1.2),  # measured 0.125 / 0.291
    "Q3_K_S": (0.82, 1.7),  # measured 0.204 / 0.414
    "Q2_K": (1.3, 2.5),  # measured 0.314 / 0.604
}
GGUF_TOLERANCES.update(
    {
        label: Tolerance(max_abs_diff=None, greedy_must_match=False, mean_kl=mean, p99_kl=p99)
        for label, (mean, p99) in _KL_GATES.items()
    }
)
TRANSFORMERS_F32_TOLERANCE = 1e-4  # transformers-from-GGUF f32 against the native engine: rounding only

# A file whose types were chosen by measurement (`gguf --target-bpw/--target-size`) is held to the
# KL gate of the fixed mix with the most bits per weight that it reaches on this model (at least the
# mix's bits): the search spends the same bits where they lower KL most, so it should do no worse.
# Below every mix it gets the smallest mix's (Q2_K's). docs/parity.md has the measured ratios.
SEARCHED_GATE_MIXES = tuple(label for label in _KL_GATES if label not in ("Q8_0", "Q6_K"))


def searched_gate(file_bpw: float, mix_bpw: dict[str, float]) -> str:
    """The fixed mix whose KL gate a searched file of `file_bpw` bits per weight is held to.

    `mix_bpw`: each mix of SEARCHED_GATE_MIXES's bits per weight on the same model (tensor data
    over weights, as `file_bpw`): row fallbacks make them differ between models.
    """
    mixes = {label: bits for label, bits in mix_bpw.items() if label in SEARCHED_GATE_MIXES}
    reached = [label for label, bits in mixes.items() if bits <= file_bpw]
    return max(reached, key=mixes.__getitem__) if reached else min(mixes, key=mixes.__getitem__)


def scaled_tolerance(tol: Tolerance, logit_std: float) -> Tolerance:
    """A tolerance for logits of spread `logit_std`: the |diff| bounds grow with it above 1 (KL is scale-free).

    Float error in the logits is relative to their size; the bounds are stated for models whose
    reference logits have a standard deviation up to 1 (the measured models have 0.9-3.8).
    """
    scale = max(1.0, logit_std)
    top = None if tol.max_abs_diff is None else tol.max_abs_diff * scale
    mean = None if tol.mean_abs_diff is None else tol.mean_abs_diff * scale
    return dataclasses.replace(tol, max_abs_diff=top, mean_abs_diff=mean)


def describe_tolerance(tol: Tolerance | None) -> str:
    """A tolerance as verify.json and the table state it ("max<=0.05, mean<=0.006, top-1>=0.965")."""
    if tol is None:
        return "no gate for this type: logits must be finite"
    parts = []
    if tol.max_abs_diff is not None:
        parts.append(f"max<={tol.max_abs_diff:.3g}")
    if tol.mean_abs_diff is not None:
        parts.append(f"mean<={tol.mean_abs_diff:.3g}")
    if tol.mean_kl is not None:
        parts.append(f"mean KL<={tol.mean_kl:g}, p99 KL<={tol.p99_kl:g}")
    if tol.min_argmax_agreement is not None:
        parts.append(f"top-1>={tol.min_argmax_agreement:g}")
    if tol.greedy_must_match:
        parts.append("greedy equal")
    return ", ".join(parts)


# --- MLX folders (mlx-lm against the native engine, KL only) ----------------------------------------
# bits -> (mean KL, p99 KL), about 4x the worst case over the reference checkpoint and four random
# configurations; measured worst in the comments (mlx 0.32.4 / mlx-lm 0.32.2, CPU, group 64).
MLX_KL_GATES: dict[int, tuple[float, float]] = {
    8: (0.0006, 0.002),  # measured worst 0.000153 / 0.000507
    4: (0.17, 0.42),  # measured worst 0.0408 / 0.105
}
