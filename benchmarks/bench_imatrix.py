"""What an importance matrix buys: KL divergence of K-quants with and without one, on the reference fixture.

The reference implementation's own checkpoint (`../shared/fixtures/reference/`, rows of 256 so the
K-quant mixes are the real ones) is exported at each type with and without an imatrix computed by
`mythos-convert imatrix` on calibration text; each file runs in llama.cpp (llama-cpp-python) on
held-out windows that the calibration did not see, and its next-token distributions are compared
with the native model's in float32 (KL(P_native || P_gguf), `engines/divergence.py`). Also: the
imatrix collection's tokens/s. Everything runs in this process, so the rows are comparable.

    python benchmarks/bench_imatrix.py [--types q4_k_m,q3_k_m,q2_k,q4_0] [--windows 16]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _shared import emit, machine, pin_threads

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "reference"
CTX = 128


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--types", default="q4_k_m,q3_k_m,q2_k,q4_0")
    parser.add_argument("--windows", type=int, default=16, help="held-out windows of 128 tokens compared")
    parser.add_argument("--calibration", type=int, default=32, help="windows of 128 tokens for the imatrix")
    args = parser.parse_args(argv)
    pin_threads(2)

    import numpy as np
    import torch

    from mythos_convert.api import export_gguf
    from mythos_convert.data.held_out import held_out_tokens
    from mythos_convert.data.tokenizer import load_tokenizer
    from mythos_convert.engines.divergence import DivergenceAccumulator
    from mythos_convert.engines.llamacpp import llama_logits, load_llama
    from mythos_convert.formats.checkpoint import load_checkpoint, load_model
    from mythos_convert.quant.imatrix import collect
    from mythos_convert.quant.imatrix_file import write_imatrix
    from mythos_convert.support.ui import set_quiet

    set_quiet(True)
    ckpt, tok_path = REFERENCE / "ref_small.pt", REFERENCE / "tokenizer" / "tokenizer.json"
    model = load_model(load_checkpoint(ckpt), torch.float32)
    tokens = held_out_tokens(load_tokenizer(tok_path)).tokens  # the embedded corpus's validation part
    need = (args.calibration + args.windows) * CTX
    if tokens.size < need:
        raise SystemExit(f"only {tokens.size} held-out tokens, {need} needed: lower --windows/--calibration")
    calibration, held_out = tokens[: args.calibration * CTX], tokens[args.calibration * CTX : need]
    windows = [held_out[i * CTX : (i + 1) * CTX].tolist() for i in range(args.windows)]
    with torch.no_grad():
        reference = [model(torch.tensor([w]))[0] for w in windows]

    with tempfile.TemporaryDirectory(prefix="mythos-bench-imatrix-") as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        stats = collect(model, calibration, ctx=CTX, dataset="embedded corpus, validation part")
        collect_s = time.perf_counter() - started
        write_imatrix(work / "imatrix.gguf", stats)
        rows = []
        for outtype in args.types.split(","):
            row: list[object] = [outtype]
            for imatrix in (None, work / "imatrix.gguf"):
                path = work / f"{outtype}-{'im' if imatrix else 'plain'}.gguf"
                written = export_gguf(ckpt, outtype, path, tokenizer=tok_path, verify=False, imatrix=imatrix)
                llm = load_llama(written.written[0].path, CTX)
                acc = DivergenceAccumulator()
                for ids, ref in zip(windows, reference, strict=True):
                    acc.add(ref, llama_logits(llm, ids))
                d = acc.summary()
                row += [f"{d.mean_kl:.5f}", f"{d.p99_kl:.4f}", f"{d.top1_agreement * 100:.1f}%"]
                del llm
            rows.append(row)
        improvement = [float(r[1]) / float(r[4]) if float(r[4]) > 0 else np.inf for r in rows]
        for r, ratio in zip(rows, improvement, strict=True):
            r.append(f"{ratio:.2f}x")
    emit(
        "KL divergence against native float32, reference fixture, without / with an imatrix",
        [
            "type",
            "mean KL",
            "p99 KL",
            "top-1",
            "mean KL (imatrix)",
            "p99 KL (imatrix)",
            "top-1 (imatrix)",
            "mean KL ratio",
        ],
        rows,
        [
            machine(2),
            f"imatrix: {stats.chunk_count} windows of {CTX} tokens in {collect_s:.2f} s "
            f"({stats.tokens_per_second:,.0f} tokens/s, native float32, 2 threads)",
            f"compared on {args.windows} held-out windows of {CTX} tokens the calibration did not see",
        ],
    )


if __name__ == "__main__":
    main()
