"""A ~1B model end to end on one CPU machine: FSDP training, a DCP checkpoint, export, verify, eval.

Each stage is the command a user types, run as its own process tree; the table gives its wall time,
its peak resident memory (the sum over the tree, sampled every 0.2 s from /proc, so both FSDP ranks
count) and that peak as a multiple of the float32 weights.

    python benchmarks/bench_1b.py                       # mythos-1b: 2 FSDP steps on 2 gloo ranks, then the exports
    python benchmarks/bench_1b.py --quick               # the tiny preset, same stages (a smoke run)
    python benchmarks/bench_1b.py --stages prepare,train --keep runs/bench-1b

Stages: prepare (one process: the tokenizer and token files, `train --stop-after 0`), train
(torchrun, 2 ranks, --strategy fsdp, `--resume` of the prepared run, DCP folder), hf and gguf q4_k_m,q8_0 straight
from the DCP folder, verify of the HF folder whole and --layerwise, eval on a few windows. A stage
that fails is a row saying so (its first error line) and the later stages that need it are skipped;
the script then exits 1.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))

from _shared import THREADS_DEFAULT, emit, machine

STAGES = ("prepare", "train", "hf", "gguf", "verify", "verify-layerwise", "eval")
NEEDS = {"train": "prepare", "hf": "train", "gguf": "train", "verify": "hf", "verify-layerwise": "hf", "eval": "hf"}
HEADERS = ["stage", "command", "wall s", "peak RSS GiB", "RSS / weights", "result"]


def _rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _tree(root: int) -> list[int]:
    """`root` and all its descendants, from the parent ids in /proc/*/stat."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += parents.get(pid, [])
    return found


def run_stage(cmd: list[str], env: dict[str, str]) -> tuple[int, float, float, str]:
    """Run one command; its exit code, wall seconds, peak RSS of its process tree (GiB), last error line."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak, done = 0, threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, sum(_rss_kib(pid) for pid in _tree(proc.pid)))
            done.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, err = proc.communicate()
    done.set()
    sampler.join()
    wall = time.perf_counter() - started
    errors = [line for line in err.splitlines() if line.startswith("error:")] or err.strip().splitlines()[-1:]
    return proc.returncode, wall, peak / 2**20, (errors[0][:160] if errors else "")


def write_preset(path: Path, preset: str, steps: int, seq: int) -> float:
    """The preset with a short run's training settings; returns the float32 weight size in GiB."""
    import torch

    from mythos_convert.model.config import load_preset
    from mythos_convert.model.model import Mythos

    loaded = load_preset(preset)
    training = loaded.training.to_dict()
    training.update(
        batch_size=2, gradient_accumulation_steps=1, seq_len=seq, max_steps=steps, warmup_steps=1,
        eval_interval=steps, eval_steps=1, save_interval=steps, log_interval=1, bf16=False,
    )  # fmt: skip
    path.write_text(yaml.safe_dump({"model": loaded.model.to_dict(), "training": training}, sort_keys=False))
    with torch.device("meta"):
        return Mythos(loaded.model).num_parameters() * 4 / 2**30


def commands(work: Path, preset: Path, ctx: int, strategy: str = "fsdp") -> dict[str, list[str]]:
    cli = [sys.executable, "-m", "mythos_convert"]
    dcp, hf, gguf = work / "run" / "ckpt-dcp", work / "hf", work / "gguf"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    run = str(work / "run")
    train = ["-m", "mythos_convert", "train", "--out", run, "--resume", "--strategy", strategy, "--quiet"]
    return {
        "prepare": [*cli, "train", "--preset", str(preset), "--out", run, "--stop-after", "0", "--quiet"],
        "train": [*torchrun, *train],
        "hf": [*cli, "hf", str(dcp), str(hf), "--no-verify", "--quiet"],
        "gguf": [
            *cli,
            "gguf",
            str(dcp),
            "--outtype",
            "q4_k_m,q8_0",
            "--outfile",
            str(gguf / "model-{ftype}.gguf"),
            "--no-verify",
            "--quiet",
        ],
        "verify": [*cli, "verify", str(hf), "--ckpt", str(dcp), "--quiet"],
        "verify-layerwise": [*cli, "verify", str(hf), "--ckpt", str(dcp), "--layerwise", "--quiet"],
        "eval": [*cli, "eval", str(hf), "--ctx", str(ctx), "--chunks", "4", "--no-record", "--quiet"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the tiny preset instead of mythos-1b")
    parser.add_argument("--preset", default=None, help="default: mythos-1b (tiny with --quick)")
    parser.add_argument("--steps", type=int, default=2, help="training steps")
    parser.add_argument("--seq", type=int, default=128, help="training sequence length and eval window")
    parser.add_argument("--strategy", default="fsdp", choices=("fsdp", "ddp"), help="train stage (ddp: to compare)")
    parser.add_argument(
        "--mmap-threshold", type=int, default=None, help="MALLOC_MMAP_THRESHOLD_ for every stage (glibc; e.g. 65536)"
    )
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma list of {', '.join(STAGES)}")
    parser.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it")
    parser.add_argument("--threads", type=int, default=THREADS_DEFAULT, help="threads in all (split over the ranks)")
    args = parser.parse_args(argv)
    preset_name = args.preset or ("tiny" if args.quick else "mythos-1b")
    wanted = [s for s in args.stages.split(",") if s]
    unknown = sorted(set(wanted) - set(STAGES))
    if unknown:
        parser.error(f"unknown stage(s) {', '.join(unknown)}: use {', '.join(STAGES)}")
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-1b-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        return _run(args, preset_name, wanted, work)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


def _run(args, preset_name: str, wanted: list[str], work: Path) -> int:
    weights_gib = write_preset(work / "bench.yaml", preset_name, args.steps, args.seq)
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, args.threads)), "PYTHONUNBUFFERED": "1"}
    if args.mmap_threshold is not None:  # glibc returns freed blocks above this size to the system at once
        env["MALLOC_MMAP_THRESHOLD_"] = str(args.mmap_threshold)
    rank_env = {**env, "OMP_NUM_THREADS": str(max(1, args.threads // 2))}
    cmds = commands(work, work / "bench.yaml", args.seq, args.strategy)
    if args.strategy == "ddp":
        cmds["train"].insert(-1, "--checkpoint-format")
        cmds["train"].insert(-1, "dcp")
    rows, failed = [], set()
    for stage in wanted:
        shown = " ".join(Path(a).name if "/" in a else a for a in cmds[stage][2:])
        if NEEDS.get(stage) in failed:
            failed.add(stage)
            rows.append([stage, shown, "", "", "", f"skipped: {NEEDS[stage]} failed"])
            continue
        code, wall, peak, error = run_stage(cmds[stage], rank_env if stage == "train" else env)
        if code != 0:
            failed.add(stage)
        result = "ok" if code == 0 else f"failed ({code}): {error}"
        rows.append([stage, shown, round(wall, 1), round(peak, 2), f"{peak / weights_gib:.2f}x", result])
        print(f"{stage}: {result} in {wall:.1f} s, peak RSS {peak:.2f} GiB", flush=True)
    notes = [
        f"machine: {machine(args.threads)}; train: 2 gloo ranks of {max(1, args.threads // 2)} thread(s); "
        f"every other stage one process; MALLOC_MMAP_THRESHOLD_ {env.get('MALLOC_MMAP_THRESHOLD_', 'glibc default')}",
        f"model: {preset_name} ({weights_gib:.3g} GiB of float32 weights); {args.steps} {args.strategy.upper()} steps of batch 2 x "
        f"{args.seq} tokens; eval: 4 windows of {args.seq}",
    ]
    emit(f"{preset_name} end to end (wall time and peak RSS per stage)", HEADERS, rows, notes)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
