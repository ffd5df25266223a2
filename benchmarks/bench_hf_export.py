"""HF export speed and memory on the mythos-172m architecture: `mythos-convert hf` against the obvious
alternatives and the copy floor.

The checkpoint is in the reference's layout with AdamW state (about 3x the weights on disk), random
weights, built once and cached (`--cache`, default `.bench_cache/hf-export/`). Every row runs in a
child process, so wall seconds include interpreter start-up and imports, and peak RSS is that
child's own (`os.wait4` rusage). The checkpoint is read once before timing, so every row starts from
a warm page cache, and `sync` runs before every run, so no run pays for writing back the previous
run's output. Each row shows the best of `--repeats` runs and the spread of all of them.

- ours: `python -m mythos_convert hf CKPT OUT --no-verify -q` (verify is timed in its own row)
- ours without CLI and card: the same export as a library call, without the model card (what the
  export itself costs; the CLI's start-up and the card's imports are the rest of `ours`)
- (a) reference script: `torch.load` of the whole file (optimizer included), build the model,
  `load_state_dict`, remap names, `save_file`
- (b) transformers: `torch.load`, build `LlamaForCausalLM(config)`, `load_state_dict`, `save_pretrained`
- (c) floor: copy as many bytes as the export's weights from the checkpoint file to a new file, the
  fastest way this machine offers: `os.copy_file_range` (the kernel copies page cache to page
  cache, which is also how `ours` moves float32 weights; a read/write loop where it is refused)
- (c') the same bytes through a Python read/write loop (16 MiB reads), the floor this benchmark
  used before `ours` copied in the kernel: shown for comparison, not the reference
- start-up only: the CLI's interpreter start and imports, which every `ours` run pays

Every row is a child Python, the floor included, so every row pays interpreter start-up.

The verify row (`mythos-convert verify OUT --ckpt CKPT`, a child process too) is the best of
`--repeats` runs as well; `--only verify` runs just that row (after one export to verify), with its
peak RSS against the weights (target: at most 2.2x, the two models and nothing more).

    python benchmarks/bench_hf_export.py [--cache DIR] [--repeats N] [--dtype float32|bfloat16] [--only verify]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _shared import bench_tokenizer, emit, machine

ARCH = "mythos-172m"

NAIVE = """
import sys, torch
from safetensors.torch import save_file
from mythos_convert.names import convert_name
from mythos_convert.model.config import MythosConfig
from mythos_convert.model.model import Mythos
ckpt, out, dtype = sys.argv[1], sys.argv[2], getattr(torch, sys.argv[3])
data = torch.load(ckpt, map_location="cpu", weights_only=True)  # the whole file, optimizer included
model = Mythos(MythosConfig.from_dict(data["config"]))
model.load_state_dict(data["model"])
state = {}
for name, tensor in model.state_dict().items():
    if name in ("rope_cos", "rope_sin", "output.weight"):
        continue
    state[convert_name(name, "native", "hf")] = tensor.to(dtype).contiguous()
save_file(state, out + "/model.safetensors", metadata={"format": "pt"})
"""

TRANSFORMERS = """
import sys, torch
from transformers import LlamaConfig, LlamaForCausalLM
from mythos_convert.names import HF_KEY, config_values, convert_name
from mythos_convert.model.config import MythosConfig
ckpt, out, dtype = sys.argv[1], sys.argv[2], getattr(torch, sys.argv[3])
data = torch.load(ckpt, map_location="cpu", weights_only=True)
cfg = MythosConfig.from_dict(data["config"])
config = LlamaConfig(**{HF_KEY[f]: v for f, v in config_values(cfg).items()}, tie_word_embeddings=True)
model = LlamaForCausalLM(config)
state = {convert_name(k, "native", "hf"): v for k, v in data["model"].items() if k not in ("rope_cos", "rope_sin")}
model.load_state_dict(state, strict=True)
model.to(dtype).save_pretrained(out)
"""

LIBRARY = """
import sys
from mythos_convert.api import export_hf
from mythos_convert.support.ui import set_quiet
set_quiet(True)
export_hf(sys.argv[1], sys.argv[2], dtype=sys.argv[3], force=True, verify=False, card=False)
"""

FLOOR = """
import os, sys
src, dst, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open(src, "rb") as fin, open(dst + "/copy.bin", "wb") as fout:
    done = 0
    try:
        while done < n:
            done += os.copy_file_range(fin.fileno(), fout.fileno(), n - done, done)
    except OSError:  # not on this file system: a read/write loop through one reused buffer
        buffer = memoryview(bytearray(4 << 20))
        fin.seek(done)
        while done < n:
            got = fin.readinto(buffer[: min(len(buffer), n - done)])
            fout.write(buffer[:got])
            done += got
