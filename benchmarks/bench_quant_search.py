"""Types chosen by measurement vs llama.cpp's fixed mixes at the same file size (issue 27).

For each mix (Q4_K_M, Q3_K_M; llama.cpp's rules with an imatrix, `quant/types.py`), the search
(`quant/search.py`) gets that mix's file size as its budget; both files' weights are quantized
with llama.cpp's bytes (`kquants`), dequantized, and run in the native float32 torch model on
held-out windows that neither the imatrix nor the sensitivity measurement saw. Printed: each
file's size and mean per-token KL(float32 || file), the ratio, and the search's time. llama.cpp
runs of the same files come when the engine layer lands; the bytes are the same.

`--rank` also measures every (tensor, type) KL one at a time and prints how well the imatrix
proxy and the hybrid cost rank them (Spearman), over all pairs and within each tensor.

    python benchmarks/bench_quant_search.py [--model ref|172m|PATH] [--calibration 8] [--windows 16] [--rank]
    python benchmarks/bench_quant_search.py --gates [--configs reference,all]

`--gates` measures what verify's gate for searched files rests on: for the reference fixture and
the random configs of measure_gates.py, `gguf --target-size` files at the smallest reachable size
and 1% above each fixed mix's size (Q2_K, Q3_K_M, Q4_K_M, Q5_K_M), each verified in llama.cpp,
and their KL as a fraction of the gate verify holds them to (`gates.searched_gate`).

`ref` is the reference fixture (trained, rows of 256); `172m` the mythos-172m architecture with
random weights (seed 0; `--layers N` keeps its widths and vocabulary with fewer layers); a path is
a trained checkpoint (`mythos-convert train`), its tokenizer.json beside it.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _shared import bench_tokenizer, machine, markdown_table, pin_threads

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "reference"
CTX = 128
MIXES = ("MOSTLY_Q4_K_M", "MOSTLY_Q3_K_M")


def load(which: str, tmp: Path, layers: int | None):
    """The float32 model and its tokenizer (`172m`: random weights, `layers` of the preset's width)."""
    import dataclasses

    import torch

    from mythos_convert.data.tokenizer import load_tokenizer
    from mythos_convert.model.config import load_preset
    from mythos_convert.model.model import Mythos
    from mythos_convert.source import open_source

    if which != "172m":  # the reference fixture, or a trained checkpoint with its tokenizer beside it
        path = REFERENCE / "ref_small.pt" if which == "ref" else Path(which)
        source = open_source(path)
        model = Mythos(source.config)
        model.load_state_dict(source.state_dict())
        tok = REFERENCE / "tokenizer" / "tokenizer.json" if which == "ref" else path.parent / "tokenizer.json"
        return model.eval(), load_tokenizer(tok)
    config = load_preset("mythos-172m").model
    config = dataclasses.replace(config, n_layers=layers or config.n_layers)
    torch.manual_seed(0)
    return Mythos(config).to(torch.float32).eval(), bench_tokenizer(tmp, config.vocab_size)


def header_bytes(tokenizer) -> int:
    """The key/value section's size, estimated: the vocabulary and merges as the writer stores them,
    and 30 short keys. The same for every file compared, so it moves no comparison."""
    import json

    import gguf

    from mythos_convert.quant.search import kv_section_bytes

    data = json.loads(tokenizer.to_str())
    writer = gguf.GGUFWriter("unused.gguf", "llama")
    writer.add_token_list(list(data["model"]["vocab"]))
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in data["model"]["merges"]])
    writer.add_token_types([1] * len(data["model"]["vocab"]))
    for i in range(30):
        writer.add_uint32(f"llama.key_{i:02d}.of_typical_length", i)
    return kv_section_bytes(writer)


def mix_recipe(layout, config, ftype_name: str):
    import gguf

    from mythos_convert.quant.types import choose_types

    choices = choose_types(
        gguf.LlamaFileType[ftype_name],
        layout.shapes,
        n_layers=config.n_layers,
        n_heads=config.n_heads,
        n_kv_heads=config.n_kv_heads,
        imatrix=True,
    )
    return {name: choices[name].qtype for name in layout.matrices}


