"""Run every `bench_*.py` in this folder (each in its own process), then print one combined table.

Each benchmark prints its own markdown table as it finishes; the combined table at the end has
one line per engine and setting with its headline number and its ratio to the baseline of the
same run. Arguments after the options are passed to every benchmark (e.g. `--quick`).

    python benchmarks/run.py --quick
    python benchmarks/run.py --only generate,train
    python benchmarks/run.py --json benchmarks/results/MACHINE.json   # for docs/performance.md

`--json` also writes every figure with the machine (CPU model, cores, flags), the date, the
versions and the commit, in the form `benchmarks/render_docs.py` turns into docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _shared import JSON_ENV, SUMMARY_HEADERS, markdown_table
from results import results_document

HERE = Path(__file__).parent


def discover(only: set[str] | None) -> list[Path]:
    scripts = sorted(HERE.glob("bench_*.py"))
    if only:
        scripts = [s for s in scripts if s.stem.removeprefix("bench_") in only]
    return scripts


def accepted(script: Path, extra: list[str]) -> list[str]:
    """The options of `extra` the script knows (its source names them); e.g. --quick goes only where it exists."""
    source = script.read_text(encoding="utf-8")
    out, skip = [], False
    for i, arg in enumerate(extra):
        if skip:
            skip = False
            continue
        if arg.startswith("--") and f'"{arg.split("=")[0]}"' not in source:
            skip = "=" not in arg and i + 1 < len(extra) and not extra[i + 1].startswith("--")
            continue
        out.append(arg)
    return out


def run_one(script: Path, extra: list[str], json_path: Path, timeout: float) -> tuple[int, float]:
    extra = accepted(script, extra)
    env = dict(os.environ, **{JSON_ENV: str(json_path)})
    started = time.perf_counter()
    print(f"\n## {script.name} {' '.join(extra)}".rstrip(), flush=True)
    try:
        code = subprocess.run([sys.executable, str(script), *extra], env=env, timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        code = 124
    return code, time.perf_counter() - started


def combined_rows(records: list[dict], failures: dict[str, int], silent: list[str]) -> list[list[object]]:
    rows: list[list[object]] = []
    for record in records:
        title = record["title"].split(" (")[0]
        if record.get("summary"):
            rows += [[title, *row] for row in record["summary"]]
        else:
            headers = record["headers"]
            rows += [
                [title, *row[:2], headers[2] if len(headers) > 2 else "", *row[2:3], "", ""] for row in record["rows"]
            ]
    rows += [[name, "-", "-", "failed", f"exit {code}", "-", "see its output above"] for name, code in failures.items()]
    rows += [[name, "-", "-", "-", "-", "-", "table in its output above"] for name in silent]
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=None, help="comma list of names (bench_NAME.py)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per benchmark")
    parser.add_argument("--json", type=Path, default=None, help="write the figures, machine and versions here")
    args, extra = parser.parse_known_args(argv)
    only = set(args.only.split(",")) if args.only else None
    scripts = discover(only)
    if not scripts:
        print("no benchmarks found", file=sys.stderr)
        return 2
    failures: dict[str, int] = {}
    silent: list[str] = []  # succeeded without JSON rows: their own table is in the output
    with tempfile.TemporaryDirectory(prefix="mythos-bench-run-") as tmp:
        json_path = Path(tmp) / "results.jsonl"
        json_path.touch()
        for script in scripts:
            before = len(json_path.read_text().splitlines())
            code, seconds = run_one(script, extra, json_path, args.timeout)
            print(f"({script.name}: exit {code}, {seconds:.0f} s)", flush=True)
            if code != 0:
                failures[script.name] = code
            elif len(json_path.read_text().splitlines()) == before:
                silent.append(script.name)
        records = [json.loads(line) for line in json_path.read_text().splitlines() if line.strip()]
    if args.json:
        document = results_document(records, extra)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
        print(f"figures written to {args.json}", flush=True)
    print("\n## All benchmarks\n")
    print(markdown_table(SUMMARY_HEADERS, combined_rows(records, failures, silent)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
