"""What every benchmark here shares: thread pinning, the machine's facts, the read bandwidth,
the benchmark model (mythos-172m architecture, random weights, a real 3252-token tokenizer), and
the output: a markdown table on stdout plus, for `run.py`, JSON rows in $MYTHOS_BENCH_JSON.

Timings are the best of several repeats: on a shared machine the fastest run is the one least
disturbed by other work, and each table prints the load average it ran under.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

THREADS_DEFAULT = 2
JSON_ENV = "MYTHOS_BENCH_JSON"  # run.py sets it: each script appends its rows there
ARCH = "mythos-172m"


def pin_threads(threads: int) -> None:
    """Use exactly `threads` threads in torch (and OpenMP/MKL); call before heavy imports if possible."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    torch.set_num_threads(threads)


def cpu_model() -> str:
    """The `lscpu` model name (falls back to /proc/cpuinfo, then platform)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(threads: int) -> str:
    import torch

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{cpu_model()}, {os.cpu_count()} cores, {threads} threads, torch {torch.__version__} "
        f"({torch.backends.cpu.get_cpu_capability()}), load average {load:.1f}"
    )


def best_time(fn: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def read_bandwidth_gbs(threads: int, mib: int = 1024, repeats: int = 5) -> float:
    """Memory read bandwidth: a torch sum over `mib` MiB of float32 (far larger than any cache)."""
    import torch

    torch.set_num_threads(threads)
    data = torch.ones(mib * 1024 * 1024 // 4)
    data.sum()  # touch every page first
    seconds = best_time(data.sum, repeats)
    return data.numel() * 4 / seconds / 1e9


def bench_tokenizer(folder: Path, vocab_size: int):
    """A real ByteLevel BPE of the architecture's vocab size, trained on the embedded corpus (cached)."""
    from mythos_convert.data.corpus import embedded_corpus
    from mythos_convert.data.tokenizer import load_tokenizer, save_tokenizer, train_tokenizer

    path = folder / "tokenizer.json"
    if not path.is_file():
        tok = train_tokenizer(embedded_corpus(max_files=300), vocab_size)
        save_tokenizer(tok, path)
    return load_tokenizer(path)


def bench_checkpoint(folder: Path, arch: str = ARCH, seed: int = 0) -> Path:
    """`folder/ckpt.pt`: the preset's architecture, random weights (seeded), tokenizer beside it (cached)."""
    import torch

    from mythos_convert.data.tokenizer import tokenizer_json_text
    from mythos_convert.formats.checkpoint import save_checkpoint
    from mythos_convert.model.config import load_preset
    from mythos_convert.model.model import Mythos

    folder.mkdir(parents=True, exist_ok=True)
    cfg = load_preset(arch).model
    tok = bench_tokenizer(folder, cfg.vocab_size)
    path = folder / "ckpt.pt"
    if not path.is_file():
        torch.manual_seed(seed)
        model = Mythos(cfg)
        save_checkpoint(path, model.state_dict(), cfg, tokenizer_json=tokenizer_json_text(tok))
    return path


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(value: object) -> str:
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
        return str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


SUMMARY_HEADERS = ["benchmark", "engine", "setting", "metric", "value", "vs baseline", "note"]


def emit(
    title: str,
    headers: Sequence[str],
    rows: Sequence[Sequence[object]],
    notes: Sequence[str] = (),
    summary: Sequence[Sequence[object]] = (),
    *,
    results: Sequence[dict] = (),
    settings: str | None = None,
) -> None:
    """Print the table (markdown, readable as is); record JSON rows.

    `summary` rows (engine, setting, metric, value, vs baseline, note) feed run.py's combined table;
    without them run.py shows the first three columns of `rows`. `results` rows (name, best, spread,
    rss_mib, baseline) and `settings` are what results files keep for docs/performance.md, where each
    row sits beside the same row of other machines.
    """
    print(f"\n### {title}\n")
    for note in notes:
        print(f"- {note}")
    print()
    print(markdown_table(headers, rows))
    sys.stdout.flush()
    target = os.environ.get(JSON_ENV)
    if target:
        record = {
            "id": Path(sys.argv[0]).stem.removeprefix("bench_"),  # which benchmark: results files key on it
            "title": title,
            "headers": list(headers),
            "rows": [list(r) for r in rows],
            "notes": list(notes),
            "summary": [list(r) for r in summary],
            "results": [dict(r) for r in results],
            "settings": settings,
        }
        with open(target, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
