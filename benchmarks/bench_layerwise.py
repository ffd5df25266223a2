"""Layerwise verify: its gate's measured distribution, and its peak memory against whole verify.

    python benchmarks/bench_layerwise.py gates [--configs all]   # worst per-stage relative |diff|
    python benchmarks/bench_layerwise.py rss [--shapes 172m,500m] # peak RSS, whole vs layerwise

`gates`: the reference fixture and measure_gates.py's random configs (odd heads, GQA 1:1..4:1,
odd vocabularies), each exported as HF float32/bfloat16/float16 and GGUF F32/F16/BF16 and run
through `verify.layerwise.layerwise_compare`; prints the worst stage per config and type.
`gates.LAYERWISE_REL` is set from the worst case printed (docs/parity.md).

`rss`: a random checkpoint of the shape (float32), exported to an HF folder; then `verify --whole`
and `verify --layerwise` each run in a fresh process whose peak RSS (ru_maxrss, file pages
included) is read by a parent that runs nothing else; also the peak of a process that only imports
what verify imports (torch, transformers), the floor under both.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _shared import machine, markdown_table, pin_threads

SHAPES = {  # name -> MythosConfig fields: the released debug model's and the mythos-500m preset's
    "172m": dict(vocab_size=3252, d_model=768, n_layers=24, n_heads=12, n_kv_heads=4, d_ff=3072),
    "500m": dict(vocab_size=32000, d_model=1024, n_layers=40, n_heads=16, n_kv_heads=8, d_ff=4096),  # the preset
}
HF_TYPES = ("float32", "bfloat16", "float16")
GGUF_TYPES = "f32,f16,bf16"

PEAK = (
    "import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:]).returncode; "
    "print(rc, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)"
)


def measure_gates(names: list[str], work: Path) -> list[list[object]]:
    """Rows: config, export type, worst stage, its relative |diff|, passed."""
    from measure_gates import make_configs

    from mythos_convert.api import export_gguf, export_hf
    from mythos_convert.source import open_source
    from mythos_convert.verify.inputs import sequences
    from mythos_convert.verify.layerwise import export_side, layerwise_compare

    rows = []
    for k, (name, (ckpt, tok)) in enumerate(make_configs(work, names).items()):
        native = open_source(ckpt)
        from mythos_convert.data.tokenizer import load_tokenizer

        seqs = sequences(load_tokenizer(tok), native.config.vocab_size, native.config.max_seq_len)
        targets = {}
        for dtype in HF_TYPES:
            folder = work / f"c{k}-hf-{dtype}"
            targets[f"HF {dtype}"] = export_hf(
                ckpt, folder, tokenizer=tok, dtype=dtype, verify=False, card=False
            ).folder
        for w in export_gguf(ckpt, GGUF_TYPES, work / f"c{k}-{{ftype}}.gguf", tokenizer=tok, verify=False).written:
            targets[f"GGUF {w.outtype.name}"] = w.path
        for label, target in targets.items():
            r = layerwise_compare(native, export_side(target), seqs)
            stage = max(r["stages"], key=lambda s: s["rel"])
            rows.append([name, label, stage["name"], f"{stage['rel']:.3g}", r["passed"]])
    return rows


def _peak(cmd: list[str]) -> tuple[int, int, float]:
    """(exit code, peak RSS bytes, seconds) of `cmd` run alone under a parent that measures it."""
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", PEAK, *cmd], capture_output=True, text=True, check=True)
    rc, peak = out.stdout.split()[-2:]
    return int(rc), int(peak), time.perf_counter() - started


def measure_rss(shapes: list[str], work: Path) -> list[list[object]]:
    """Rows: shape, parameters, weights GB, mode, peak RSS GB, x weights, seconds, exit code."""
    import torch

    from mythos_convert.api import export_hf
    from mythos_convert.model.config import MythosConfig
    from mythos_convert.model.model import Mythos

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from helpers import make_reference_tokenizer

    rows = []
    tok = make_reference_tokenizer(work / "tokenizer.json", vocab_size=3252)
    floor = _peak([sys.executable, "-c", "import torch, transformers.models.llama.modeling_llama"])
    for shape in shapes:
        cfg = MythosConfig(**SHAPES[shape]).validate()
        torch.manual_seed(0)
        ckpt = work / f"{shape}.pt"
        torch.save({"model": Mythos(cfg).state_dict(), "step": 1, "config": cfg.to_dict()}, ckpt)
        folder = export_hf(ckpt, work / f"{shape}-hf", tokenizer=tok, verify=False, card=False).folder
        weights = 4 * cfg.num_parameters()
        rows.append(
            [
                shape,
                f"{cfg.num_parameters() / 1e6:.1f} M",
                f"{weights / 1e9:.2f}",
                "imports only",
                f"{floor[1] / 1e9:.2f}",
                f"{floor[1] / weights:.2f}",
                f"{floor[2]:.0f}",
                floor[0],
            ]
        )
        for mode in ("whole", "layerwise"):
            verify = [
                sys.executable,
                "-m",
                "mythos_convert",
                "verify",
                str(folder),
                "--ckpt",
                str(ckpt),
                f"--{mode}",
                "--quiet",
            ]
            rc, peak, seconds = _peak(verify)
            rows.append(
                [
                    shape,
                    f"{cfg.num_parameters() / 1e6:.1f} M",
                    f"{weights / 1e9:.2f}",
                    mode,
                    f"{peak / 1e9:.2f}",
                    f"{peak / weights:.2f}",
                    f"{seconds:.0f}",
                    rc,
                ]
            )
        ckpt.unlink()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("gates", "rss"))
    parser.add_argument("--configs", default="all", help="measure_gates config names, or all (with the reference)")
    parser.add_argument("--shapes", default="172m,500m")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    pin_threads(args.threads)
    print(f"machine: {machine(args.threads)}")
    with tempfile.TemporaryDirectory() as tmp:
        if args.what == "gates":
            names = ["reference", "all"] if args.configs == "all" else args.configs.split(",")
            rows = measure_gates(names, Path(tmp))
            print(markdown_table(["config", "export", "worst stage", "max |diff| / max |native|", "passed"], rows))
        else:
            rows = measure_rss(args.shapes.split(","), Path(tmp))
            headers = ["shape", "parameters", "weights GB (f32)", "verify", "peak RSS GB", "x weights", "s", "exit"]
            print(markdown_table(headers, rows))
    print(json.dumps({"rows": rows}, default=str))


if __name__ == "__main__":
    main()
