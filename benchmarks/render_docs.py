"""Render docs/performance.md from the results files in benchmarks/results/ (`run.py --json` writes them).

One table per benchmark: each variant's best figure, the spread of its runs where they were kept,
and its ratio to the baseline of the same run on the same machine. Machines sit side by side, the
AVX2-only ones first. The page is generated, never edited: `--check` fails when it is out of date
(tests/test_docs.py runs it).

    python benchmarks/render_docs.py           # rewrite docs/performance.md
    python benchmarks/render_docs.py --check   # exit 1 if docs/performance.md differs
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PAGE = ROOT / "docs" / "performance.md"

# What each benchmark's figure means and how it is measured: one paragraph each, in page order.
DESCRIPTIONS = {
    "gguf_all_verify": (
        "Wall-clock seconds of `gguf --outtype all` with verify: 17 files written, each run in llama.cpp "
        "and compared with the native model. The baseline rebuilds the native side of verify (source "
        "opened and hashed, model built, its logits and greedy tokens) for every file; `mythos-convert` "
        "builds it once per invocation and reuses it. Outputs byte-identical, verify results equal."
    ),
    "hf_export": (
        "Wall-clock seconds to turn a mythos-172m checkpoint (float32, 614 MB of weights; the file with "
        "its AdamW state is 1844 MB) into an HF folder, each variant in a fresh child process (start-up "
        "and imports included), warm page cache, `sync` before every run. The baseline is the floor: "
        "copying the same bytes from file to file in the kernel. Peak RSS is the child's own."
    ),
    "verify": (
        "Wall-clock seconds for `verify` of that export in a child process: the native model and "
        "transformers on the same prompts, 32 greedy tokens each, the sha256 of every file. Peak RSS is "
        "1.67x the weights: the interpreter with torch and transformers, and one model at a time."
    ),
    "gguf": (
        "Wall-clock seconds to write one GGUF file from a float32 HF folder of mythos-172m (CLI "
        "included), against a floor that reads the whole source `model.safetensors` and writes as many "
        "bytes as the output has, in a child Python with nothing imported. The ratio is to the floor of "
        "the same type."
    ),
    "gguf-2": (
        "Wall-clock seconds to write a K-quant file of mythos-172m, against llama.cpp's own quantizer "
        "(`llama_model_quantize`) quantizing an F32 GGUF of the same weights to the same type; both "
        "files are byte-identical. The ratio is to llama.cpp's time for the same type."
    ),
    "kquants": (
        "Time to quantize the same float32 rows with our compiled quantizers, as a fraction of llama.cpp's "
        "`ggml_quantize_chunk` on one thread, with and without an importance matrix. Every type's bytes "
        "are identical to ggml's."
    ),
    "generate": (
        "Tokens per second generating from a 64-token prompt with greedy decoding at batch 1, 2 threads, "
        "mythos-172m architecture with random weights; every engine produced the same tokens as native "
        "float32. The baseline is transformers' `generate` in float32. `native` decodes each token in one "
        "call into the compiled AVX2 step (`model/kernels/decode_ops.c`); `native, torch ops` is the same "
        "step on torch's operations, the fallback where the kernels cannot run."
    ),
    "train": (
        "Training tokens per second on mythos-172m in float32 (forward, backward, clipping and AdamW on "
        "the same weights), against transformers' `LlamaForCausalLM` as the baseline."
    ),
    "eval": (
        "Tokens per second of each engine's forward passes in `mythos-convert eval` (windows of 512 "
        "tokens, 2 threads), mythos-172m architecture with random weights; the baseline is the native "
        "float32 engine, the reference every GGUF file's KL divergence is measured against."
    ),
    "eval-2": (
        "Wall-clock seconds for the whole eval report above: loading, hashing, the six engines' forward "
        "passes, cross-entropy and KL divergence."
    ),
}


def load_results(folder: Path = RESULTS) -> list[dict[str, Any]]:
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*.json"))]


def _isa_rank(machine: dict[str, Any]) -> int:
    flags = set(machine.get("flags") or [])
    return 2 if "amx_tile" in flags else 1 if "avx512f" in flags else 0


def machine_label(machine: dict[str, Any]) -> str:
    flags = set(machine.get("flags") or [])
    isa = (
        "AVX-512, AMX"
        if "amx_tile" in flags
        else "AVX-512"
        if "avx512f" in flags
        else "AVX2"
        if "avx2" in flags
        else ""
    )
    name = machine["cpu"].split(" (")[0]
    return f"{name} ({isa})" if isa else name


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _ratio(row: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    if row.get("ratio") is not None:
        return f"{row['ratio']:.2f}x"
    if row.get("baseline") or any(r.get("vs") == row["name"] for r in rows):
        return "1 (baseline)"
    by_name = {r["name"]: r for r in rows}
    base = by_name.get(row["vs"]) if row.get("vs") else next((r for r in rows if r.get("baseline")), None)
    if base is None or not base.get("best") or row.get("best") is None:
        return "-"
    return f"{row['best'] / base['best']:.2f}x"


def _spread(row: dict[str, Any]) -> str:
    spread = row.get("spread")
    return f"{_fmt(spread[0])}-{_fmt(spread[1])}" if spread else "-"


def benchmark_section(key: str, runs: list[tuple[dict[str, Any], dict[str, Any]]]) -> list[str]:
    """One benchmark: its paragraph, what each machine ran, and one table with the machines side by side."""
    first = runs[0][1]
    lines = [f"## {first['title']}", "", DESCRIPTIONS.get(key, " ".join(first.get("notes", []))), ""]
    metric = first.get("metric", "")
    better = {"lower": "lower is better", "higher": "higher is better"}.get(first.get("better", ""), "")
    if metric:
        lines += [f"Figures in {metric}" + (f", {better}" if better else "") + ".", ""]
    for document, bench in runs:
        if bench.get("settings"):
            lines.append(f"- {machine_label(document['machine'])}: {bench['settings']}.")
    lines.append("")
    names: list[str] = []
    for _, bench in runs:
        names += [r["name"] for r in bench["rows"] if r["name"] not in names]
    if not names:
        return [*lines, *_printed_tables(runs)]
    with_rss = any("rss_mib" in r for _, b in runs for r in b["rows"])
    header = ["variant"]
    for document, _ in runs:
        label = machine_label(document["machine"])
        header += [f"{label}: best", "spread", "x baseline"] + (["peak RSS MiB"] if with_rss else [])
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in names:
        cells = [name]
        for _, bench in runs:
            row = next((r for r in bench["rows"] if r["name"] == name), None)
            if row is None:
                cells += ["", "", ""] + ([""] if with_rss else [])
                continue
            cells += [_fmt(row.get("best")), _spread(row), _ratio(row, bench["rows"])]
            if with_rss:
                cells.append(_fmt(row.get("rss_mib")) if "rss_mib" in row else "-")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    return [*lines, *_printed_tables(runs)]


def _printed_tables(runs: list[tuple[dict[str, Any], dict[str, Any]]]) -> list[str]:
    """The tables of benchmarks that recorded no summary rows, as they printed them."""
    lines: list[str] = []
    for document, bench in runs:
        table = bench.get("table")
        if table and not bench["rows"]:
            lines += [f"{machine_label(document['machine'])}, as the benchmark printed it:", ""]
            lines += [f"- {note}" for note in bench.get("notes", [])] + ([""] if bench.get("notes") else [])
            lines += ["| " + " | ".join(map(str, table["headers"])) + " |", "|" + "---|" * len(table["headers"])]
            lines += ["| " + " | ".join(map(str, row)) + " |" for row in table["rows"]]
            lines.append("")
    return lines


def machines_table(documents: list[dict[str, Any]]) -> list[str]:
    lines = ["| machine | CPU | cores | kernel flags | date | versions | commit |", "|---|---|---|---|---|---|---|"]
    for d in documents:
        m = d["machine"]
        versions = ", ".join(f"{k} {v}" for k, v in (d.get("versions") or {}).items())
        lines.append(
            f"| {machine_label(m)} | {m['cpu']} | {m['cores']} | {' '.join(m.get('flags') or [])} | "
            f"{d.get('date') or 'not recorded'} | {versions or 'not recorded'} | {d.get('commit') or 'not recorded'} |"
        )
    return lines


def render(documents: list[dict[str, Any]]) -> str:
    """The whole page; machines ordered AVX2-only first, then AVX-512, then AMX."""
    documents = sorted(documents, key=lambda d: (_isa_rank(d["machine"]), d["machine"]["cpu"]))
    lines = [
        "<!-- Generated by benchmarks/render_docs.py from benchmarks/results/*.json: edit those, not this. -->",
        "",
        "# Performance",
        "",
        "Every figure below comes from a results file in `benchmarks/results/`, one per machine, written by",
        "`benchmarks/run.py --json`. Each benchmark runs alone too (`python benchmarks/bench_NAME.py`);",
        "speed is measured, never asserted in tests. The machines are small shared virtual machines",
        "whose speed drifts from minute to minute, so each figure is the best of several runs (the run",
        "least disturbed by other work), the spread is the range of all runs where they were kept, and",
        "ratios compare rows of the same run: compare ratios across machines, not absolute figures.",
        "",
        "<!-- not-run: runs every benchmark (tens of minutes) -->",
        "```bash",
        "python benchmarks/run.py --json benchmarks/results/MY-MACHINE.json",
        "python benchmarks/render_docs.py",
        "```",
        "",
        "## Machines",
        "",
        *machines_table(documents),
        "",
    ]
    keys: list[str] = [k for k in DESCRIPTIONS if any(k in d["benchmarks"] for d in documents)]
    keys += sorted({k for d in documents for k in d["benchmarks"]} - set(keys))
    for key in keys:
        runs = [(d, d["benchmarks"][key]) for d in documents if key in d["benchmarks"]]
        lines += benchmark_section(key, runs)
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="fail if docs/performance.md is not up to date")
    args = parser.parse_args(argv)
    text = render(load_results())
    if args.check:
        if not PAGE.is_file() or PAGE.read_text(encoding="utf-8") != text:
            print(f"{PAGE} is out of date: run python benchmarks/render_docs.py", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text, encoding="utf-8")
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