def plain_size(layout, recipe) -> int:
    """A llama-quantize file of `recipe`: no recipe key (the searched file's budget pays for its own)."""
    from mythos_convert.quant import recipe as recipes

    return layout.file_bytes(recipe) - sum(recipes.entry_bytes(n, q) for n, q in recipe.items()) - recipes.key_bytes()


def rank_report(model, layout, calibration, imatrix, hybrid) -> list[list[object]]:
    """Spearman of the proxy and of the hybrid cost against per-pair measured KL."""
    import numpy as np

    from mythos_convert.quant.sensitivity import measure, spearman

    exact = measure(model, layout.matrices, calibration, imatrix, method="measured")
    pairs = [(n, q) for n in layout.matrices for q in exact.costs[n]]
    kl = [exact.costs[n][q] for n, q in pairs]
    rows = []
    for label, table in (("imatrix proxy", hybrid.proxy), ("hybrid cost", hybrid.costs)):
        within = np.mean(
            [spearman(list(exact.costs[n].values()), [table[n][q] for q in exact.costs[n]]) for n in layout.matrices]
        )
        rows.append([label, f"{spearman(kl, [table[n][q] for n, q in pairs]):.3f}", f"{within:.3f}"])
    return rows


def compare_mixes(model, layout, sens, scoring, imatrix) -> list[list[object]]:
    """Each mix and the search at the mix's file size: bytes and held-out KL of both."""
    from mythos_convert.quant.search import choose
    from mythos_convert.quant.sensitivity import file_kl

    rows = []
    for mix in MIXES:
        fixed = mix_recipe(layout, model.config, mix)
        size = plain_size(layout, fixed)
        choice = choose(layout, sens, size)
        kl_fixed, kl_search = (file_kl(model, r, scoring, imatrix) for r in (fixed, choice.recipe))
        ratio = f"{kl_search / kl_fixed:.2f}x"
        sizes = [f"{size:,}", f"{kl_fixed:.5f}", f"{choice.file_bytes:,} ({choice.file_bytes / size:.3f})"]
        rows.append([mix.removeprefix("MOSTLY_"), *sizes, f"{kl_search:.5f}", ratio])
    return rows


def gate_sizes(ckpt: Path, tok: Path) -> list[int]:
    """(Nearly) the smallest file the search can write (the target's name in the header moves it by a few bytes), and 1% above each fixed mix's file (capped at F16)."""
    from mythos_convert.export.gguf import load_metadata, open_export_source
    from mythos_convert.export.gguf_plan import OUTTYPES, plan_tensors
    from mythos_convert.export.gguf_target import Target, target_layout
    from mythos_convert.export.gguf_vocab import build_vocab
    from mythos_convert.quant.search import reachable

    source = open_export_source(ckpt)
    vocab = build_vocab(source.tokenizer(tok)[0], source.config.vocab_size)
    layout = target_layout(source, vocab, load_metadata(source.config), Target("size1MB", size=1), None)
    low, high = reachable(layout)
    head = layout.fixed_bytes() - sum(4 * math.prod(s) for s in layout.shapes.values() if len(s) < 2)
    mixes = [sum(p.nbytes for p in plan_tensors(source.config, OUTTYPES[m])) for m in GATE_MIXES]
    return [low + 64] + [min(high, int(1.01 * (head + m))) for m in mixes]


GATE_MIXES = ("q2_k", "q3_k_m", "q4_k_m", "q5_k_m")


