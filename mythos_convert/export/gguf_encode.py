"""Encoding one tensor into GGUF types: float casts and llama.cpp's quantizers, spread over workers.

Quantization runs in `kquants` (llama.cpp's quantizers compiled on first use, else numpy),
bit-identical to llama.cpp's own quantizer.
"""

from __future__ import annotations

import concurrent.futures
import os

import gguf
import numpy as np

from mythos_convert.errors import MythosError
from mythos_convert.export.gguf_plan import TensorPlan
from mythos_convert.quant import kquants
from mythos_convert.support.workers import close_pool, process_pool, starting_workers

Q = gguf.GGMLQuantizationType


def encode(
    array: np.ndarray,
    qtype: gguf.GGMLQuantizationType,
    imatrix: np.ndarray | None = None,
    *,
    check_finite: bool = False,
) -> np.ndarray:
    """float32 array -> the bytes (as an array) of `qtype`, as llama.cpp's quantizer writes them.

    Float types are plain casts; every quantized type goes through `kquants.quantize`, which
    weights by `imatrix` where llama.cpp does and hands what gguf-py already does right to it.

    Raises:
        kquants.NonFiniteError: `check_finite` and a NaN or infinity in `array`. The cast and the
            quantizers check in their own pass over the data (compiled); F32 checks, then copies.
    """
    if qtype == Q.F32:
        out = np.ascontiguousarray(array, dtype=np.float32)
        if check_finite and not kquants.all_finite(out):
            raise kquants.NonFiniteError("NaN or infinite values")
        return out
    if qtype == Q.F16:  # numpy's IEEE rounding, compiled where the kernels loaded
        return kquants.to_f16(array, check_finite=check_finite)
    rows = np.ascontiguousarray(array, dtype=np.float32).reshape(-1, array.shape[-1])
    return kquants.quantize(rows, qtype, imatrix, check_finite=check_finite).reshape(*array.shape[:-1], -1)


def checking_type(qtypes: list[gguf.GGMLQuantizationType]) -> gguf.GGMLQuantizationType:
    """Of one tensor's output types, the one whose encoding checks it for NaN/Inf: the first that is
    not F32 (its cast or quantizer folds the check into its own read of the data), else F32."""
    return next((q for q in qtypes if q != Q.F32), qtypes[0])


MIN_PARALLEL = 1 << 20  # values of quantization work (one tensor, all types) below which processes cost more
MIN_PARALLEL_THREADS = 1 << 16  # the same for threads (the compiled quantizers): a submit costs microseconds


def quantize_workers() -> int:
    """Workers to quantize with: MYTHOS_QUANT_WORKERS, else the cores this process may use.

    The compiled quantizers release the GIL, so the workers are threads; kquants' numpy fallback
    loops over positions in a block in Python, where threads gain nothing, so it gets processes.
    """
    value = os.environ.get("MYTHOS_QUANT_WORKERS", "")
    if value.strip():
        try:
            return max(1, int(value))
        except ValueError as exc:
            raise MythosError(f"MYTHOS_QUANT_WORKERS must be an integer, got {value!r}: fix or unset it") from exc
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class ParallelEncoder:
    """`encode` for one tensor into every output's type, the quantization spread over workers.

    Rows are independent in every GGUF type, so slicing them changes no byte (tested). Threads
    where the compiled quantizers loaded, else processes (`quantize_workers`). The pool starts only
    when there is quantization work worth it; float casts stay in this thread.
    """

    def __init__(self, workers: int):
        self.workers = workers
        self._pool: concurrent.futures.Executor | None = None

    def __enter__(self) -> ParallelEncoder:
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        if self._pool is not None:
            close_pool(self._pool, abandon=kind is not None)

    def encode_all(
        self, array: np.ndarray, qtypes: list[gguf.GGMLQuantizationType], imatrix: np.ndarray | None = None
    ) -> list[np.ndarray]:
        """`encode` into each of `qtypes`, the tensor checked for NaN/Inf once (`checking_type`).

        Raises:
            kquants.NonFiniteError: a NaN or infinity in `array`.
        """
        checker = checking_type(qtypes)
        check_at = qtypes.index(checker)  # one check per tensor, however many outputs share the type
        quantized = [q for q in qtypes if q not in (Q.F32, Q.F16)]
        threads = kquants.kernel_status().quantize is not None
        if (
            self.workers < 2
            or array.ndim < 2
            or array.size * len(quantized) < (MIN_PARALLEL_THREADS if threads else MIN_PARALLEL)
        ):
            return [encode(array, q, imatrix, check_finite=i == check_at) for i, q in enumerate(qtypes)]
        rows = np.ascontiguousarray(array, dtype=np.float32).reshape(-1, array.shape[-1])
        slices = np.array_split(np.arange(rows.shape[0]), min(rows.shape[0], 2 * self.workers))
        pool = self._start()
        joined = {  # threads write their rows into these; processes return copies, joined below
            q: np.empty((rows.shape[0], TensorPlan("", rows.shape, q).nbytes // rows.shape[0]), np.uint8)
            for q in quantized
            if threads
        }
        with starting_workers():  # a worker started here is deaf to Ctrl-C from birth
            pending = {
                q: [
                    pool.submit(
                        kquants.quantize,
                        rows[s[0] : s[-1] + 1],
                        q,
                        imatrix,
                        check_finite=q == checker,
                        into=joined[q][s[0] : s[-1] + 1] if threads else None,
                    )
                    for s in slices
                    if s.size
                ]
                for q in dict.fromkeys(quantized)
            }
        out = []
        for i, q in enumerate(qtypes):
            if q in pending:
                parts = [f.result() for f in pending[q]]
                data = joined[q] if threads else np.concatenate(parts)
                out.append(data.reshape(*array.shape[:-1], -1))
            else:
                out.append(encode(array, q, imatrix, check_finite=i == check_at))
        return out

    def _start(self) -> concurrent.futures.Executor:
        if self._pool is None and kquants.kernel_status().quantize is not None:
            self._pool = concurrent.futures.ThreadPoolExecutor(self.workers, thread_name_prefix="quantize")
        elif self._pool is None:  # spawn: no copy of this process's torch threads, and they die with it
            self._pool = process_pool(self.workers, "spawn")
        return self._pool
