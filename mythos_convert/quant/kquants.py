"""llama.cpp's K-quants (Q2_K..Q6_K), legacy quants and importance-weighted quants, without llama.cpp.

gguf-py quantizes only the legacy types, and only without an importance matrix; llama.cpp's
`quantize_<type>(src, dst, nrow, n_per_row, quant_weights)` is what users' files are made with.
This module gives the same bytes without a llama.cpp build, two ways:

- compiled: `kquants.c` holds llama.cpp's own quantizers (copied verbatim from ggml-quants.c),
  and for the K-quants (and the legacy types with an imatrix) the same searches run on 8
  sub-blocks at once in vector lanes (each lane the scalar code's operations in its order: the
  same bytes, 2-5x faster than llama.cpp's own quantizer). Built on first use with the system C compiler (`mythos_convert.support.cbuild`),
  checked at load against the numpy path below and against its own scalar copy. It releases
  the GIL, so threads spread rows over cores. `MYTHOS_KERNELS=0`, no compiler, a failed build
  or self-test: numpy.
- numpy: every step is the C code's float32 arithmetic in the C code's order: products and sums
  are float32, sums over a block's elements run sequentially from 0 (numpy's `add.reduce` along
  the leading axis of a C-contiguous array does exactly that; along the last axis it sums
  pairwise, which rounds differently), `nearest_int` is ggml's magic-number rounding, and fp16
  scales round to nearest even like ggml's conversion. The work is vectorised over blocks:
  arrays are laid out (position in block, block), so Python loops only over positions inside a
  block and over candidate scales. Trial levels use `np.rint` where every block's value is
  provably below 2^22 (where it equals `nearest_int`), and each search keeps only the winning
  scale, recomputing its levels once. On one core this runs at 1.3-1.9x ggml's own time for
  Q2_K/Q4_K/Q5_K/Q6_K and the imatrix types, ~4.5x for Q3_K without an imatrix
  (`benchmarks/bench_kquants.py`); numpy threads do not scale, so the writer uses processes.

`quantize(rows, qtype, imatrix)` is the one entry point. On the numpy path it hands the types
gguf-py already quantizes like llama.cpp (Q4_0 and Q5_0 without an imatrix, Q8_0 always) to
`gguf.quants`; its Q4_1/Q5_1 differ from ggml's in the sign of a zero minimum, so those are done
here too.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from mythos_convert.support import cbuild

Q = gguf.GGMLQuantizationType
F32 = np.float32
QK_K = 256
GROUP_MAX_EPS = F32(1e-15)
CHUNK_ELEMENTS = 1 << 17  # rows are quantized in slices of about this many values: temporaries stay in cache

K_TYPES = (Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K)
IMATRIX_LEGACY_TYPES = (Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1)  # weighted by an imatrix in llama.cpp, unlike Q8_0
COMPILED_TYPES = (Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0, *K_TYPES, Q.BF16)  # what kquants.c's mq_quantize does

KERNEL_SOURCE = Path(__file__).with_name("kquants.c")
KERNEL_ABI = 7
# Baseline ISA (the lane code adds an AVX2 clone itself), no fast-math, no contraction into FMAs:
# llama.cpp's float32 operations in its order. -O2: as fast here as -O3, built in a quarter of the time.
KERNEL_FLAGS = ["-O2", "-ffp-contract=off", "-fno-math-errno", "-fvisibility=hidden", "-Wno-psabi", "-shared", "-fPIC"]
NONFINITE = 2**64 - 1  # mq_encode_checked's answer for a NaN or infinity (MQ_NONFINITE)


class NonFiniteError(ValueError):
    """The values to encode hold a NaN or an infinity (`check_finite=True`): nothing was returned."""


def quantize(
    rows: np.ndarray,
    qtype: gguf.GGMLQuantizationType,
    imatrix: np.ndarray | None = None,
    *,
    compiled: bool = True,
    check_finite: bool = False,
    into: np.ndarray | None = None,
) -> np.ndarray:
    """float32 rows (n_rows, n_per_row) -> (n_rows, bytes_per_row) uint8, the bytes llama.cpp writes.

    Args:
        rows: the matrix, one quantized row per row (ggml's `ne[0]` is `n_per_row`).
        qtype: any type `gguf.quants` quantizes, plus Q2_K, Q3_K, Q4_K, Q5_K and Q6_K.
        imatrix: per-column importance (`n_per_row` values, what llama-imatrix collects), or None.
        compiled: use the compiled quantizers where they loaded (`kernel_status`); False: numpy.
        check_finite: refuse rows holding NaN or infinity. Compiled, the check is folded into the
            quantizer (each slice of rows checked, then quantized while in cache: the rows are read
            from memory once); numpy: one `isfinite` pass first.

    Raises:
        NonFiniteError: `check_finite` and a NaN or infinity in the rows.
        ValueError: a row length that is not a multiple of the type's block, or an imatrix of the
            wrong length or with non-finite values.
    """
    rows = np.ascontiguousarray(rows, dtype=F32)
    if rows.ndim != 2:
        raise ValueError(f"expected a 2-D array of rows, got shape {rows.shape}")
    n_rows, n_per_row = rows.shape
    qw = _check_imatrix(imatrix, n_per_row) if imatrix is not None else None
    status = kernel_status() if compiled and qtype in COMPILED_TYPES else None
    if status is not None and status.quantize is not None:
        if check_finite:
            return _encode_checked(status.encode_checked, rows, qtype, qw, into)
        return _quantize_compiled(status.quantize, rows, qtype, qw, out=into)
    if check_finite and not np.isfinite(rows).all():
        raise NonFiniteError("NaN or infinite values")
    if into is not None:
        into[...] = quantize(rows, qtype, imatrix, compiled=False)
        return into
    impl = _QUANTIZERS.get((qtype, qw is not None))
    if impl is None:  # gguf-py's numpy quantizers equal ggml's reference ones
        return gguf.quants.quantize(rows, qtype).reshape(n_rows, -1)
    out = _out_rows(qtype, n_rows, n_per_row)
    step = max(1, CHUNK_ELEMENTS // n_per_row)
    with np.errstate(all="ignore"):  # masked-out lanes divide by zero; the C code never looks at them
        for start in range(0, n_rows, step):
            out[start : start + step] = impl(rows[start : start + step], qw)
    return out


def _checked_out(out: np.ndarray, shape: tuple[int, ...], dtype: type = np.uint8) -> np.ndarray:
    """An `into` array the C code may write through: its shape, dtype and layout checked."""
    if out.shape != tuple(shape) or out.dtype != dtype or not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError(f"into must be a writable C-contiguous {np.dtype(dtype)} array of shape {shape}")
    return out


def _out_rows(
    qtype: gguf.GGMLQuantizationType, n_rows: int, n_per_row: int, into: np.ndarray | None = None
) -> np.ndarray:
    """The uint8 rows `qtype`'s bytes go into: `into` (checked) when given, else a new array."""
    block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
    if n_per_row % block_size:
        raise ValueError(f"{qtype.name} needs rows of a multiple of {block_size} values, got {n_per_row}")
    shape = (n_rows, n_per_row // block_size * type_size)
    return np.empty(shape, dtype=np.uint8) if into is None else _checked_out(into, shape)


def _quantize_compiled(
    kernel, rows: np.ndarray, qtype, qw: np.ndarray | None, reference: bool = False, out: np.ndarray | None = None
) -> np.ndarray:
    """`reference`: ggml's scalar code for every type (the lane code is the default for K-quants)."""
    out = _out_rows(qtype, *rows.shape, into=out)
    if rows.size:
        weights = None if qw is None else qw.ctypes.data
        written = kernel(int(qtype), rows.ctypes.data, out.ctypes.data, *rows.shape, weights, int(reference))
        assert written == out.nbytes, (qtype.name, written, out.nbytes)
    return out


def _encode_checked(
    kernel, rows: np.ndarray, qtype, qw: np.ndarray | None, out: np.ndarray | None = None
) -> np.ndarray:
    """mq_encode_checked: `qtype`'s bytes (F16: the float16 cast) with the finiteness check folded in."""
    if qtype == Q.F16:
        out = np.empty(rows.shape, dtype=np.float16) if out is None else _checked_out(out, rows.shape, np.float16)
    else:
        out = _out_rows(qtype, *rows.shape, into=out)
    if rows.size:
        weights = None if qw is None else qw.ctypes.data
        written = kernel(int(qtype), rows.ctypes.data, out.ctypes.data, *rows.shape, weights)
        if written == NONFINITE:
            raise NonFiniteError("NaN or infinite values")
        assert written == out.nbytes, (qtype.name, written, out.nbytes)
    return out


# --- the compiled quantizers (kquants.c) ---------------------------------------------------------


@dataclass(frozen=True)
class KernelStatus:
    quantize: Callable | None  # mq_quantize(type, src, dst, nrow, n_per_row, quant_weights, reference) -> bytes
    reason: str  # the library's path, or why the numpy quantizers run instead
    to_f16: Callable | None = None  # mq_f32_to_f16(src, dst, n, portable)
    all_finite: Callable | None = None  # mq_all_finite(src, n) -> 1 when no NaN/inf
    encode_checked: Callable | None = None  # mq_encode_checked(type, src, dst, nrow, n_per_row, quant_weights)


def all_finite(array: np.ndarray) -> bool:
    """No NaN or infinity in a float32 array: `np.isfinite(array).all()`, in one pass without a
    temporary where the kernels loaded."""
    check = kernel_status().all_finite
    if check is None or array.dtype != F32 or not array.flags.c_contiguous:
        return bool(np.isfinite(array).all())
    return bool(check(array.ctypes.data, array.size))


def to_f16(array: np.ndarray, *, compiled: bool = True, check_finite: bool = False) -> np.ndarray:
    """float32 -> float16, round to nearest even: numpy's `astype` (for finite values), compiled
    (F16C where the CPU has it) when the kernels loaded, about 10x faster.

    Raises:
        NonFiniteError: `check_finite` and a NaN or infinity in `array` (compiled: checked in the
            cast's own pass over the data, as `quantize` does).
    """
    array = np.ascontiguousarray(array, dtype=F32)
    status = kernel_status() if compiled else None
    cast = status.to_f16 if status is not None else None
    if cast is None:
        if check_finite and not np.isfinite(array).all():
            raise NonFiniteError("NaN or infinite values")
        with np.errstate(over="ignore"):  # beyond float16's range: inf, as the compiled cast gives
            return array.astype(np.float16)
    if check_finite:
        return _encode_checked(status.encode_checked, array.reshape(1, -1), Q.F16, None).reshape(array.shape)
    out = np.empty(array.shape, dtype=np.float16)
    cast(array.ctypes.data, out.ctypes.data, array.size, 0)
    return out


def _f16_edges() -> np.ndarray:
    """Values at every corner of the float16 cast: subnormals, ties, the overflow threshold, signs."""
    f16 = np.arange(0, 0x7C00, 37, dtype=np.uint16).view(np.float16).astype(F32)
    halfway = np.nextafter(f16[:-1], f16[1:]) / 2 + f16[1:] / 2  # about midway between float16 neighbours
    edges = np.array([65504, 65519.996, 65520, 2**-24, 2**-25, 3 * 2**-26, 2**-26, 0.0, 1e-30], dtype=F32)
    values = np.concatenate([f16, halfway.astype(F32), (f16[:-1] + f16[1:]) / 2, edges])
    return np.concatenate([values, -values])


def _self_test(fn: Callable) -> str | None:
    """Every compiled type, with and without an imatrix, against the numpy path (2 rows) and the lane
    code against the C file's scalar copy of ggml (64 rows); None when all agree.

    The rows hold an all-zero super-block, a tiny one, a constant one and one of one sign (the
    branches where the searches return early) and few distinct values (exact ties).
    """
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((64, 512)) * 0.02).astype(F32)
    x[0, :256], x[0, 256:288], x[1, :256] = 0, 1e-20, np.abs(x[1, :256])
    x[1, 256:288] = 0.5
    x[2::3] = np.round(x[2::3] * 400) / 8
    qw = (rng.exponential(size=512) ** 2).astype(F32)
    odd = x[:8, :352].copy()  # 11 blocks of 32: the legacy types' lanes take 8, the scalar code 3
    for qtype in COMPILED_TYPES:
        for rows, weights in [(x, None), (x, qw)] + [(odd, qw[:352])] * (qtype in IMATRIX_LEGACY_TYPES):
            which = f"{qtype.name} ({'with' if weights is not None else 'no'} imatrix, rows of {rows.shape[1]})"
            ours = _quantize_compiled(fn, rows, qtype, weights)
            if not np.array_equal(ours[:2], quantize(rows[:2], qtype, weights, compiled=False)):
                return f"the compiled {which} self-test against numpy failed"
            if not np.array_equal(ours, _quantize_compiled(fn, rows, qtype, weights, reference=True)):
                return f"the compiled {which} self-test against ggml's scalar code failed"
    return None


def _finite_self_test(check: Callable, encode_checked: Callable, fn: Callable) -> str | None:
    """mq_all_finite on one bad value of each kind (and none); mq_encode_checked gives the unchecked
    bytes on finite rows and refuses one NaN or infinity in a later slice of rows, for every type."""
    x = np.ones(37, dtype=F32)
    for bad in (np.nan, np.inf, -np.inf, None):
        if bad is not None:
            x[29] = bad
        if bool(check(x.ctypes.data, x.size)) != (bad is None):
            return f"the compiled finiteness check failed on {bad}"
        x[29] = np.finfo(F32).max
    rows = (np.random.default_rng(1).standard_normal((72, 512)) * 0.02).astype(F32)  # 2 slices of rows
    qw = np.linspace(0.5, 2, 512, dtype=F32)
    for qtype in (*COMPILED_TYPES, Q.F16):
        want = rows.astype(np.float16) if qtype == Q.F16 else _quantize_compiled(fn, rows, qtype, qw)
        try:
            got = _encode_checked(encode_checked, rows, qtype, None if qtype == Q.F16 else qw)
        except NonFiniteError:
            return f"the compiled checked {qtype.name} refused finite rows"
        if not np.array_equal(got.view(np.uint8), want.view(np.uint8)):
            return f"the compiled checked {qtype.name} differs from the unchecked one"
        for bad in (np.nan, -np.inf):
            poisoned = rows.copy()
            poisoned[70, 300] = bad
            try:
                _encode_checked(encode_checked, poisoned, qtype, None)
                return f"the compiled checked {qtype.name} let {bad} through"
            except NonFiniteError:
                pass
    return None


def _f16_self_test(cast: Callable) -> str | None:
    x = _f16_edges()
    with np.errstate(over="ignore"):
        want = x.astype(np.float16)
    for portable in (0, 1):
        got = np.empty(x.shape, dtype=np.float16)
        cast(x.ctypes.data, got.ctypes.data, x.size, portable)
        if not np.array_equal(got.view(np.uint16), want.view(np.uint16)):
            return f"the compiled float16 cast ({'portable' if portable else 'F16C'}) self-test failed"
    return None


@functools.cache
def kernel_status() -> KernelStatus:
    """Load (building once if needed) the compiled quantizers, or say why numpy's are used.

    The self-test runs once per built library, numpy, gguf-py, this module and CPU: a pass is
    recorded beside the library (`_self_test_key`), and a later process with the same key skips it.
    """
    if cbuild.disabled():
        return KernelStatus(None, f"{cbuild.DISABLE_ENV}=0")
    lib, where = cbuild.load(KERNEL_SOURCE, KERNEL_FLAGS)
    if lib is None:
        return KernelStatus(None, where)
    try:
        lib.mq_abi.restype = ctypes.c_int
        fn = lib.mq_quantize
        cast, finite, checked = lib.mq_f32_to_f16, lib.mq_all_finite, lib.mq_encode_checked
    except AttributeError as exc:
        return KernelStatus(None, f"kernel build/load failed: {exc}"[:300])
    if lib.mq_abi() != KERNEL_ABI:
        return KernelStatus(None, f"{where} implements another ABI")
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    fn.restype, fn.argtypes = ctypes.c_size_t, [ctypes.c_int, ptr, ptr, i64, i64, ptr, ctypes.c_int]
    cast.restype, cast.argtypes = None, [ptr, ptr, i64, ctypes.c_int]
    finite.restype, finite.argtypes = ctypes.c_int, [ptr, i64]
    checked.restype, checked.argtypes = ctypes.c_size_t, [ctypes.c_int, ptr, ptr, i64, i64, ptr]
    status = KernelStatus(fn, where, cast, finite, checked)
    passed = Path(f"{where}.selftest-{_self_test_key(Path(where))}")
    if passed.is_file():
        return status
    failure = _self_test(fn) or _f16_self_test(cast) or _finite_self_test(finite, checked, fn)
    if failure:
        return KernelStatus(None, failure)
    with contextlib.suppress(OSError):  # a read-only cache: the test runs again next time
        passed.touch()
    return status


def _self_test_key(library: Path) -> str:
    """What the self-test's verdict depends on: the library's bytes, the numpy and gguf-py it is
    compared with (gguf-py's quantizers), this module (the tests themselves) and the CPU features the
    library dispatches on."""
    parts = [
        library.read_bytes(),
        Path(__file__).read_bytes(),
        Path(gguf.quants.__file__).read_bytes(),
        f"{np.__version__} {KERNEL_ABI}".encode(),
        " ".join(sorted(cbuild.cpu_flags())).encode(),
    ]
    return hashlib.sha256(b"\0".join(parts)).hexdigest()[:16]


def describe() -> str:
    """Which quantizers run, in words: for logs and benchmark tables."""
    status = kernel_status()
    return "compiled (llama.cpp's C)" if status.quantize is not None else f"numpy ({status.reason})"


def _check_imatrix(imatrix: np.ndarray, n_per_row: int) -> np.ndarray:
    qw = np.ascontiguousarray(imatrix, dtype=F32).reshape(-1)
    if qw.size != n_per_row:
        raise ValueError(f"imatrix has {qw.size} values, the rows have {n_per_row}")
    if not np.isfinite(qw).all():
        raise ValueError("imatrix has non-finite values")
    return qw


# --- float32 primitives, as ggml computes them --------------------------------------------------


def _nearest_int(v: np.ndarray) -> np.ndarray:
    """ggml's `nearest_int`: add 1.5 * 2^23 and read the low mantissa bits (ties to even)."""
    return ((v + F32(12582912.0)).view(np.int32) & 0x007FFFFF) - 0x00400000


def _sum0(a: np.ndarray) -> np.ndarray:
    """Sum over axis 0 in element order, from +0: the C loops' `float s = 0; s += a[i]`."""
    if a.shape[1] < 2:  # a (n, 1) array is one contiguous run, and numpy would sum it pairwise
        acc = np.zeros(a.shape[1:], dtype=F32)
        for row in a:
            acc = acc + row
        return acc
    return np.add.reduce(np.ascontiguousarray(a), axis=0)


def _f(v: np.ndarray) -> np.ndarray:
    return v.astype(F32)


def _fp16(v: np.ndarray) -> np.ndarray:
    """GGML_FP32_TO_FP16 (round to nearest even), as a float16 array."""
    return np.asarray(v, dtype=F32).astype(np.float16)


def _cols(x: np.ndarray, n: int) -> np.ndarray:
    """(..., k*n) values -> (n, blocks): position inside each block of n first, contiguous."""
    return np.ascontiguousarray(x.reshape(-1, n).T)


def _first_absmax(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(|x| max, the x it came from), first one on ties: `if (ax > amax) { amax = ax; max = x; }`."""
    ax = np.abs(x)
    idx = np.argmax(ax, axis=0)
    lanes = np.arange(x.shape[1])
    return ax[idx, lanes], x[idx, lanes]


def _running_max(values: np.ndarray) -> np.ndarray:
    """`m = 0; if (v > m) m = v;` over the last axis."""
    m = np.zeros(values.shape[:-1], dtype=F32)
    for j in range(values.shape[-1]):
        m = np.where(values[..., j] > m, values[..., j], m)
    return m


# --- ggml's block searches, vectorised over blocks (arrays are (n, blocks)) ----------------------


class _Levels:
    """`clip(nearest_int(v), lo, hi)` into reused buffers: the trial loops' hottest step.

    `float_into` leaves the levels as float32 (what the C code multiplies with); `ints` returns them
    as int32. For |v| < 2^22 `nearest_int` is round-half-even, i.e. `np.rint`: where the caller's
    per-block bound on |v| shows every block in range, the three-step float path runs; otherwise
    the bit trick, which reproduces what C computes even for out-of-range or infinite values.
    """

    SAFE = F32(4.0e6)  # below 2^22 = 4194304 with room for the bound's own rounding

    def __init__(self, shape: tuple[int, ...], lo: int, hi: int) -> None:
        self.buf = np.empty(shape, dtype=F32)
        self.ibuf = self.buf.view(np.int32)
        self.lo, self.hi = lo, hi

    def _scaled(self, scale: np.ndarray, x: np.ndarray, offset: np.ndarray | None) -> np.ndarray:
        if offset is None:
            return np.multiply(scale, x, out=self.buf)
        np.subtract(x, offset, out=self.buf)
        return np.multiply(scale, self.buf, out=self.buf)

    def _exact(self) -> np.ndarray:
        self.buf += F32(12582912.0)
        np.bitwise_and(self.ibuf, 0x007FFFFF, out=self.ibuf)
        self.ibuf -= 0x00400000
        np.maximum(self.ibuf, self.lo, out=self.ibuf)
        return np.minimum(self.ibuf, self.hi, out=self.ibuf)

    def float_into(
        self, out: np.ndarray, scale: np.ndarray, x: np.ndarray, offset: np.ndarray | None, bound: np.ndarray
    ) -> None:
        if bool(np.all(bound < self.SAFE)):  # NaN bounds fail this too
            np.rint(self._scaled(scale, x, offset), out=out)
            np.maximum(out, F32(self.lo), out=out)
            np.minimum(out, F32(self.hi), out=out)
        else:
            self._scaled(scale, x, offset)
            np.copyto(out, self._exact(), casting="unsafe")

    def ints(self, scale: np.ndarray, x: np.ndarray, offset: np.ndarray | None = None) -> np.ndarray:
        self._scaled(scale, x, offset)
        return self._exact().copy()


def _make_qx_quants(x: np.ndarray, nmax: int, qw: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """`make_qx_quants(..., rmse_type=1, qw)`: symmetric scale, 18 trial scales around -nmax/max.

    Levels are not kept per trial: the winning trial's inverse scale is, and its levels are
    recomputed once at the end (the same float32 operations, so the same levels).
    """
    amax, mx = _first_absmax(x)
    w = qw if qw is not None else x * x
    wx = w * x
    levels = _Levels(x.shape, -nmax, nmax - 1)
    lf, tmp = np.empty_like(x), np.empty_like(x)

    zero = amax < GROUP_MAX_EPS  # these blocks' results are replaced by zeros at the end
    in_range = np.zeros(1, dtype=F32)  # |iscale * x| <= |iscale| * amax ~ nmax + 1 in every other block

    def trial(iscale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        levels.float_into(lf, iscale, x, None, in_range)
        sumlx = _sum0(np.multiply(wx, lf, out=tmp))
        np.multiply(w, lf, out=tmp)
        return sumlx, _sum0(np.multiply(tmp, lf, out=tmp))

    best_iscale = F32(-nmax) / mx
    sumlx, suml2 = trial(best_iscale)
    scale = np.where(suml2 != 0, sumlx / suml2, F32(0))
    best = scale * sumlx
    for step in range(-9, 10):
        if step == 0:
            continue
        iscale = -(F32(nmax) + F32(0.1) * F32(step)) / mx
        sumlx, suml2 = trial(iscale)
        better = (suml2 > 0) & (sumlx * sumlx > best * suml2)
        best_iscale = np.where(better, iscale, best_iscale)
        scale = np.where(better, sumlx / suml2, scale)
        best = np.where(better, scale * sumlx, best)
    final = levels.ints(best_iscale, x) + nmax
    final[:, zero] = 0
    return np.where(zero, F32(0), scale), final


def _refine(
    x: np.ndarray, w: np.ndarray, levels: np.ndarray, sumlx: np.ndarray, suml2: np.ndarray, q3: bool, nmax: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The up-to-5 passes of `make_q3_quants` (q3) and `make_qp_quants`: move one level at a time
    to its best value given the others, keeping a move only if the weighted fit improves.

    `levels` are float32 (for make_qp_quants: the uint8 values C stores, wrapped). A block whose
    pass changed nothing would change nothing again, so each pass runs on the blocks the last one
    changed only. Returns the new (levels, sumlx, suml2).
    """
    levels, sumlx, suml2 = levels.copy(), sumlx.copy(), suml2.copy()
    wx = w * x
    active = np.arange(x.shape[1])
    for _ in range(5):
        xa, wa, wxa, la = x[:, active], w[:, active], wx[:, active], levels[:, active]
        slx_a, sl2_a = sumlx[active], suml2[active]
        changed = np.zeros(active.size, dtype=bool)
        for i in range(x.shape[0]):
            li = la[i]
            slx = slx_a - wxa[i] * li
            sl2 = sl2_a - (wa[i] * li) * li
            new = _nearest_int((xa[i] * sl2) / slx)
            if q3:
                np.maximum(new, -nmax, out=new)
            np.minimum(new, nmax - 1 if q3 else nmax, out=new)
            nf = _f(new)
            slx_new = slx + wxa[i] * nf
            sl2_new = sl2 + (wa[i] * nf) * nf
            better = (slx_new * slx_new) * sl2_a > (slx_a * slx_a) * sl2_new
            take = (slx > 0) & (nf != li) & better & ((sl2_new > 0) if q3 else (sl2 > 0))
            la[i] = np.where(take, nf if q3 else _f(new & 0xFF), li)
            slx_a = np.where(take, slx_new, slx_a)
            sl2_a = np.where(take, sl2_new, sl2_a)
            changed |= take
        levels[:, active], sumlx[active], suml2[active] = la, slx_a, sl2_a
        active = active[changed]
        if active.size == 0:
            break
    return levels, sumlx, suml2


def _make_q3_quants(x: np.ndarray, nmax: int) -> tuple[np.ndarray, np.ndarray]:
    """`make_q3_quants(..., do_rmse=true)`: rounding at -nmax/max, weights x^2, then `_refine`."""
    amax, mx = _first_absmax(x)
    lf = _f(np.clip(_nearest_int((F32(-nmax) / mx) * x), -nmax, nmax - 1))
    w = x * x
    sumlx, suml2 = _sum0((w * x) * lf), _sum0((w * lf) * lf)
    lf, sumlx, suml2 = _refine(x, w, lf, sumlx, suml2, True, nmax)
    zero = amax < GROUP_MAX_EPS
    scale = np.where(suml2 > 0, sumlx / suml2, F32(0))
    return np.where(zero, F32(0), scale), np.where(zero, 0, lf.astype(np.int32) + nmax)


def _make_qkx_quants(
    x: np.ndarray, w: np.ndarray, nmax: int, rmin: float, rdelta: float, nstep: int, use_mad: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`make_qkx2_quants` / `make_qkx3_quants` (same arithmetic): scale and min, nstep+1 trials.

    Returns (scale, the_min, levels); the_min is the positive offset ggml stores (`-min`). As in
    `_make_qx_quants`, the winning trial's (inverse scale, min used) is kept, not its levels.
    """
    n = x.shape[0]
    lo, hi = x[0].copy(), x[0].copy()
    sum_w = w[0].copy()
    sum_x = sum_w * x[0]
    for i in range(1, n):
        lo = np.where(x[i] < lo, x[i], lo)
        hi = np.where(x[i] > hi, x[i], hi)
        sum_w = sum_w + w[i]
        sum_x = sum_x + w[i] * x[i]
    smallest = lo
    lo = np.where(lo > 0, F32(0), lo)
    flat = hi == lo  # C returns at once: levels 0, scale 0, the clamped min
    lo_flat = lo
    levels = _Levels(x.shape, 0, nmax)

    def bound(iscale: np.ndarray, lo: np.ndarray) -> np.ndarray:
        """max |iscale * (x - lo)| over each block, from its extremes (flat blocks: 0)."""
        reach = np.maximum(np.abs(hi - lo), np.abs(smallest - lo))
        return np.where(flat, F32(0), np.abs(iscale) * reach)

    lf, wl, tmp = np.empty_like(x), np.empty_like(x), np.empty_like(x)

    def error(scale: np.ndarray, minimum: np.ndarray) -> np.ndarray:
        np.multiply(scale, lf, out=tmp)
        np.add(tmp, minimum, out=tmp)
        np.subtract(tmp, x, out=tmp)
        if use_mad:
            np.abs(tmp, out=tmp)
        else:
            np.multiply(tmp, tmp, out=tmp)
        return _sum0(np.multiply(w, tmp, out=tmp))

    best_iscale = F32(nmax) / (hi - lo)
    best_lo = lo
    scale = F32(1) / best_iscale
    levels.float_into(lf, best_iscale, x, lo, bound(best_iscale, lo))
    best = error(scale, lo)
    for step in range(nstep + 1):
        iscale = (F32(rmin) + F32(rdelta) * F32(step) + F32(nmax)) / (hi - lo)
        levels.float_into(lf, iscale, x, lo, bound(iscale, lo))
        np.multiply(w, lf, out=wl)
        sum_l = _sum0(wl)
        sum_l2 = _sum0(np.multiply(wl, lf, out=tmp))
        sum_xl = _sum0(np.multiply(wl, x, out=tmp))
        det = sum_w * sum_l2 - sum_l * sum_l
        this_scale = (sum_w * sum_xl - sum_x * sum_l) / det
        this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det
        positive = this_min > 0
        this_min = np.where(positive, F32(0), this_min)
        this_scale = np.where(positive, sum_xl / sum_l2, this_scale)
        cur = error(this_scale, this_min)
        better = (det > 0) & (cur < best)
        best_iscale = np.where(better, iscale, best_iscale)
        best_lo = np.where(better, lo, best_lo)
        best = np.where(better, cur, best)
        scale = np.where(better, this_scale, scale)
        lo = np.where(better, this_min, lo)
    final = levels.ints(best_iscale, x, best_lo)
    final[:, flat] = 0
    return np.where(flat, F32(0), scale), -np.where(flat, lo_flat, lo), final


def _make_qp_quants(x: np.ndarray, nmax: int, qw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`make_qp_quants`: a block's sub-block scales (or mins) as levels 0..nmax of one scale.

    Levels are stored in uint8 in C, so values out of 0..255 wrap (`& 0xFF`) where C stores them.
    """
    mx = np.zeros(x.shape[1], dtype=F32)
    for i in range(x.shape[0]):
        mx = np.where(mx > x[i], mx, x[i])
    iscale = F32(nmax) / mx
    levels = _nearest_int(iscale * x) & 0xFF

    def mse(scale: np.ndarray, lf: np.ndarray) -> np.ndarray:
        diff = x - scale * lf
        return _sum0((qw * diff) * diff)

    best = mse(F32(1) / iscale, _f(levels))
    for step in range(-4, 5):
        if step == 0:
            continue
        iscale_is = (F32(0.1) * F32(step) + F32(nmax)) / mx
        cur = mse(F32(1) / iscale_is, _f(np.minimum(nmax, _nearest_int(iscale_is * x))))
        better = cur < best
        best = np.where(better, cur, best)
        iscale = np.where(better, iscale_is, iscale)
    q = np.minimum(nmax, _nearest_int(iscale * x))
    lf = _f(q)
    sumlx, suml2 = _sum0((qw * x) * lf), _sum0((qw * lf) * lf)
    lf, sumlx, suml2 = _refine(x, qw, _f(q & 0xFF), sumlx, suml2, False, nmax)
    levels = lf.astype(np.int32)
    zero = mx < GROUP_MAX_EPS
    scale = np.where(suml2 > 0, sumlx / suml2, F32(0))
    return np.where(zero, F32(0), scale), np.where(zero, 0, levels)


# --- super-block helpers ---------------------------------------------------------------------


def _superblocks(x: np.ndarray, qw: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """(rows, n) -> (blocks, 256) values and the matching per-column weights."""
    blocks = x.reshape(-1, QK_K)
    if qw is None:
        return blocks, None
    return blocks, np.broadcast_to(qw, x.shape).reshape(-1, QK_K)


def _sigma2(xb: np.ndarray, factor: int) -> np.ndarray:
    """`factor * sum(x*x) / 256` over each super-block (the imatrix weights' floor)."""
    xt = _cols(xb, QK_K)
    return (F32(factor) * _sum0(xt * xt)) / F32(QK_K)


def _imatrix_weights(xs: np.ndarray, qws: np.ndarray, sigma2: np.ndarray, per_block: int) -> np.ndarray:
    """`qw[l] * sqrtf(sigma2 + x[l]*x[l])` for (n, sub-blocks) arrays, sigma2 per super-block."""
    return qws * np.sqrt(np.repeat(sigma2, per_block) + xs * xs)


def _requantize(
    xs: np.ndarray, levels: np.ndarray, d: np.ndarray, dm: np.ndarray | None, lo: int, hi: int
) -> np.ndarray:
    """The final pass: levels from the stored fp16 scales; sub-blocks with d == 0 keep theirs."""
    num = xs if dm is None else xs + dm
    fresh = np.clip(_nearest_int(num / d), lo, hi) - lo
    return np.where(d != 0, fresh, levels)


def _rows_of(levels: np.ndarray, n_blocks: int) -> np.ndarray:
    """(n, sub-blocks) levels -> (super-blocks, 256) uint8, the inverse of `_cols`."""
    return levels.T.reshape(n_blocks, QK_K).astype(np.uint8)


def _pack_2bit(levels: np.ndarray) -> np.ndarray:
    """Q2_K/Q3_K `qs`: byte l of each 128 holds levels l, l+32, l+64, l+96 (2 bits each)."""
    q = levels.reshape(-1, 2, 4, 32)
    return (q[:, :, 0] | (q[:, :, 1] << 2) | (q[:, :, 2] << 4) | (q[:, :, 3] << 6)).reshape(-1, 64)


def _pack_scales_k4(ls: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """Q4_K/Q5_K's 12 bytes of eight 6-bit scales and mins (`get_scale_min_k4` reads them)."""
    ls, lm = ls.astype(np.uint8), lm.astype(np.uint8)
    out = np.empty((ls.shape[0], 12), dtype=np.uint8)
    out[:, 0:4] = ls[:, 0:4] | ((ls[:, 4:8] >> 4) << 6)
    out[:, 4:8] = lm[:, 0:4] | ((lm[:, 4:8] >> 4) << 6)
    out[:, 8:12] = (ls[:, 4:8] & 0xF) | ((lm[:, 4:8] & 0xF) << 4)
    return out


def _unpack_scales_k4(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`get_scale_min_k4` for all eight sub-blocks: (scales, mins) as 0..63."""
    q = packed.astype(np.int32)
    sc = np.concatenate([q[:, 0:4] & 63, (q[:, 8:12] & 0xF) | ((q[:, 0:4] >> 6) << 4)], axis=1)
    m = np.concatenate([q[:, 4:8] & 63, (q[:, 8:12] >> 4) | ((q[:, 4:8] >> 6) << 4)], axis=1)
    return sc, m


def _half_bytes(h: np.ndarray) -> np.ndarray:
    """fp16 values (blocks,) -> (blocks, 2) little-endian bytes."""
    return h.astype("<f2").view(np.uint8).reshape(-1, 2)


# --- Q4_K and Q5_K: 8 sub-blocks of 32 with 6-bit scales and mins ---------------------------------


def _q45_k(x: np.ndarray, qw: np.ndarray | None, nmax: int) -> np.ndarray:
    xb, qwb = _superblocks(x, qw)
    n_blocks = xb.shape[0]
    xs = _cols(xb, 32)
    if qwb is None:  # quantize_row_q{4,5}_K_ref
        av_x = np.sqrt(_sum0(xs * xs) / F32(32))
        weights = av_x + np.abs(xs)
        rmin, nstep = (-1.0, 20) if nmax == 15 else (-0.5, 15)
        scale, the_min, levels = _make_qkx_quants(xs, weights, nmax, rmin, 0.1, nstep, False)
        scales, mins = scale.reshape(n_blocks, 8), the_min.reshape(n_blocks, 8)
        max_scale, max_min = _running_max(scales), _running_max(mins)
        inv_scale = np.where(max_scale > 0, F32(63) / max_scale, F32(0))
        inv_min = np.where(max_min > 0, F32(63) / max_min, F32(0))
        ls = np.minimum(63, _nearest_int(inv_scale[:, None] * scales) & 0xFF)
        lm = np.minimum(63, _nearest_int(inv_min[:, None] * mins) & 0xFF)
        d, dmin = _fp16(max_scale / F32(63)), _fp16(max_min / F32(63))
    else:  # quantize_row_q{4,5}_K_impl
        sigma2 = _sigma2(xb, 2)
        weights = _imatrix_weights(xs, _cols(qwb, 32), sigma2, 8)
        scale, the_min, levels = _make_qkx_quants(xs, weights, nmax, -0.9, 0.05, 36, False)
        sw = _sum0(weights).reshape(n_blocks, 8)
        d_block, ls = _make_qp_quants(_cols(scale, 8), 63, _cols(sw, 8))
        m_block, lm = _make_qp_quants(_cols(the_min, 8), 63, _cols(sw, 8))
        ls, lm = ls.T, lm.T
        if nmax == 31:
            ls, lm = np.minimum(63, ls), np.minimum(63, lm)
        d, dmin = _fp16(d_block), _fp16(m_block)
    packed = _pack_scales_k4(ls, lm)
    sc, m = _unpack_scales_k4(packed)
    dq = (d.astype(F32)[:, None] * _f(sc)).reshape(-1)
    dmq = (dmin.astype(F32)[:, None] * _f(m)).reshape(-1)
    levels = _rows_of(_requantize(xs, levels, dq, dmq, 0, nmax), n_blocks)
    q = levels.reshape(n_blocks, 4, 2, 32)
    low = (q[:, :, 0] & 0xF) | ((q[:, :, 1] & 0xF) << 4)
    parts = [_half_bytes(d), _half_bytes(dmin), packed]
    if nmax == 31:
        high = q >> 4
        qh = np.zeros((n_blocks, 32), dtype=np.uint8)
        for k in range(4):
            qh |= (high[:, k, 0] << (2 * k)) | (high[:, k, 1] << (2 * k + 1))
        parts.append(qh)
    parts.append(low.reshape(n_blocks, 128))
    return np.concatenate(parts, axis=1).reshape(x.shape[0], -1)


def _q4_k(x: np.ndarray, qw: np.ndarray | None) -> np.ndarray:
    return _q45_k(x, qw, 15)


def _q5_k(x: np.ndarray, qw: np.ndarray | None) -> np.ndarray:
    return _q45_k(x, qw, 31)


# --- Q6_K: 16 sub-blocks of 16, signed 6-bit levels, int8 scales ----------------------------------


def _q6_k(x: np.ndarray, qw: np.ndarray | None) -> np.ndarray:
    xb, qwb = _superblocks(x, qw)
    n_blocks = xb.shape[0]
    xs = _cols(xb, 16)
    scale, levels = _make_qx_quants(xs, 32, None if qwb is None else _cols(qwb, 16))
    scales = scale.reshape(n_blocks, 16)
    max_abs = np.zeros(n_blocks, dtype=F32)
    max_scale = np.zeros(n_blocks, dtype=F32)
    for j in range(16):
        a = np.abs(scales[:, j])
        take = a > max_abs
        max_abs = np.where(take, a, max_abs)
        max_scale = np.where(take, scales[:, j], max_scale)
    iscale = F32(-128) / max_scale
    d = _fp16(F32(1) / iscale)
    sc = np.minimum(127, _nearest_int(iscale[:, None] * scales)).astype(np.int8)
    dq = (d.astype(F32)[:, None] * _f(sc)).reshape(-1)
    levels = _rows_of(_requantize(xs, levels, dq, None, -32, 31), n_blocks)
    q = levels.reshape(n_blocks, 2, 4, 32)
    low, high = q & 0xF, q >> 4
    ql = np.stack([low[:, :, 0] | (low[:, :, 2] << 4), low[:, :, 1] | (low[:, :, 3] << 4)], axis=2)
    qh = high[:, :, 0] | (high[:, :, 1] << 2) | (high[:, :, 2] << 4) | (high[:, :, 3] << 6)
    out = np.concatenate(
        [ql.reshape(n_blocks, 128), qh.reshape(n_blocks, 64), sc.view(np.uint8), _half_bytes(d)], axis=1
    )
    out[max_abs < GROUP_MAX_EPS] = 0  # an all-zero super-block is written as zeros
    return out.reshape(x.shape[0], -1)


# --- Q3_K: 16 sub-blocks of 16, signed 3-bit levels, 6-bit scales ---------------------------------


def _q3_k(x: np.ndarray, qw: np.ndarray | None) -> np.ndarray:
    xb, qwb = _superblocks(x, qw)
    n_blocks = xb.shape[0]
    xs = _cols(xb, 16)
    if qwb is None:  # quantize_row_q3_K_ref
        scale, levels = _make_q3_quants(xs, 4)
        scales = scale.reshape(n_blocks, 16)
        amax = np.zeros(n_blocks, dtype=F32)
        max_scale = np.zeros(n_blocks, dtype=F32)
        for j in range(16):
            a = np.abs(scales[:, j])
            take = a > amax
            amax = np.where(take, a, amax)
            max_scale = np.where(take, scales[:, j], max_scale)
        iscale = F32(-32) / max_scale
        ls = _nearest_int(iscale[:, None] * scales).astype(np.int8).astype(np.int32)
        ls = np.clip(ls, -32, 31) + 32
        nonzero = max_scale != 0
        ls = np.where(nonzero[:, None], ls, 0)
        d = _fp16(np.where(nonzero, F32(1) / iscale, F32(0)))
    else:  # quantize_row_q3_K_impl
        weights = _imatrix_weights(xs, _cols(qwb, 16), _sigma2(xb, 2), 16)
        scale, levels = _make_qx_quants(xs, 4, weights)
        sw = _sum0(weights)
        d_block, ls = _make_qx_quants(_cols(scale, 16), 32, _cols(sw, 16))
        ls = ls.T
        d = _fp16(d_block)
    dq = (d.astype(F32)[:, None] * _f(ls - 32)).reshape(-1)
    levels = _rows_of(_requantize(xs, levels, dq, None, -4, 3), n_blocks)
    high = (levels > 3).astype(np.uint8)
    levels = levels - (high << 2)
    hmask = np.zeros((n_blocks, 32), dtype=np.uint8)
    for k, h in enumerate(high.reshape(n_blocks, 8, 32).transpose(1, 0, 2)):
        hmask |= h << k
    ls8 = ls.astype(np.uint8)
    packed = np.empty((n_blocks, 12), dtype=np.uint8)
    packed[:, 0:8] = (ls8[:, 0:8] & 0xF) | ((ls8[:, 8:16] & 0xF) << 4)
    top = ls8 >> 4
    packed[:, 8:12] = top[:, 0:4] | (top[:, 4:8] << 2) | (top[:, 8:12] << 4) | (top[:, 12:16] << 6)
    return np.concatenate([hmask, _pack_2bit(levels), packed, _half_bytes(d)], axis=1).reshape(x.shape[0], -1)


# --- Q2_K: 16 sub-blocks of 16, 2-bit levels, 4-bit scales and mins -------------------------------


def _q2_k(x: np.ndarray, qw: np.ndarray | None) -> np.ndarray:
    xb, qwb = _superblocks(x, qw)
    n_blocks = xb.shape[0]
    xs = _cols(xb, 16)
    if qwb is None:  # quantize_row_q2_K_ref
        scale, the_min, levels = _make_qkx_quants(xs, np.abs(xs), 3, -0.5, 0.1, 15, True)
        scales, mins = scale.reshape(n_blocks, 16), the_min.reshape(n_blocks, 16)
        max_scale, max_min = _running_max(scales), _running_max(mins)
        has_scale, has_min = max_scale > 0, max_min > 0
        ls = np.where(has_scale[:, None], _nearest_int((F32(15) / max_scale)[:, None] * scales), 0)
        lm = np.where(has_min[:, None], _nearest_int((F32(15) / max_min)[:, None] * mins), 0)
        d = _fp16(np.where(has_scale, max_scale / F32(15), F32(0)))
        dmin = _fp16(np.where(has_min, max_min / F32(15), F32(0)))
    else:  # quantize_row_q2_K_impl
        weights = _imatrix_weights(xs, _cols(qwb, 16), _sigma2(xb, 1), 16)
        scale, the_min, levels = _make_qkx_quants(xs, weights, 3, -0.9, 0.05, 36, False)
        sw = _cols(_sum0(weights), 16)
        d_block, ls = _make_qp_quants(_cols(scale, 16), 15, sw)
        m_block, lm = _make_qp_quants(_cols(the_min, 16), 15, sw)
        ls, lm = ls.T, lm.T
        d, dmin = _fp16(d_block), _fp16(m_block)
    sc = ((ls & 0xFF) | ((lm << 4) & 0xFF)).astype(np.uint8)
    dq = (d.astype(F32)[:, None] * _f(sc & 0xF)).reshape(-1)
    dmq = (dmin.astype(F32)[:, None] * _f(sc >> 4)).reshape(-1)
    levels = _rows_of(_requantize(xs, levels, dq, dmq, 0, 3), n_blocks)
    return np.concatenate([sc, _pack_2bit(levels), _half_bytes(d), _half_bytes(dmin)], axis=1).reshape(x.shape[0], -1)


# --- legacy types weighted by an imatrix (quantize_row_q{4,5}_{0,1}_impl) --------------------------


def _legacy_weights(x: np.ndarray, qw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Blocks of 32 as (32, blocks) and `qw * sqrtf(sigma2 + x*x)`, sigma2 = mean x^2 of the row."""
    n_per_row = x.shape[1]
    xt = np.ascontiguousarray(x.T)
    sigma2 = _sum0(xt * xt) / F32(n_per_row)
    xs = _cols(x, 32)
    qws = _cols(np.broadcast_to(qw, x.shape), 32)
    return xs, qws * np.sqrt(np.repeat(sigma2, n_per_row // 32) + xs * xs)


def _nibbles(levels: np.ndarray) -> np.ndarray:
    """(32, blocks) levels -> (blocks, 16): byte j holds level j (low) and j+16 (high nibble)."""
    q = levels.T.astype(np.uint8)
    return (q[:, :16] & 0xF) | ((q[:, 16:] & 0xF) << 4)


def _fifth_bits(levels: np.ndarray) -> np.ndarray:
    """(32, blocks) 5-bit levels -> (blocks, 4): bit j of the little-endian uint32 is level j's bit 4."""
    bits = ((levels.T >> 4) & 1).astype(np.uint32) << np.arange(32, dtype=np.uint32)
    return np.bitwise_or.reduce(bits, axis=1).astype("<u4").view(np.uint8).reshape(-1, 4)


def _legacy_symmetric(x: np.ndarray, qw: np.ndarray, nmax: int) -> np.ndarray:
    xs, weights = _legacy_weights(x, qw)
    d, levels = _make_qx_quants(xs, nmax, weights)
    parts = [_half_bytes(_fp16(d))]
    if nmax == 16:
        parts.append(_fifth_bits(levels))
    parts.append(_nibbles(levels))
    return np.concatenate(parts, axis=1).reshape(x.shape[0], -1)


def _legacy_affine(x: np.ndarray, qw: np.ndarray, nmax: int) -> np.ndarray:
    xs, weights = _legacy_weights(x, qw)
    d, the_min, levels = _make_qkx_quants(xs, weights, nmax, -0.9, 0.05, 36, False)
    parts = [_half_bytes(_fp16(d)), _half_bytes(_fp16(-the_min))]
    if nmax == 31:
        parts.append(_fifth_bits(levels))
    parts.append(_nibbles(levels))
    return np.concatenate(parts, axis=1).reshape(x.shape[0], -1)


def _legacy_affine_ref(x: np.ndarray, nmax: int) -> np.ndarray:
    """`quantize_row_q{4,5}_1_ref`. gguf-py's version takes numpy's min, which may give -0.0 where
    ggml's first-smallest loop keeps +0.0 (or the reverse): a different fp16 `m` byte."""
    xs = _cols(x, 32)
    lo = np.full(xs.shape[1], np.finfo(F32).max, dtype=F32)
    hi = -lo
    for v in xs:
        lo = np.where(v < lo, v, lo)
        hi = np.where(v > hi, v, hi)
    d = (hi - lo) / F32(nmax)
    inv = np.where(d != 0, F32(1) / d, F32(0))
    levels = np.minimum(nmax, ((xs - lo) * inv + F32(0.5)).astype(np.int32))  # C's (int8_t) cast truncates
    parts = [_half_bytes(_fp16(d)), _half_bytes(_fp16(lo))]
    if nmax == 31:
        parts.append(_fifth_bits(levels))
    parts.append(_nibbles(levels))
    return np.concatenate(parts, axis=1).reshape(x.shape[0], -1)


Quantizer = Callable[[np.ndarray, "np.ndarray | None"], np.ndarray]
_QUANTIZERS: dict[tuple[gguf.GGMLQuantizationType, bool], Quantizer] = {
    **{(t, w): f for t, f in zip(K_TYPES, (_q2_k, _q3_k, _q4_k, _q5_k, _q6_k), strict=True) for w in (False, True)},
    (Q.Q4_0, True): lambda x, qw: _legacy_symmetric(x, qw, 8),
    (Q.Q5_0, True): lambda x, qw: _legacy_symmetric(x, qw, 16),
    (Q.Q4_1, True): lambda x, qw: _legacy_affine(x, qw, 15),
    (Q.Q5_1, True): lambda x, qw: _legacy_affine(x, qw, 31),
    (Q.Q4_1, False): lambda x, _: _legacy_affine_ref(x, 15),
    (Q.Q5_1, False): lambda x, _: _legacy_affine_ref(x, 31),
}
