"""The figures of docs/quantization.md ("What each type costs"): measured, then rendered from a results file.

`--measure` runs the pipeline a user runs on the reference fixture (the reference implementation's
own checkpoint and tokenizer in ../shared): `hf`, `gguf` for the types of the table plus two files
whose types are chosen by measurement at Q4_K_M's and Q3_K_M's file sizes, then `eval` on 64 windows
of the embedded corpus's validation part. The report, with the machine, date, versions and commit,
goes to docs/assets/quantization-eval.json.

Without `--measure` the page's table and docs/assets/gguf-quality.png (the card's own chart code)
are rendered from that file; `--check` fails when the table on the page differs from it
(tests/test_docs.py runs it).

    python benchmarks/render_quantization.py --measure   # a few minutes on 2 cores, then renders
    python benchmarks/render_quantization.py             # table and chart from the results file
    python benchmarks/render_quantization.py --check     # exit 1 if the page's table is out of date
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT.parent / "shared" / "fixtures" / "reference"
PAGE = ROOT / "docs" / "quantization.md"
RESULTS = ROOT / "docs" / "assets" / "quantization-eval.json"
CHART = ROOT / "docs" / "assets" / "gguf-quality.png"
BEGIN, END = "<!-- quantization-figures:begin -->", "<!-- quantization-figures:end -->"
OUTTYPES = "f16,q8_0,q6_k,q5_k_m,q4_k_m,q4_0,q3_k_m,q2_k"
SEARCHED_AT = ("Q4_K_M", "Q3_K_M")  # a searched file at each of these mixes' file sizes
CHUNKS = 64


def measure() -> dict[str, Any]:
    """hf -> gguf (fixed mixes, then searched files at two mixes' sizes) -> eval, in a scratch folder."""
    from results import commit, machine_facts, versions

    from mythos_convert.api import evaluate, export_gguf, export_hf

    ckpt, tokenizer = REFERENCE / "ref_small.pt", REFERENCE / "tokenizer" / "tokenizer.json"
    with tempfile.TemporaryDirectory(prefix="mythos-quant-figures-") as tmp:
        out = Path(tmp) / "ref_small"
        export_hf(ckpt, out, tokenizer=tokenizer, verify=False)
        fixed = export_gguf(out, OUTTYPES, verify=False)
        sizes = {w.outtype.name.upper(): w.nbytes for w in fixed.written}
        budgets = ",".join(str(sizes[mix]) for mix in SEARCHED_AT)
        searched = export_gguf(out, None, verify=False, target_size=budgets)
        at = {w.path.name: mix for w, mix in zip(searched.written, SEARCHED_AT, strict=True)}
        report = evaluate([ckpt, out], tokenizer=tokenizer, chunks=CHUNKS, record=False)
    return {
        "machine": machine_facts(),
        "date": datetime.date.today().isoformat(),
        "versions": versions(),
        "commit": commit(),
        "command": f"hf, gguf --outtype {OUTTYPES} and --target-size at {', '.join(SEARCHED_AT)}'s sizes, "
        f"eval --chunks {CHUNKS}",
        "searched_at": at,
        "report": report.as_dict(),
    }


def _kib(nbytes: int) -> str:
    return f"{nbytes / 1024:.0f} KiB"


def table_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The exported files' rows, largest first, each with its label (the checkpoint, eval's KL
    reference, is left out: its file holds more than the weights)."""
    searched_at = results["searched_at"]
    rows = []
    for row in results["report"]["rows"]:
        if row["reference"]:
            continue
        mix = searched_at.get(Path(row["target"]).name)
        label = f"searched at {mix}'s size" if mix else "float32 (HF folder)" if row["kind"] == "hf" else row["type"]
        rows.append({**row, "label": label, "searched": bool(mix)})
    return sorted(rows, key=lambda r: (-r["size"], r["label"]))


def render_table(results: dict[str, Any]) -> str:
    """The page's table and the sentence saying where and when it was measured."""
    report, facts = results["report"], results["machine"]
    llama = results["versions"].get("llama_cpp_python", "?")
    lines = [
        f"Measured {results['date']} on {facts['cpu']}, {facts['cores']} cores; llama-cpp-python {llama}; "
        f"{report['windows']} windows of {report['ctx']} tokens ({report['scored_tokens']:,} tokens scored); "
        f"`benchmarks/render_quantization.py --measure` measures it again.",
        "",
        "| file | size | bits/weight | perplexity | Δ perplexity | mean KL | p99 KL | top-1 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in table_rows(results):
        kl = r["kl"] or {}
        cells = [
            r["label"],
            _kib(r["size"]),
            f"{r['bits_per_weight']:.2f}",
            f"{r['perplexity']:.4f}",
            "-" if r["delta_perplexity"] is None else f"{r['delta_perplexity']:+.4f}",
            "-" if not kl else f"{kl['mean_kl']:.2e}",
            "-" if not kl else f"{kl['p99_kl']:.2e}",
            "-" if not kl else f"{100 * kl['top1_agreement']:.2f}%",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def chart_png(results: dict[str, Any]) -> bytes:
    """The chart the card draws, from the same rows: fixed mixes as dots, searched files as diamonds."""
    from mythos_convert.evaluate.chart import render_png

    points = [  # the quantized files: F32 and F16 (KL 0 and 2e-7, in the table) would flatten the rest
        {
            "type": r["label"].removeprefix("searched "),
            "size": r["size"],
            "mean_kl": r["kl"]["mean_kl"],
            "searched": r["searched"],
        }
        for r in table_rows(results)
        if r["kl"] is not None and r["bits_per_weight"] < 15
    ]
    return render_png(points, "reference fixture: what each GGUF type costs")


def page_with(table: str, page: str) -> str:
    head, rest = page.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{table}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--measure", action="store_true", help="run hf, gguf and eval again (minutes)")
    parser.add_argument("--check", action="store_true", help="exit 1 if the page's table is out of date")
    args = parser.parse_args(argv)
    if args.measure:
        RESULTS.write_text(json.dumps(measure(), indent=1) + "\n", encoding="utf-8")
    results = json.loads(RESULTS.read_text(encoding="utf-8"))
    page = PAGE.read_text(encoding="utf-8")
    wanted = page_with(render_table(results), page)
    if args.check:
        if wanted != page:
            print(f"{PAGE} is out of date: run python benchmarks/render_quantization.py", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(wanted, encoding="utf-8")
    CHART.write_bytes(chart_png(results))
    print(f"wrote {PAGE.relative_to(ROOT)} and {CHART.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
