"""llama.cpp's own quantizers, from llama-cpp-python: the ground truth `kquants` is held to.

`tests/test_kquants.py` compares bytes against them and `benchmarks/bench_kquants.py` times
`kquants` against them, so both call llama.cpp the same way:

- `llama_quantize`: `llama_model_quantize`, file to file (what llama-quantize does);
- `ggml_quantize_chunk`: libggml-base's quantizer of a chunk of rows (the work alone).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import gguf
import numpy as np

Q = gguf.GGMLQuantizationType
# main type -> the llama_ftype whose main type it is (`pure` gives every matrix that type)
FILE_TYPES = {
    Q.Q2_K: "LLAMA_FTYPE_MOSTLY_Q2_K",
    Q.Q3_K: "LLAMA_FTYPE_MOSTLY_Q3_K_M",
    Q.Q4_K: "LLAMA_FTYPE_MOSTLY_Q4_K_M",
    Q.Q5_K: "LLAMA_FTYPE_MOSTLY_Q5_K_M",
    Q.Q6_K: "LLAMA_FTYPE_MOSTLY_Q6_K",
    Q.Q4_0: "LLAMA_FTYPE_MOSTLY_Q4_0",
    Q.Q4_1: "LLAMA_FTYPE_MOSTLY_Q4_1",
    Q.Q5_0: "LLAMA_FTYPE_MOSTLY_Q5_0",
    Q.Q5_1: "LLAMA_FTYPE_MOSTLY_Q5_1",
    Q.Q8_0: "LLAMA_FTYPE_MOSTLY_Q8_0",
}

ChunkQuantizer = Callable[..., np.ndarray]  # (rows, qtype, imatrix row or None, threads=1) -> bytes per row


def ggml_quantize_chunk() -> ChunkQuantizer:
    """libggml-base's `ggml_quantize_chunk`: `run(rows, qtype, qw, threads=1)` -> uint8 [rows, bytes per row].

    With `threads` > 1 the rows are cut into that many slices, one thread each, as llama.cpp's
    quantizer does (ctypes drops the GIL for the call).
    """
    import llama_cpp

    lib = ctypes.CDLL(str(Path(llama_cpp.__file__).parent / "lib" / "libggml-base.so"))
    fn = lib.ggml_quantize_chunk
    fn.restype = ctypes.c_size_t
    fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, *[ctypes.c_int64] * 3, ctypes.c_void_p]

    def run(rows: np.ndarray, qtype: gguf.GGMLQuantizationType, qw: np.ndarray | None, threads: int = 1) -> np.ndarray:
        block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
        out = np.zeros((rows.shape[0], rows.shape[1] // block_size * type_size), dtype=np.uint8)
        qw_ptr = None if qw is None else qw.ctypes.data

        def part(lo: int, hi: int) -> None:
            fn(int(qtype), rows[lo:hi].ctypes.data, out[lo:hi].ctypes.data, 0, hi - lo, rows.shape[1], qw_ptr)

        if threads == 1:
            part(0, rows.shape[0])
            return out
        bounds = np.linspace(0, rows.shape[0], threads + 1).astype(int)
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(part, bounds[:-1], bounds[1:]))
        return out

    return run


def llama_quantize(
    src: Path, dst: Path, file_type: int, imatrix: dict | None = None, *, pure: bool = False, nthread: int = 2
) -> None:
    """llama.cpp's own quantizer (llama-cpp-python's `llama_model_quantize`), file to file: the ground
    truth for our types and bytes. `imatrix` maps tensor names to per-column weights, looked up by
    name as llama-quantize does; `pure` gives every matrix the file's main type (no mix)."""
    import pytest

    llama_cpp = pytest.importorskip("llama_cpp")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = int(file_type)
    params.pure = pure
    params.nthread = nthread
    keep = []  # the arrays must outlive the call
    if imatrix is not None:
        entries = (llama_cpp.llama_model_imatrix_data * (len(imatrix) + 1))()  # a NULL name ends the list
        for entry, (name, values) in zip(entries, imatrix.items(), strict=False):
            values = np.ascontiguousarray(values, dtype=np.float32)
            keep.append(values)
            entry.name = name.encode()
            entry.data = values.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            entry.size = values.size
        params.imatrix = entries
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    assert rc == 0, f"llama_model_quantize returned {rc}"
