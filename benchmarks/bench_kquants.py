"""K-quant speed: `mythos_convert.quant.kquants` against llama.cpp's own quantizer, same run.

Two matrices of the mythos-172m shapes (768x2048 and 2048x768: rows of 2048 and of 768 values),
random normal weights, and a heavy-tailed per-column importance matrix. For every type, with and
without the imatrix where llama.cpp has both paths, three timings (best of `--repeats`):

- ours: `kquants.quantize` on both matrices (compiled where the kernels load, `--numpy` for the
  numpy fallback; `--threads` slices of rows in threads);
- ggml: `ggml_quantize_chunk` from llama-cpp-python's libggml-base on the same arrays, one thread
  per slice of rows like llama.cpp's quantizer: the quantizing work alone;
- file: `llama_model_quantize` from an F32 GGUF holding the two matrices to a file of that type,
  `nthread = --threads`, `pure` (what llama-quantize costs, file reading and writing included).

The bytes are compared too (ours against ggml's), so a fast wrong answer cannot hide here.

    python benchmarks/bench_kquants.py [--repeats 3] [--threads 1] [--numpy]
"""

from __future__ import annotations

import argparse
import ctypes
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import gguf
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))  # llama.cpp's quantizers, as the tests call them
from _shared import best_time, emit, machine
from ggml_reference import FILE_TYPES, ggml_quantize_chunk, llama_quantize

from mythos_convert.quant import kquants

Q = gguf.GGMLQuantizationType
N_EMBD, N_FF = 768, 2048
NAMES = ("blk.0.ffn_up.weight", "blk.0.ffn_down.weight")  # numpy shapes (2048, 768) and (768, 2048)


def matrices(seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    mats = [(rng.standard_normal(shape) * 0.02).astype(np.float32) for shape in ((N_FF, N_EMBD), (N_EMBD, N_FF))]
    imatrix = [(rng.exponential(size=m.shape[1]) ** 2).astype(np.float32) for m in mats]
    return mats, imatrix


COMPILED = True  # --numpy: False


def ours(rows: np.ndarray, qtype: gguf.GGMLQuantizationType, qw: np.ndarray | None, threads: int) -> np.ndarray:
    if threads == 1:
        return kquants.quantize(rows, qtype, qw, compiled=COMPILED)
    bounds = np.linspace(0, rows.shape[0], threads + 1).astype(int)
    with ThreadPoolExecutor(threads) as pool:
        parts = pool.map(
            lambda lo, hi: kquants.quantize(rows[lo:hi], qtype, qw, compiled=COMPILED), bounds[:-1], bounds[1:]
        )
        return np.concatenate(list(parts))


def write_f32_gguf(path: Path, mats: list[np.ndarray]) -> None:
    """The two matrices as llama block 0's ffn_up/ffn_down, with the hparams the quantizer reads."""
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(128)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(1)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(12)
    w.add_head_count_kv(12)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(32)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    for name, array in zip(NAMES, mats, strict=True):
        w.add_tensor(name, array)
    w.add_tensor("output_norm.weight", np.ones(N_EMBD, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def llama_file_quantize(src: Path, dst: Path, qtype, imatrix: list[np.ndarray] | None, threads: int) -> None:
    import llama_cpp

    entries = None if imatrix is None else dict(zip(NAMES, imatrix, strict=True))
    llama_quantize(src, dst, getattr(llama_cpp, FILE_TYPES[qtype]), entries, pure=True, nthread=threads)


def quiet_llama_logs():
    """llama.cpp logs every tensor it quantizes; keep the table readable."""
    import llama_cpp

    @llama_cpp.llama_log_callback
    def drop(level, text, user_data):
        return None

    llama_cpp.llama_log_set(drop, ctypes.c_void_p())
    return drop  # keep a reference: llama.cpp holds the pointer


def measure(qtype, imatrix: list[np.ndarray] | None, mats, ggml, src: Path, threads: int, repeats: int) -> list:
    """One table row: times of ours, ggml's quantizer and llama_model_quantize, and whether bytes agree."""
    qws = imatrix if imatrix is not None else [None] * len(mats)
    pairs = list(zip(mats, qws, strict=True))
    equal = all(np.array_equal(ours(m, qtype, w, threads), ggml(m, qtype, w, threads)) for m, w in pairs)
    t_ours = best_time(lambda: [ours(m, qtype, w, threads) for m, w in pairs], repeats)
    t_ggml = best_time(lambda: [ggml(m, qtype, w, threads) for m, w in pairs], repeats)
    dst = src.with_name("out.gguf")
    t_file = best_time(lambda: llama_file_quantize(src, dst, qtype, imatrix, threads), repeats)
    return [
        qtype.name,
        "no" if imatrix is None else "yes",
        t_ours * 1000,
        t_ggml * 1000,
        t_file * 1000,
        t_ours / t_ggml,
        t_ours / t_file,
        "yes" if equal else "NO",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--numpy", action="store_true", help="time kquants' numpy fallback, not the compiled path")
    args = parser.parse_args()
    global COMPILED
    COMPILED = not args.numpy
    kquants.kernel_status()  # built and self-tested before any timing
    mats, imatrix = matrices()
    ggml = ggml_quantize_chunk()
    keep = quiet_llama_logs()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "f32.gguf"
        write_f32_gguf(src, mats)
        for qtype in FILE_TYPES:
            for weights in (None, imatrix):
                if qtype == Q.Q8_0 and weights is not None:
                    continue  # Q8_0 ignores an imatrix
                rows.append(measure(qtype, weights, mats, ggml, src, args.threads, args.repeats))
                print(*rows[-1], sep="\t", file=sys.stderr)
    del keep
    emit(
        "K-quants: ours vs llama.cpp's quantizer (768x2048 + 2048x768, float32)",
        ["type", "imatrix", "ours ms", "ggml ms", "llama_model_quantize ms", "ours/ggml", "ours/file", "same bytes"],
        rows,
        notes=[
            machine(args.threads),
            f"ours: {'numpy (--numpy)' if args.numpy else kquants.describe()}",
            f"best of {args.repeats}; ggml = ggml_quantize_chunk (the quantizing alone), "
            "file = llama_model_quantize F32 GGUF -> quantized GGUF (reads and writes included)",
            "numpy path: Q4_0/Q5_0/Q8_0 without an imatrix are gguf-py's quantizers (kquants delegates to them)",
        ],
    )


if __name__ == "__main__":
    main()
