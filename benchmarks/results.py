"""The results file `run.py --json` writes and `render_docs.py` reads: figures with their machine.

One file per run: the machine (CPU model, cores, the flags that decide which kernels run), the date,
the versions of what was measured, the commit, and per benchmark its rows. A row holds the best
figure and, where the benchmark kept every run, their spread; `ratio` is to the baseline row of the
same benchmark in the same run.
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

SCHEMA = 1
# The CPU flags that choose kernels here and in llama.cpp, torch and vLLM.
KERNEL_FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16", "amx_int8")
PACKAGES = ("torch", "transformers", "numpy", "llama_cpp_python", "gguf", "mythos-convert")


def cpu_flags() -> list[str]:
    """The kernel-relevant flags of /proc/cpuinfo (empty where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                present = set(line.split(":", 1)[1].split())
                return [f for f in KERNEL_FLAGS if f in present]
    except OSError:
        pass
    return []


def machine_facts() -> dict[str, Any]:
    from _shared import cpu_model

    return {"cpu": cpu_model(), "cores": os.cpu_count(), "flags": cpu_flags(), "arch": platform.machine()}


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def commit() -> str | None:
    """HEAD of the checkout measured, `-dirty` when it has uncommitted changes."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(str(value).rstrip("x"))
    except ValueError:
        return None


def benchmark_rows(record: dict[str, Any]) -> dict[str, Any]:
    """One emitted table as a results entry: the summary rows (engine, setting, metric, value, ratio)."""
    rows = []
    for engine, setting, metric, value, ratio, *_ in record.get("summary") or []:
        rows.append(
            {
                "name": f"{engine}, {setting}" if setting else str(engine),
                "metric": metric,
                "best": _number(value),
                "spread": None,
                "ratio": _number(ratio),
            }
        )
    if record.get("results"):  # rows the benchmark gave in the results files' own form
        rows = [dict(r) for r in record["results"]]
    entry = {"title": record["title"], "notes": record.get("notes", []), "rows": rows}
    if record.get("settings"):
        entry["settings"] = record["settings"]
    if not rows:  # a benchmark without summary rows: its own table, as printed
        entry["table"] = {"headers": record.get("headers", []), "rows": record.get("rows", [])}
    return entry


def results_document(records: list[dict[str, Any]], options: list[str]) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "machine": machine_facts(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        "versions": versions(),
        "commit": commit(),
        "options": options,
        "benchmarks": _keyed(records),
    }


def _keyed(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Each table under its benchmark's id; a second table of the same benchmark gets `-2`, and so on."""
    out: dict[str, Any] = {}
    for record in records:
        base = record.get("id") or record["title"]
        key, n = base, 1
        while key in out:
            n += 1
            key = f"{base}-{n}"
        out[key] = benchmark_rows(record)
    return out