"""

READ_WRITE = """
import sys
src, dst, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
chunk = 16 << 20
with open(src, "rb") as fin, open(dst + "/copy.bin", "wb") as fout:
    left = n
    while left:
        block = fin.read(min(chunk, left))
        fout.write(block)
        left -= len(block)
"""


def reference_checkpoint(folder: Path, seed: int = 0) -> Path:
    """`folder/ckpt.pt` in the reference layout: model, AdamW state, step, config; tokenizer beside it."""
    import torch

    from mythos_convert.model.config import load_preset
    from mythos_convert.model.model import Mythos

    folder.mkdir(parents=True, exist_ok=True)
    cfg = load_preset(ARCH).model
    bench_tokenizer(folder, cfg.vocab_size)
    path = folder / "ckpt.pt"
    if path.is_file():
        return path
    torch.manual_seed(seed)
    model = Mythos(cfg)
    params = list(model.parameters())
    optimizer = torch.optim.AdamW(params, lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1)
    for p in params:  # the state one real step leaves, without paying for a backward pass
        optimizer.state[p] = {
            "step": torch.tensor(1.0),
            "exp_avg": torch.randn_like(p) * 1e-3,
            "exp_avg_sq": torch.rand_like(p) * 1e-6,
        }
    payload = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": 1000, "config": cfg.to_dict()}
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.rename(path)
    return path


def run_child(args: list[str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of one child process; raise with its stderr if it fails."""
    with tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        if status:
            err.seek(0)
            raise RuntimeError(f"{args[:4]} failed: {err.read().decode()[-2000:]}")
    return wall, usage.ru_maxrss * 1024  # Linux reports KiB


