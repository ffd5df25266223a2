"""The comparison toolkit every verifier uses: fixed inputs, logit comparison, greedy runs, tolerances.

A verifier (HF folder, GGUF file) supplies "logits for these ids" functions for the native model and
for the exported one; this module decides what to feed them, how to compare, and what passes.
Prompts include one longer than 32 tokens: RoPE and q/k layout mistakes only show after ~20 positions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from mythos_convert.model.decode import compiled_ops_for

# English texts a verifier tokenizes with the native tokenizer (content ids, plus BOS when it has one).
PROMPTS: tuple[str, ...] = (
    "The capital of France is",
    "Once upon a time, in a small village at the edge of the forest, there lived an old woman who",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
    (
        "In the beginning the model knew nothing at all. It read a great many documents, one token at a "
        "time, and after every token it guessed the next one and was told how wrong the guess had been. "
        "Slowly the guesses improved, until the model could continue a sentence it had never seen before."
    ),
)
# Texts for tokenizer agreement: ASCII, accents, CJK, emoji, code, compatibility forms NFKC rewrites.
TOKENIZER_TEXTS: tuple[str, ...] = (
    "Hello, world! This is a plain ASCII sentence.",
    "Café, naïve, façade, Ångström, São Paulo, Dvořák.",
    "東京は日本の首都です。北京是中国的首都。",
    "Emoji: 😀🚀👍🏽 and flags 🇫🇷 mixed with text.",
    "def add(a, b):\n\treturn a + b  # tabs, spaces\n\n",
    "ﬁle ｆｕｌｌ１２３ Ω ① x²",
    "   leading spaces and trailing   ",
    "",
)
GREEDY_TOKENS = 32
RANDOM_SEED = 1234
RANDOM_LENGTH = 48


@dataclass(frozen=True)
class Tolerance:
    """What a comparison must meet to pass. None means "not checked".

    `mean_kl` / `p99_kl` bound the KL divergence of the export's next-token distribution from the
    reference's (mean and 99th percentile over positions, `mythos_convert.verify.divergence`): the
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


# Keyed by HF dtype name (float32/bfloat16/float16); GGUF types have their own table,
# `mythos_convert.verify.gguf.GGUF_TOLERANCES` (llama.cpp computes in its own way per type).
# HF bf16/f16 are compared with both sides computing in float32 on the same cast weights (see
# `mythos_convert.verify.hf`), so they keep float32's tolerance: the cast is the only lossy step and
# both models see it; anything more is a conversion bug. Measured by benchmarks/measure_gates.py
# (random configs and the reference fixture, every dtype): worst max |diff| 0 (see docs/parity.md).
HF_MAX_ABS_DIFF = 1e-5
TOLERANCES: dict[str, Tolerance] = {
    name: Tolerance(max_abs_diff=HF_MAX_ABS_DIFF, min_argmax_agreement=1.0, greedy_must_match=True)
    for name in ("float32", "bfloat16", "float16")
}


def tolerance_for(key: str) -> Tolerance:
    """The tolerance for a dtype/outtype name (case-insensitive lookup, exact names first)."""
    if key in TOLERANCES:
        return TOLERANCES[key]
    lowered = {k.lower(): v for k, v in TOLERANCES.items()}
    if key.lower() in lowered:
        return lowered[key.lower()]
    raise KeyError(f"no tolerance defined for {key!r}; known: {sorted(TOLERANCES)}")


