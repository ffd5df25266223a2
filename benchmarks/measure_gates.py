"""What verify's gates are set from: every export format and type measured on random configs and the
reference fixture, with the worst case per type and the config it came from.

For each config (the reference fixture in ../shared/fixtures/reference, written by the reference
implementation itself, and random configs with odd head counts, GQA 1:1..4:1 and odd vocabularies;
widths of 256 or 768 so K-quant blocks fit, and some narrower where llama.cpp's fallback types run):

- HF folder, every dtype: `verify_hf` (native float32 on the same cast weights vs transformers):
  max |diff|, top-1, greedy equal.
- GGUF, every type of `OUTTYPES`: `verify_gguf` (native float32 vs llama.cpp, F32 KV cache):
  max and mean |diff| over max(1, sigma of the reference logits), top-1, greedy equal, and the KL
  divergence of llama.cpp's next-token distribution from the native one (mean, p99; computed by
  `mythos_convert.engines.divergence`), plus each ggml tensor type's worst relative RMS error.

It prints markdown tables: the worst case per type, then every measurement. Gates in
`mythos_convert/verify/` are set at most ~5x the worst case printed here.

    python benchmarks/measure_gates.py [--configs NAME,...] [--threads 2]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # helpers: the tests' random models
from _shared import machine, pin_threads

ROOT = Path(__file__).resolve().parents[1]

REFERENCE = ROOT.parent / "shared" / "fixtures" / "reference"
# name -> (MythosConfig fields, weight scale); random weights (tests/helpers.random_model, seed 3).
# The 768-wide models get scale 2, not the tests' usual 5: at 5 their attention is near one-hot and
# every layer amplifies a perturbation, so a 4-bit file's top-1 fell to 24% (a chaotic model, not a
# quantizer property); at 2 their logits still spread like the trained fixture's (sigma ~3).
RANDOM_CONFIGS: dict[str, tuple[dict, float]] = {
    "3h/1kv (3:1), d768, vocab 517": (
        dict(vocab_size=517, d_model=768, n_heads=3, n_kv_heads=1, d_ff=384, n_layers=1),
        2.0,
    ),
    "12h/3kv (4:1), d768, vocab 601": (
        dict(vocab_size=601, d_model=768, n_heads=12, n_kv_heads=3, d_ff=384, n_layers=2),
        2.0,
    ),
    "5h/5kv (1:1), d160, vocab 600": (
        dict(vocab_size=600, d_model=160, n_heads=5, n_kv_heads=5, d_ff=300, n_layers=3),
        5.0,
    ),
    "3h/1kv (3:1), d96, vocab 517": (dict(vocab_size=517, d_model=96, n_heads=3, n_kv_heads=1, d_ff=256), 5.0),
    "8h/4kv (2:1), d64, vocab 530": (dict(vocab_size=530, d_model=64, n_heads=8, n_kv_heads=4, d_ff=200), 5.0),
}


def lscpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown CPU"
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def make_configs(work: Path, names: list[str]) -> dict[str, tuple[Path, Path]]:
    """name -> (checkpoint, tokenizer.json); the reference fixture first."""
    import torch
    from helpers import random_model, tiny_config

    tok = REFERENCE / "tokenizer" / "tokenizer.json"
    out = {}
    if "reference" in names:
        out["reference fixture (4h/2kv, d256)"] = (REFERENCE / "ref_small.pt", tok)
    for name, (fields, scale) in RANDOM_CONFIGS.items():
        if name in names or "all" in names:
            cfg = tiny_config(**fields)
            ckpt = work / f"cfg{len(out)}.pt"  # the reference's layout: model, step, config
            torch.save({"model": random_model(cfg, 3, scale).state_dict(), "step": 1, "config": cfg.to_dict()}, ckpt)
            out[name] = (ckpt, tok)
    return out


def measure_hf(ckpt: Path, tok: Path, work: Path) -> dict[str, dict]:
    from mythos_convert.api import export_hf
    from mythos_convert.formats.dtypes import HF_DTYPES
    from mythos_convert.verify.hf import verify_hf

    rows = {}
    for dtype in HF_DTYPES:
        folder = work / f"hf-{dtype}"
        export_hf(ckpt, folder, tokenizer=tok, dtype=dtype, verify=False, card=False)
        r = verify_hf(folder, ckpt, record=False, show=False)
        rows[dtype] = {
            "max": r["max_abs_diff"],
            "mean": r["mean_abs_diff"],
            "top1": r["argmax_agreement"],
            "greedy": r["greedy_equal"],
        }
    return rows


def measure_gguf(ckpt: Path, tok: Path, work: Path) -> dict[str, dict]:
    from mythos_convert.api import export_gguf
    from mythos_convert.verify.gguf import verify_gguf

    export = export_gguf(ckpt, "all", work / "m-{ftype}.gguf", tokenizer=tok, verify=False)
    rows = {}
    for written in export.written:
        r = verify_gguf(written.path, ckpt, tokenizer=tok, check_transformers=False, record=False, show=False)
        scale = max(1.0, r["logit_std"])
        rows[written.outtype.name] = {
            "max": r["max_abs_diff"] / scale,
            "mean": r["mean_abs_diff"] / scale,
            "top1": r["argmax_agreement"],
            "greedy": r["greedy_equal"],
            "mean_kl": r["mean_kl"],
            "p99_kl": r["p99_kl"],
            "sigma": r["logit_std"],
            "tensors": r["tensors"]["worst_rel_error"],
            "failures": r["failures"],
        }
    return rows


def _worst(values: list[tuple[float, str]], lowest: bool = False) -> tuple[float, str]:
    """The worst (value, config): NaN first, then the largest (or smallest, for agreement)."""
    nan = [v for v in values if math.isnan(v[0])]
    if nan:
        return nan[0]
    return min(values) if lowest else max(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="reference,all", help="reference and/or random config names, or all")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    pin_threads(args.threads)
    names = [n.strip() for n in args.configs.split(",")]
    hf: dict[str, dict[str, dict]] = {}
    gg: dict[str, dict[str, dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        configs = make_configs(Path(tmp), names)
        for i, (name, (ckpt, tok)) in enumerate(configs.items()):
            work = Path(tmp) / f"w{i}"
            work.mkdir()
            print(f"measuring {name} ...", file=sys.stderr, flush=True)
            with contextlib.redirect_stdout(io.StringIO()):
                hf[name] = measure_hf(ckpt, tok, work)
                gg[name] = measure_gguf(ckpt, tok, work)

    print(f"machine: {lscpu_model()}; {machine(args.threads)}\n")
    print("## Worst case per type\n")
    print(
        "| format / type | max \\|diff\\| / max(1,σ) | mean \\|diff\\| / max(1,σ) | top-1 | greedy | mean KL | p99 KL |"
    )
    print("|---|---|---|---|---|---|---|")
    from mythos_convert.formats.dtypes import HF_DTYPES

    for dtype in HF_DTYPES:
        cells = [(hf[c][dtype], c) for c in hf]
        mx = _worst([(r["max"], c) for r, c in cells])
        mean = _worst([(r["mean"], c) for r, c in cells])
        top1 = _worst([(r["top1"], c) for r, c in cells], lowest=True)
        greedy = all(r["greedy"] for r, _ in cells)
        print(
            f"| HF {dtype} | {mx[0]:.3g} ({mx[1]}) | {mean[0]:.3g} | {top1[0]:.4f} ({top1[1]}) | "
            f"{'equal' if greedy else 'DIFFER'} | - | - |"
        )
    types = list(next(iter(gg.values())))
    tensor_worst: dict[str, tuple[float, str]] = {}
    for t in types:
        cells = [(gg[c][t], c) for c in gg]
        mx = _worst([(r["max"], c) for r, c in cells])
        mean = _worst([(r["mean"], c) for r, c in cells])
        top1 = _worst([(r["top1"], c) for r, c in cells], lowest=True)
        kl = _worst([(r["mean_kl"], c) for r, c in cells])
        p99 = _worst([(r["p99_kl"], c) for r, c in cells])
        greedy = sum(r["greedy"] for r, _ in cells)
        print(
            f"| GGUF {t.upper()} | {mx[0]:.3g} ({mx[1]}) | {mean[0]:.3g} ({mean[1]}) | {top1[0]:.4f} ({top1[1]}) | "
            f"{greedy}/{len(cells)} equal | {kl[0]:.3g} ({kl[1]}) | {p99[0]:.3g} ({p99[1]}) |"
        )
        for r, c in cells:
            for ggml_type, err in r["tensors"].items():
                tensor_worst[ggml_type] = _worst([tensor_worst.get(ggml_type, (0.0, "")), (err, f"{c}, {t}")])
    print("\n## Worst relative RMS tensor error per ggml type (dequantised vs source)\n")
    print("| ggml type | worst ||deq - src|| / ||src|| |")
    print("|---|---|")
    for ggml_type, (err, where) in sorted(tensor_worst.items(), key=lambda kv: kv[1][0]):
        print(f"| {ggml_type} | {err:.3g} ({where}) |")
    print("\n## Every measurement\n")
    print("| config | type | max/σ' | mean/σ' | top-1 | greedy | mean KL | p99 KL | σ | verify failures |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for c in hf:
        for dtype, r in hf[c].items():
            print(f"| {c} | HF {dtype} | {r['max']:.3g} | {r['mean']:.3g} | {r['top1']:.4f} | {r['greedy']} | | | | |")
        for t, r in gg[c].items():
            print(
                f"| {c} | {t.upper()} | {r['max']:.3g} | {r['mean']:.3g} | {r['top1']:.4f} | {r['greedy']} | "
                f"{r['mean_kl']:.3g} | {r['p99_kl']:.3g} | {r['sigma']:.2f} | {'; '.join(r['failures'])[:80]} |"
            )


if __name__ == "__main__":
    main()