def best_of(repeats: int, make_args, out: Path) -> tuple[list[float], int]:
    """Wall seconds of every run (sorted) and the largest peak RSS; each run starts after a `sync`."""
    walls, rss = [], 0
    for _ in range(repeats):
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        os.sync()  # dirty pages of earlier rows are written back now, not during this run
        wall, peak = run_child(make_args(out))
        walls.append(wall)
        rss = max(rss, peak)
    return sorted(walls), rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cache", type=Path, default=Path(__file__).resolve().parents[1] / ".bench_cache" / "hf-export"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--only", choices=["verify"], help="run only this row (after one export to verify)")
    parser.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build_only:
        reference_checkpoint(args.cache / "native")
        return
    # The parent stays small (no torch): a child's ru_maxrss includes the parent's RSS it was forked from.
    subprocess.run([sys.executable, __file__, "--build-only", "--cache", str(args.cache)], check=True)
    ckpt = args.cache / "native" / "ckpt.pt"
    buffer = bytearray(1 << 20)  # small: children inherit the parent's peak RSS in their ru_maxrss
    with open(ckpt, "rb") as fh:  # warm the page cache: every row reads from memory, not the disk
        while fh.readinto(buffer):
            pass
    del buffer
    py = sys.executable
    work = args.cache / "runs"
    ours_out = work / "ours"

    def ours(out: Path) -> list[str]:
        return [
            py,
            "-m",
            "mythos_convert",
            "hf",
            str(ckpt),
            str(out),
            "--no-verify",
            "-q",
            "--force",
            "--dtype",
            args.dtype,
        ]

    rows = {}
    if args.only == "verify":
        best_of(1, ours, ours_out)
    else:
        rows["ours: `mythos-convert hf --no-verify`"] = best_of(args.repeats, ours, ours_out)
    weights = sum(p.stat().st_size for p in ours_out.glob("*.safetensors"))
    if args.only is None:
        rows["ours as a library call, no CLI, no card"] = best_of(
            args.repeats, lambda o: [py, "-c", LIBRARY, str(ckpt), str(o), args.dtype], work / "library"
        )
        rows["reference script: torch.load + build model + remap + save_file"] = best_of(
            args.repeats, lambda o: [py, "-c", NAIVE, str(ckpt), str(o), args.dtype], work / "naive"
        )
        rows["transformers `LlamaForCausalLM` + `save_pretrained`"] = best_of(
            args.repeats, lambda o: [py, "-c", TRANSFORMERS, str(ckpt), str(o), args.dtype], work / "transformers"
        )
    floor_row = "floor: `copy_file_range` of the same bytes"
    rows[floor_row] = best_of(
        args.repeats, lambda o: [py, "-c", FLOOR, str(ckpt), str(o), str(weights)], work / "floor"
    )
    if args.only is None:
        rows["the same copy as a Python read/write loop"] = best_of(
            args.repeats, lambda o: [py, "-c", READ_WRITE, str(ckpt), str(o), str(weights)], work / "rw"
        )
        rows["start-up only: `python -m mythos_convert --version`"] = best_of(
            args.repeats, lambda o: [py, "-m", "mythos_convert", "--version"], work / "startup"
        )
    floor = rows[floor_row][0][0]
    table = [
        [
            name,
            round(walls[0], 2),
            f"{walls[0]:.2f}-{walls[-1]:.2f}",
            round(rss / 2**20),
            round(rss / weights, 2),
            round(walls[0] / floor, 2),
        ]
        for name, (walls, rss) in rows.items()
    ]
    verify_walls, verify_rss = [], 0
    for _ in range(args.repeats):  # the folder stays: each run verifies the same export
        os.sync()
        wall, peak = run_child([py, "-m", "mythos_convert", "verify", str(ours_out), "--ckpt", str(ckpt), "-q"])
        verify_walls.append(wall)
        verify_rss = max(verify_rss, peak)
    verify_walls.sort()
    table.append(
        [
            "verify (separate, not in ours)",
            round(verify_walls[0], 2),
            f"{verify_walls[0]:.2f}-{verify_walls[-1]:.2f}",
            round(verify_rss / 2**20),
            round(verify_rss / weights, 2),
            "-",
        ]
    )
    shutil.rmtree(work, ignore_errors=True)
    results = [  # the rows docs/performance.md puts beside other machines' (results.py)
        {"name": name, "best": walls[0], "spread": [walls[0], walls[-1]], "rss_mib": round(rss / 2**20)}
        | ({"baseline": True} if name == floor_row else {})
        for name, (walls, rss) in rows.items()
    ]
    emit(
        f"HF export of {ARCH} ({args.dtype}, {weights / 1e6:.0f} MB of weights; checkpoint {ckpt.stat().st_size / 1e6:.0f} MB with AdamW state)",
        ["variant", "wall s (best)", f"all {args.repeats} runs", "peak RSS MiB", "RSS / weights", "x floor (best)"],
        table,
        notes=[
            machine(torch_threads()),
            f"best of {args.repeats} runs per row (spread shown), each in a fresh child process (start-up and imports "
            "included), warm page cache, sync before every run",
        ],
        results=results,
        settings=f"{ARCH}, {args.dtype}, `bench_hf_export.py --repeats {args.repeats}`; {machine(torch_threads())}",
    )


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    main()
