"""What `eval` reports: one row per engine, recorded in each folder's eval.json, printed as a table, saved as JSON."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table

from mythos_convert.engines.base import Engine
from mythos_convert.evaluate.measure import Measured
from mythos_convert.evaluate.record import record_eval
from mythos_convert.evaluate.targets import Target
from mythos_convert.support.strict_json import write_strict_json
from mythos_convert.support.ui import human_size


@dataclass
class EvalReport:
    """What `eval` found: one row per target (the reference's too), and what they were measured on."""

    rows: list[dict[str, Any]]
    dataset: str
    text_tokens: int
    ctx: int
    windows: int
    scored_tokens: int
    method: str
    reference: str | None
    notes: list[str]
    recorded: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _bits(t: Target) -> float | None:
    if t.mlx is not None:
        return t.mlx.bits_per_weight
    if t.header is not None:
        return t.header.bits_per_weight
    dtype = t.source.hf.stored_dtype() if t.source.hf is not None else "float32"
    return {"float32": 32.0, "bfloat16": 16.0, "float16": 16.0}.get(dtype)


def report_row(
    engine: Engine, t: Target | None, m: Measured, reference: Engine | None, ref_ppl: float | None, ref_size: int
) -> dict[str, Any]:
    """One engine's row; `t` is None for the reference run on an HF folder's weights (`ref_size` its bytes)."""
    kl = m.divergence.summary().as_dict() if m.divergence is not None else None
    return {
        "target": engine.target,
        "key": t.key if t is not None else None,
        "kind": engine.kind,
        "engine": engine.engine,
        "type": engine.dtype,
        "reference": engine is reference,
        "perplexity": m.perplexity.perplexity,
        "mean_nll": m.perplexity.mean_nll,
        "scored_tokens": m.perplexity.count,
        "kl": kl,
        "delta_perplexity": m.perplexity.perplexity - ref_ppl if kl is not None and ref_ppl is not None else None,
        "size": t.size if t is not None else ref_size,
        "bits_per_weight": _bits(t) if t is not None else {"float32": 32.0}.get(engine.dtype, 16.0),
        "tokens_per_second": engine.tokens_per_second,
        "seconds": engine.seconds,
    }


def record_report(report: EvalReport, targets: list[Target], ref_ppl: float | None) -> list[str]:
    """Each folder's results into its eval.json (`api.evaluate` then renders its card again)."""
    by_folder: dict[Path, dict[str, dict[str, Any]]] = {}
    rows = {r["target"]: r for r in report.rows}
    for t in targets:
        if t.folder is None:
            continue
        row = rows[t.shown]
        entry = {k: v for k, v in row.items() if k not in ("target", "key", "reference", "seconds")}
        entry.update(
            ctx=report.ctx,
            windows=report.windows,
            method=report.method,
            dataset=f"{report.dataset}; {report.scored_tokens:,} tokens scored",
            reference={"name": report.reference, "perplexity": ref_ppl} if row["kl"] is not None else None,
            files=t.files,
        )
        by_folder.setdefault(t.folder, {})[t.key] = entry
    return [str(record_eval(folder, entries)) for folder, entries in by_folder.items()]


def _num(value: float | None, fmt: str) -> str:
    if value is None:
        return "-"
    return "NaN" if isinstance(value, float) and math.isnan(value) else format(value, fmt)


COLUMNS = (
    "target",
    "engine",
    "type",
    "size",
    "bits/w",
    "perplexity",
    "Δ ppl",
    "mean KL",
    "median KL",
    "p99 KL",
    "max KL",
    "top-1",
    "tokens/s",
)


def report_table(report: EvalReport) -> Table:
    """The rich table `eval` prints: one row per model, the reference first."""
    table = Table(title=f"perplexity on {report.scored_tokens:,} tokens ({report.windows} windows of {report.ctx})")
    for column in COLUMNS:
        table.add_column(column, justify="left" if column in ("target", "engine", "type") else "right")
    for r in report.rows:
        kl = r["kl"] or {}
        table.add_row(
            r["target"] + (" (reference)" if r["reference"] else ""),
            r["engine"],
            r["type"],
            human_size(r["size"]),
            _num(r["bits_per_weight"], ".2f"),
            _num(r["perplexity"], ".4f"),
            _num(r["delta_perplexity"], "+.4f"),
            _num(kl.get("mean_kl"), ".3g"),
            _num(kl.get("median_kl"), ".3g"),
            _num(kl.get("p99_kl"), ".3g"),
            _num(kl.get("max_kl"), ".3g"),
            "-" if not kl else _num(100 * kl["top1_agreement"], ".2f") + "%",
            _num(r["tokens_per_second"], ",.0f"),
        )
    return table


def report_lines(report: EvalReport) -> list[str]:
    """What the table was measured on, and what it could not measure."""
    lines = [f"text: {report.dataset}", f"method: {report.method}"]
    if report.reference:
        lines.append(f"KL divergence: KL(P_ref || P) per scored position, reference: {report.reference}")
    lines += report.notes
    lines += [f"recorded in {path}" for path in report.recorded]
    return lines


def render_report(report: EvalReport, json_path: str | Path | None = None) -> list:
    """What `eval` prints, in order: the table, then `report_lines` as plain text (a line may hold
    brackets, `pip install 'mythos-convert[mlx]'`, which are not markup), then where the JSON went."""
    from rich.markup import escape

    rendered: list = [report_table(report), *(escape(line) for line in report_lines(report))]
    if json_path is not None:
        rendered.append(f"report: {json_path}")
    return rendered


def write_report_json(report: EvalReport, path: str | Path) -> Path:
    """The whole report as strict JSON (non-finite numbers as strings), written atomically."""
    return write_strict_json(Path(path), report.as_dict())
