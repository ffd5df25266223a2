"""The comparison every verifier makes: two engines' logits on the same ids, and whether they pass.

A verifier (HF folder, GGUF file) runs the native engine and the export's engine on
`verify.inputs.sequences`; this module compares their logits (|diff|, top-1, non-finite values),
merges the per-sequence figures, checks them against a `verify.gates.Tolerance` and draws the table.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from mythos_convert.verify.gates import Tolerance
from mythos_convert.verify.inputs import GREEDY_TOKENS


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