def random_ids(vocab_size: int, length: int = RANDOM_LENGTH, seed: int = RANDOM_SEED) -> list[int]:
    """Seeded random token ids: exercises every row of the embedding, not just common tokens."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab_size, (length,), generator=gen).tolist()


def prompt_ids(encode: Callable[[str], list[int]], bos_id: int | None, max_len: int | None = None) -> list[list[int]]:
    """PROMPTS encoded by `encode` (content ids only), each prefixed with BOS when there is one."""
    out = []
    for text in PROMPTS:
        ids = ([bos_id] if bos_id is not None else []) + list(encode(text))
        out.append(ids[:max_len] if max_len else ids)
    return out


def _first_nonfinite(logits: torch.Tensor) -> tuple[str, int] | None:
    """("NaN" | "+Inf" | "-Inf", 0-based position) of the first non-finite logit of [T, V], or None."""
    bad = ~torch.isfinite(logits)
    if not bool(bad.any()):
        return None
    position = int(bad.any(-1).nonzero()[0, 0])
    row = logits[position]
    if bool(row.isnan().any()):
        return "NaN", position
    return ("+Inf" if bool((row == float("inf")).any()) else "-Inf"), position


def compare_logits(
    ref: torch.Tensor, other: torch.Tensor, names: tuple[str, str] = ("reference", "export")
) -> dict[str, Any]:
    """Compare logits [T, V] of a reference and an export: max/mean |diff|, argmax agreement, non-finite.

    `nonfinite` lists, per side named by `names`, the first position (0-based here; `merge_comparisons`
    turns it 1-based) whose logits hold a NaN or an Inf. The |diff| figures are NaN then, on purpose.
    """
    if ref.shape != other.shape:
        raise ValueError(f"logit shapes differ: reference {tuple(ref.shape)} vs export {tuple(other.shape)}")
    ref32, other32 = ref.detach().float(), other.detach().float()
    diff = (ref32 - other32).abs()
    agree = (ref32.argmax(-1) == other32.argmax(-1)).float().mean()
    nonfinite = []
    for side, logits in zip(names, (ref32, other32), strict=True):
        found = _first_nonfinite(logits)
        if found is not None:
            nonfinite.append({"side": side, "value": found[0], "position": found[1]})
    return {
        "max_abs_diff": float(diff.max()) if diff.numel() else 0.0,  # torch's max propagates NaN
        "mean_abs_diff": float(diff.mean()) if diff.numel() else 0.0,
        "argmax_agreement": float(agree) if diff.numel() else 1.0,
        "nonfinite": nonfinite,
    }


def nan_max(values: Sequence[float]) -> float:
    """max() that returns NaN when any value is NaN (Python's max keeps a NaN only when it comes first)."""
    if any(math.isnan(v) for v in values):
        return math.nan
    return max(values, default=0.0)


def merge_comparisons(parts: Sequence[dict[str, Any]], weights: Sequence[int]) -> dict[str, Any]:
    """Combine per-sequence comparisons: max of maxima, token-weighted means of the rest (NaN-safe).

    Any NaN in a part stays NaN in the merge. `nonfinite` gathers every part's entries with a
    1-based `sequence` (the part's index) and a 1-based `position` (the token's index in it).
    """
    total = sum(weights) or 1
    nonfinite = [
        {**entry, "sequence": i, "position": int(entry["position"]) + 1}
        for i, part in enumerate(parts, 1)
        for entry in part.get("nonfinite", ())
    ]
    return {
        "max_abs_diff": nan_max([p["max_abs_diff"] for p in parts]),
        "mean_abs_diff": sum(p["mean_abs_diff"] * w for p, w in zip(parts, weights, strict=True)) / total,
        "argmax_agreement": sum(p["argmax_agreement"] * w for p, w in zip(parts, weights, strict=True)) / total,
        "nonfinite": nonfinite,
    }


def nonfinite_reasons(comparison: dict[str, Any]) -> list[str]:
    """One reason per side whose logits hold NaN/Inf, naming the first prompt and position (both 1-based).

    A merged comparison without `nonfinite` entries but with a NaN/Inf figure still fails: the figure
    cannot be trusted to pass any gate.
    """
    reasons, seen = [], set()
    for entry in comparison.get("nonfinite") or ():
        if entry["side"] in seen:
            continue
        seen.add(entry["side"])
        where = f"prompt {entry.get('sequence', 1)}, position {entry['position']}"
        reasons.append(f"{entry['side']} logits are {entry['value']} at {where}")
    if not reasons:
        for key in ("max_abs_diff", "mean_abs_diff", "argmax_agreement"):
            value = comparison.get(key)
            if isinstance(value, float) and not math.isfinite(value):
                reasons.append(f"{key.replace('_', ' ')} is {value}: the logits are not finite")
                break
    return reasons


def greedy_continue(
    step_fn: Callable[[list[int]], torch.Tensor], ids: Sequence[int], n: int = GREEDY_TOKENS
) -> list[int]:
    """Greedy-decode `n` tokens: `step_fn(ids) -> logits [T, V]` for the whole sequence each step.

    Recomputing the whole sequence keeps every engine's cache out of the comparison; the verifier's
    prompts are short, so the quadratic cost does not matter.
    """
    seq = list(ids)
    new: list[int] = []
    for _ in range(n):
        logits = step_fn(seq)
        token = int(logits[-1].float().argmax())
        seq.append(token)
        new.append(token)
    return new


def native_greedy(model, seq: list[int]) -> tuple[torch.Tensor, list[int]]:
    """(logits [T, V] of `seq`, its GREEDY_TOKENS greedy tokens) from the native model, the one native
    greedy decoder verify has (HF folders and GGUF files alike).

    The prefill fills the KV cache; its logits are those of a forward without a cache (bit for bit
    here: the same operations, the keys read from the cache), so they also serve the logit check
    and that sequence runs once. Then one token per step on the cache: the compiled step where
    the kernels run (the weights read in place, one call per token, threads chosen by timing:
    `decode.ThreadTuner`), elsewhere the module path without fused copies of the weights (verify
    holds one model's weights and nothing more).
    """
    model.setup_cache(1, len(seq) + GREEDY_TOKENS, fuse=compiled_ops_for(model) is not None)
    try:
        with torch.no_grad():
            logits = model(torch.tensor([seq]))[0]
            tokens = [int(logits[-1].float().argmax())]
            for pos in range(len(seq), len(seq) + GREEDY_TOKENS - 1):
                tokens.append(int(model(torch.tensor([tokens[-1:]]), start=pos)[0, -1].float().argmax()))
    finally:
        model.clear_cache()
    return logits, tokens


def check(
    comparison: dict[str, Any], tol: Tolerance | None, greedy_equal: bool | None = None
) -> tuple[bool, list[str]]:
    """Does a comparison pass `tol`? Returns (passed, reasons it failed).

    NaN/Inf logits on either side always fail, with or without a tolerance (None: only that is
    checked), and every bound is written as "not within" so that a NaN figure cannot pass it.
    """
    reasons = nonfinite_reasons(comparison)
    if tol is None:
        return not reasons, reasons
    if tol.max_abs_diff is not None and not comparison["max_abs_diff"] <= tol.max_abs_diff:
        reasons.append(f"max |diff| {comparison['max_abs_diff']:.3g} > {tol.max_abs_diff:g}")
    if tol.mean_abs_diff is not None and not comparison["mean_abs_diff"] <= tol.mean_abs_diff:
        reasons.append(f"mean |diff| {comparison['mean_abs_diff']:.3g} > {tol.mean_abs_diff:g}")
    if tol.min_argmax_agreement is not None and not comparison["argmax_agreement"] >= tol.min_argmax_agreement:
        reasons.append(f"argmax agreement {comparison['argmax_agreement']:.4f} < {tol.min_argmax_agreement:g}")
    for key, label in (("mean_kl", "mean KL"), ("p99_kl", "p99 KL")):
        bound = getattr(tol, key)
        if bound is not None and not comparison.get(key, math.nan) <= bound:  # missing counts as failed
            reasons.append(f"{label} {comparison.get(key, math.nan):.3g} > {bound:g}")
    if tol.greedy_must_match and greedy_equal is False:
        reasons.append(f"greedy {GREEDY_TOKENS}-token generations differ")
    return not reasons, reasons


def render_table(rows: Sequence[dict[str, Any]], title: str = "parity"):
    """A rich table of comparison rows.

    Each row: `name`, and any of `max_abs_diff`, `mean_abs_diff`, `argmax_agreement`, `mean_kl`/`p99_kl`,
    `greedy_equal`, `tokenizer_agreement`, `tolerance` (str), `passed` (bool).
    """
    from rich.table import Table

    table = Table(title=title)
    for column, justify in (
        ("check", "left"),
        ("max |diff|", "right"),
        ("mean |diff|", "right"),
        ("argmax agree", "right"),
        ("KL mean / p99", "right"),
        ("greedy equal", "center"),
        ("tolerance", "left"),
        ("result", "center"),
    ):
        table.add_column(column, justify=justify)

    def num(value: Any, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    for row in rows:
        greedy = row.get("greedy_equal")
        passed = row.get("passed")
        agreement = row.get("argmax_agreement", row.get("tokenizer_agreement"))
        table.add_row(
            str(row.get("name", "")),
            num(row.get("max_abs_diff"), ".3g"),
            num(row.get("mean_abs_diff"), ".3g"),
            "-" if agreement is None else f"{agreement * 100:.2f}%",
            "-" if row.get("mean_kl") is None else f"{row['mean_kl']:.3g} / {row.get('p99_kl', math.nan):.3g}",
            "-" if greedy is None else ("yes" if greedy else "NO"),
            str(row.get("tolerance", "")),
            "-" if passed is None else ("[green]pass[/green]" if passed else "[red]FAIL[/red]"),
        )
    return table