def gate_report(names: list[str]) -> None:
    """Searched files of every config, verified in llama.cpp: KL against the gate they are held to."""
    import tempfile

    from measure_gates import make_configs

    from mythos_convert.api import export_gguf
    from mythos_convert.verify.gguf import verify_gguf

    rows, worst = [], [0.0, 0.0]
    with tempfile.TemporaryDirectory() as tmp:
        for name, (ckpt, tok) in make_configs(Path(tmp), names).items():
            sizes = ",".join(str(s) for s in gate_sizes(ckpt, tok))
            work = Path(tmp) / f"w{len(rows)}"
            work.mkdir()
            export = export_gguf(ckpt, None, work / "m.gguf", tokenizer=tok, target_size=sizes, verify=False)
            for w in export.written:
                r = verify_gguf(w.path, ckpt, tokenizer=tok, check_transformers=False, record=False, show=False)
                gate = r["tolerance"]
                mean_gate, p99_gate = (float(x) for x in re.findall(r"KL<=([\d.e-]+)", gate))
                ratios = (r["mean_kl"] / mean_gate, r["p99_kl"] / p99_gate)
                worst = [max(a, b) for a, b in zip(worst, ratios, strict=True)]
                kls = [f"{r['mean_kl']:.4g}", f"{r['p99_kl']:.4g}", f"{ratios[0]:.3f}", f"{ratios[1]:.3f}"]
                mix = gate.rpartition("(")[2].removesuffix("'s gate)")
                rows.append([name, w.outtype.name, f"{w.nbytes:,}", mix, *kls, "pass" if r["passed"] else "FAIL"])
    print(f"# Searched GGUF files in llama.cpp against verify's gate\n\n{machine(2)}\n")
    header = ["config", "target", "bytes", "gate", "mean KL", "p99 KL", "mean / gate", "p99 / gate", "verify"]
    print(markdown_table(header, rows))
    print(f"\nworst: mean KL {worst[0]:.3f} of its gate, p99 KL {worst[1]:.3f} of its gate")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="ref", help="ref, 172m or a checkpoint path")
    parser.add_argument("--gates", action="store_true", help="measure searched files' KL against verify's gate")
    parser.add_argument("--configs", default="reference,all", help="--gates: measure_gates.py's config names")
    parser.add_argument(
        "--calibration", type=int, default=8, help="windows of 128 tokens for the imatrix and sensitivities"
    )
    parser.add_argument("--windows", type=int, default=16, help="held-out windows of 128 tokens scored")
    parser.add_argument("--layers", type=int, help="172m only: this many layers (the preset's 24 when left out)")
    parser.add_argument("--method", default="hybrid", choices=("hybrid", "measured", "proxy"))
    parser.add_argument("--rank", action="store_true", help="also measure every (tensor, type) KL and rank the proxy")
    args = parser.parse_args(argv)
    pin_threads(2)
    if args.gates:
        gate_report(args.configs.split(","))
        return

    import tempfile

    import numpy as np

    from mythos_convert.data.held_out import held_out_tokens, windows
    from mythos_convert.quant.imatrix import collect
    from mythos_convert.quant.search import choose, model_layout
    from mythos_convert.quant.sensitivity import measure

    with tempfile.TemporaryDirectory() as tmp:
        model, tokenizer = load(args.model, Path(tmp), args.layers)
    config = model.config
    text = held_out_tokens(tokenizer).tokens
    cut = windows(text, CTX, args.calibration + args.windows)
    calibration, scoring = cut[: args.calibration], cut[args.calibration :]
    stats = collect(model, np.concatenate(calibration), ctx=CTX)
    imatrix = {name: (stats.sums[name] / stats.counts[name]).astype("float32") for name in stats.sums}
    layout = model_layout(config, header_bytes(tokenizer))

    started = time.perf_counter()
    sens = measure(model, layout.matrices, calibration, imatrix, method=args.method)
    seconds = time.perf_counter() - started
    started = time.perf_counter()
    for mix in MIXES:  # the allocation alone, timed apart from the scoring below
        choose(layout, sens, plain_size(layout, mix_recipe(layout, config, mix)))
    allocation = (time.perf_counter() - started) / len(MIXES)
    rows = compare_mixes(model, layout, sens, scoring, imatrix)
    print(f"# Measured type search vs llama.cpp mixes ({args.model}, {args.method})\n")
    print(
        f"{machine(2)}; {len(calibration)} calibration and {len(scoring)} held-out windows of {CTX} tokens; "
        f"search wall time: sensitivities {seconds:.1f} s, then {allocation:.2f} s per budget\n"
    )
    header = ["mix", "mix bytes", "mix KL", "searched bytes (/ mix)", "searched KL", "searched / mix"]
    print(markdown_table(header, rows))
    if args.rank:
        print("\nSpearman rank correlation with the KL measured one tensor and type at a time:\n")
        print(
            markdown_table(
                ["cost", "all (tensor, type) pairs", "mean within a tensor"],
                rank_report(model, layout, calibration, imatrix, sens),
            )
        )


if __name__ == "__main__":
    main()
