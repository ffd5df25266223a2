"""Types chosen by measurement vs llama.cpp's fixed mixes at the same file size (issue 27).

For each mix (Q4_K_M, Q3_K_M; llama.cpp's rules with an imatrix, `quant/types.py`), the search
(`quant/search.py`) gets that mix's file size as its budget; both files' weights are quantized
with llama.cpp's bytes (`kquants`), dequantized, and run in the native float32 torch model on
held-out windows that neither the imatrix nor the sensitivity measurement saw. Printed: each
file's size and mean per-token KL(float32 || file), the ratio, and the search's time. llama.cpp
runs of the same files come when the engine layer lands; the bytes are the same.

`--rank` also measures every (tensor, type) KL one at a time and prints how well the imatrix
proxy and the hybrid cost rank them (Spearman), over all pairs and within each tensor.

    python benchmarks/bench_quant_search.py [--model ref|172m] [--calibration 8] [--windows 16] [--rank]

`ref` is the reference fixture (trained, rows of 256); `172m` the mythos-172m architecture with
random weights (seed 0; `--layers N` keeps its widths and vocabulary with fewer layers).
"""

from __future__ import annotations

import argparse
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

    if which == "ref":
        source = open_source(REFERENCE / "ref_small.pt")
        model = Mythos(source.config)
        model.load_state_dict(source.state_dict())
        return model.eval(), load_tokenizer(REFERENCE / "tokenizer" / "tokenizer.json")
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
        rows.append(
            [
                mix.removeprefix("MOSTLY_"),
                f"{size:,}",
                f"{kl_fixed:.5f}",
                f"{choice.file_bytes:,}",
                f"{kl_search:.5f}",
                ratio,
            ]
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("ref", "172m"), default="ref")
    parser.add_argument(
        "--calibration", type=int, default=8, help="windows of 128 tokens for the imatrix and sensitivities"
    )
    parser.add_argument("--windows", type=int, default=16, help="held-out windows of 128 tokens scored")
    parser.add_argument("--layers", type=int, help="172m only: this many layers (the preset's 24 when left out)")
    parser.add_argument("--method", default="hybrid", choices=("hybrid", "measured", "proxy"))
    parser.add_argument("--rank", action="store_true", help="also measure every (tensor, type) KL and rank the proxy")
    args = parser.parse_args(argv)
    pin_threads(2)

    import tempfile

    import numpy as np

    from mythos_convert.data.held_out import held_out_tokens, windows
    from mythos_convert.quant.imatrix import collect
    from mythos_convert.quant.search import model_layout
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
    rows = compare_mixes(model, layout, sens, scoring, imatrix)
    print(f"# Measured type search vs llama.cpp mixes ({args.model}, {args.method})\n")
    print(
        f"{machine(2)}; {len(calibration)} calibration and {len(scoring)} held-out windows of {CTX} tokens; "
        f"sensitivities measured in {seconds:.1f} s\n"
    )
    print(markdown_table(["mix", "mix bytes", "mix KL", "searched bytes", "searched KL", "searched / mix"], rows))
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
