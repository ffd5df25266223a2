"""`kquants` against llama.cpp's own quantizer: the same bytes, block for block.

Two references, both llama.cpp's compiled code from llama-cpp-python: `llama_model_quantize` on an
F32 GGUF (the path users take: file in, file out, imatrix entries looked up by tensor name), and
`ggml_quantize_chunk` from libggml-base, the function that path calls per chunk of rows, on many
small random matrices of awkward data (ties, constants, zeros, tiny and huge values, outliers).
A mismatch reports how many blocks differ and the largest dequantised difference.

Both of kquants' paths are held to this: the compiled quantizers (kquants.c, built on first use)
and the numpy ones they fall back to; on Linux x86-64 with a C compiler the compiled ones must load.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
from ggml_reference import FILE_TYPES, llama_quantize
from ggml_reference import ggml_quantize_chunk as ggml_binding

from mythos_convert.quant import kquants

Q = gguf.GGMLQuantizationType
pytestmark = pytest.mark.llama_cpp
llama_cpp = pytest.importorskip("llama_cpp")

N_EMBD, N_FF, N_VOCAB = 256, 512, 96  # rows of 256 everywhere but ffn_down (512)

COMPILER_HERE = (
    sys.platform == "linux" and shutil.which("cc") is not None and os.environ.get("MYTHOS_KERNELS", "1") != "0"
)


@pytest.fixture(params=[True, False], ids=["compiled", "numpy"])
def compiled(request) -> bool:
    """Each test below runs on both paths; the compiled one must have loaded where a compiler is."""
    if request.param:
        status = kquants.kernel_status()
        if COMPILER_HERE:
            assert status.quantize is not None, status.reason
        elif status.quantize is None:
            pytest.skip(f"compiled quantizers unavailable: {status.reason}")
    return request.param


def _matrices(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One llama block's matrices (numpy shape (ne1, ne0)), some with the data quantizers trip on."""

    def normal(rows: int, cols: int, scale: float = 0.02) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) * scale).astype(np.float32)

    q = normal(N_EMBD, N_EMBD)
    k = normal(N_EMBD, N_EMBD)
    k[rng.random(k.shape) < 0.002] = 0.8  # outliers
    v = normal(N_EMBD, N_EMBD)
    v[::5, :256] = 0.0  # whole super-blocks of zeros
    v[1::5, 16:48] = 0.0  # zero sub-blocks inside a block
    v[2::5] *= np.float32(1e-9)  # tiny values, near the quantizers' epsilon
    v[3::5] = np.abs(v[3::5])  # one-signed rows: the min is 0
    o = np.round(normal(N_EMBD, N_EMBD, 3.0)).astype(np.float32) / 8  # few distinct values: exact ties
    down = normal(N_EMBD, N_FF)
    down[:, 7] *= 60  # an outlier column, as in real ffn_down
    return {
        "token_embd.weight": normal(N_VOCAB, N_EMBD, 1.0),
        "blk.0.attn_q.weight": q,
        "blk.0.attn_k.weight": k,
        "blk.0.attn_v.weight": v,
        "blk.0.attn_output.weight": o,
        "blk.0.ffn_gate.weight": normal(N_FF, N_EMBD),
        "blk.0.ffn_up.weight": normal(N_FF, N_EMBD, 0.5),
        "blk.0.ffn_down.weight": down,
    }


def _write_f32_gguf(path: Path, matrices: dict[str, np.ndarray]) -> None:
    """The minimal llama file llama.cpp's quantizer loads: hparams and tensors, no vocabulary."""
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(64)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(1)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(2)
    w.add_head_count_kv(2)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(N_VOCAB)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    norm = np.ones(N_EMBD, dtype=np.float32)
    for name, array in matrices.items():
        w.add_tensor(name, array)
        if name.endswith("attn_output.weight"):
            w.add_tensor("blk.0.attn_norm.weight", norm)
            w.add_tensor("blk.0.ffn_norm.weight", norm)
    w.add_tensor("output_norm.weight", norm)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _imatrix(rng: np.random.Generator, matrices: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Mean squared activations per input column: positive, heavy-tailed, a few exactly zero."""
    out = {}
    for name, array in matrices.items():
        values = (rng.exponential(size=array.shape[1]) ** 2).astype(np.float32)
        values[rng.random(values.size) < 0.02] = 0.0
        out[name] = values
    return out


def _mismatch(ours: np.ndarray, theirs: np.ndarray, qtype: gguf.GGMLQuantizationType) -> str:
    """'' when equal, else how many blocks differ and by how much once dequantised."""
    type_size = gguf.GGML_QUANT_SIZES[qtype][1]
    a, b = ours.reshape(-1, type_size), theirs.reshape(-1, type_size)
    bad = (a != b).any(axis=1)
    if not bad.any():
        return ""
    diff = np.abs(gguf.quants.dequantize(a[bad], qtype) - gguf.quants.dequantize(b[bad], qtype))
    return f"{bad.sum()}/{bad.size} blocks differ, max dequantised |diff| {np.nanmax(diff):.3g}"


@pytest.fixture(scope="module")
def f32_file(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray], dict[str, np.ndarray]]:
    rng = np.random.default_rng(13)
    matrices = _matrices(rng)
    path = tmp_path_factory.mktemp("kquants") / "f32.gguf"
    _write_f32_gguf(path, matrices)
    return path, matrices, _imatrix(rng, matrices)


@pytest.mark.parametrize("with_imatrix", [False, True], ids=["plain", "imatrix"])
@pytest.mark.parametrize("qtype", list(FILE_TYPES), ids=lambda t: t.name)
def test_llama_model_quantize_writes_our_bytes(f32_file, tmp_path, qtype, with_imatrix, compiled):
    src, matrices, imatrix = f32_file
    dst = tmp_path / f"{qtype.name}.gguf"
    llama_quantize(src, dst, getattr(llama_cpp, FILE_TYPES[qtype]), imatrix if with_imatrix else None, pure=True)
    tensors = {t.name: t for t in gguf.GGUFReader(dst).tensors}
    problems = []
    for name, array in matrices.items():
        tensor = tensors[name]
        assert tensor.tensor_type == qtype, f"{name}: llama.cpp wrote {tensor.tensor_type.name}"
        ours = kquants.quantize(array, qtype, imatrix[name] if with_imatrix else None, compiled=compiled)
        theirs = np.asarray(tensor.data).reshape(ours.shape)
        if message := _mismatch(ours, theirs, qtype):
            problems.append(f"{name}: {message}")
    assert not problems, f"{qtype.name} {'with' if with_imatrix else 'without'} imatrix: " + "; ".join(problems)
    if with_imatrix and qtype != Q.Q8_0:  # the entries reached llama.cpp: its bytes are not the plain ones
        plain = kquants.quantize(matrices["blk.0.attn_q.weight"], qtype, compiled=compiled)
        assert not np.array_equal(np.asarray(tensors["blk.0.attn_q.weight"].data).reshape(plain.shape), plain)


# --- ggml_quantize_chunk on awkward data --------------------------------------------------------


@pytest.fixture(scope="module")
def ggml_quantize_chunk():
    return ggml_binding()


def _awkward_rows(rng: np.random.Generator, n_rows: int, n_per_row: int) -> np.ndarray:
    """Rows built from 16-value pieces of thirteen kinds of data that take the quantizers' odd branches."""
    n = 16

    def piece(kind: int) -> np.ndarray:
        if kind == 0:
            return rng.standard_normal(n)
        if kind == 1:
            return np.round(rng.standard_normal(n) * 4)  # integers: exact ties in rounding and search
        if kind == 2:
            return np.full(n, rng.standard_normal())  # constant: max == min
        if kind == 3:
            return np.zeros(n)
        if kind == 4:
            return rng.standard_normal(n) * 1e-30  # below GROUP_MAX_EPS
        if kind == 5:
            return rng.standard_normal(n) * 1e-8
        if kind == 6:
            v = rng.standard_normal(n) * 0.01
            v[rng.integers(n)] = 50.0
            return v
        if kind == 7:
            return np.abs(rng.standard_normal(n))
        if kind == 8:
            return -np.abs(rng.standard_normal(n))
        if kind == 9:
            return rng.standard_normal(n) * 1e4
        if kind == 10:
            return rng.standard_normal(n) * (rng.random(n) < 0.3)
        if kind == 11:
            return rng.choice([-1.0, 0.0, 1.0, 0.5], n)
        return rng.standard_t(2, n)

    pieces = [piece(int(k)) for k in rng.integers(13, size=n_rows * n_per_row // n)]
    return np.concatenate(pieces).reshape(n_rows, n_per_row).astype(np.float32)


@pytest.mark.parametrize("qtype", list(FILE_TYPES), ids=lambda t: t.name)
def test_ggml_quantize_chunk_gives_our_bytes_on_awkward_data(ggml_quantize_chunk, qtype, compiled):
    rng = np.random.default_rng(int(qtype))
    problems = []
    for trial in range(6):
        n_rows, n_per_row = int(rng.integers(1, 24)), 256 * int(rng.integers(1, 4))
        rows = _awkward_rows(rng, n_rows, n_per_row)
        kinds = [rng.exponential(size=n_per_row) ** 2, rng.random(n_per_row) * (rng.random(n_per_row) < 0.5)]
        qw = kinds[trial % 2].astype(np.float32)
        for weights in (None, qw):
            ours = kquants.quantize(rows, qtype, weights, compiled=compiled)
            if message := _mismatch(ours, ggml_quantize_chunk(rows, qtype, weights), qtype):
                problems.append(f"trial {trial} {'imatrix' if weights is not None else 'plain'}: {message}")
    assert not problems, f"{qtype.name}: " + "; ".join(problems)


# --- the module's own promises ------------------------------------------------------------------


def test_sequential_sum_matches_a_c_loop_even_for_one_block():
    rng = np.random.default_rng(0)
    for lanes in (1, 2, 5):
        a = (rng.standard_normal((32, lanes)) * rng.exponential(size=(32, lanes))).astype(np.float32)
        acc = np.zeros(lanes, dtype=np.float32)
        for row in a:
            acc = acc + row
        assert np.array_equal(kquants._sum0(a), acc)


def test_nearest_int_rounds_half_to_even_like_ggml():
    v = np.array([0.5, 1.5, 2.5, -0.5, -1.5, 3.49999, -7.5, 4194303.0], dtype=np.float32)
    assert kquants._nearest_int(v).tolist() == [0, 2, 2, 0, -2, 3, -8, 4194303]


def test_types_gguf_py_quantizes_agree_with_it(compiled):
    """The numpy path hands these to gguf-py; the compiled one must give gguf-py's bytes too."""
    rows = np.random.default_rng(1).standard_normal((3, 64)).astype(np.float32)
    for qtype in (Q.Q4_0, Q.Q5_0, Q.Q8_0):
        assert np.array_equal(kquants.quantize(rows, qtype, compiled=compiled), gguf.quants.quantize(rows, qtype))
    # Q8_0 has no imatrix variant in llama.cpp: the weights are ignored
    weighted = kquants.quantize(rows, Q.Q8_0, np.ones(64), compiled=compiled)
    assert np.array_equal(weighted, gguf.quants.quantize(rows, Q.Q8_0))


@pytest.mark.parametrize("qtype", list(FILE_TYPES), ids=lambda t: t.name)
def test_compiled_and_numpy_paths_give_the_same_bytes(qtype):
    """The two paths against each other directly, on rows of every width the writer meets."""
    status = kquants.kernel_status()
    if status.quantize is None:
        assert not COMPILER_HERE, status.reason
        pytest.skip(f"compiled quantizers unavailable: {status.reason}")
    rng = np.random.default_rng(100 + int(qtype))
    widths = [(1, 256), (7, 768), (3, 2048), (2, 2816)]
    if qtype not in kquants.K_TYPES:  # blocks of 32: rows of 3, 13 and 17 blocks leave some to the scalar code
        widths += [(5, 96), (4, 416), (3, 544)]
    for n_rows, n_per_row in widths:
        rows = _awkward_rows(rng, n_rows, n_per_row)
        qw = (rng.exponential(size=n_per_row) ** 2).astype(np.float32)
        for weights in (None, qw):
            a = kquants.quantize(rows, qtype, weights, compiled=True)
            b = kquants.quantize(rows, qtype, weights, compiled=False)
            assert a.shape == b.shape and a.dtype == np.uint8
            assert not _mismatch(a, b, qtype), (qtype.name, n_per_row, weights is not None, _mismatch(a, b, qtype))


@pytest.mark.skipif(not COMPILER_HERE or os.uname().machine != "x86_64", reason="needs Linux x86-64 and a compiler")
def test_the_baseline_build_of_the_lane_code_gives_the_avx2_builds_bytes(tmp_path, monkeypatch):
    """The library carries an AVX2 clone of the lane code and a baseline one, picked by the CPU: an
    AVX2 machine never runs the baseline, so build it alone (MQ_NO_CLONES) and compare."""
    from mythos_convert.support import cbuild

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    lib, where = cbuild.load(kquants.KERNEL_SOURCE, [*kquants.KERNEL_FLAGS, "-DMQ_NO_CLONES"])
    assert lib is not None, where
    baseline = lib.mq_quantize
    baseline.restype, baseline.argtypes = (
        kquants.kernel_status().quantize.restype,
        kquants.kernel_status().quantize.argtypes,
    )
    assert kquants._self_test(baseline) is None
    rng = np.random.default_rng(5)
    rows = _awkward_rows(rng, 9, 768)
    qw = (rng.exponential(size=768) ** 2).astype(np.float32)
    for qtype in kquants.K_TYPES:
        for weights in (None, qw):
            a = kquants._quantize_compiled(baseline, rows, qtype, weights)
            assert np.array_equal(a, kquants.quantize(rows, qtype, weights)), (qtype.name, weights is not None)


def test_float16_cast_rounds_like_numpy(compiled):
    """The GGUF writer's F16 cast (compiled: F16C or ggml's bit arithmetic) is numpy's IEEE rounding."""
    cases = {
        65504.0: 0x7BFF,
        65519.99: 0x7BFF,
        65520.0: 0x7C00,
        2**-24: 0x0001,
        2**-25: 0x0000,
        3 * 2**-26: 0x0001,
        1 + 2**-11: 0x3C00,
        1 + 3 * 2**-11: 0x3C02,
        -0.0: 0x8000,
        -2.5: 0xC100,
    }
    x = np.array(list(cases), dtype=np.float32)
    assert kquants.to_f16(x, compiled=compiled).view(np.uint16).tolist() == list(cases.values())
    rng = np.random.default_rng(3)
    many = np.concatenate([rng.standard_normal(10_000) * 10.0**e for e in range(-9, 5)]).astype(np.float32)
    many = many.reshape(14, -1)  # 2-D, as the writer casts whole matrices
    with np.errstate(over="ignore"):
        want = many.astype(np.float16)
    got = kquants.to_f16(many, compiled=compiled)
    assert got.shape == many.shape and np.array_equal(got.view(np.uint16), want.view(np.uint16))
    if compiled:  # the portable arithmetic too (F16C machines never run it otherwise)
        portable = np.empty_like(want)
        kquants.kernel_status().to_f16(many.ctypes.data, portable.ctypes.data, many.size, 1)
        assert np.array_equal(portable.view(np.uint16), want.view(np.uint16))


def _kernel_status_in_child(env: dict[str, str]) -> str:
    code = (
        "import numpy as np, gguf; from mythos_convert.quant import kquants; s = kquants.kernel_status(); "
        "x = np.linspace(-1, 1, 512, dtype=np.float32).reshape(2, 256); "
        "print(s.quantize is None, kquants.quantize(x, gguf.GGMLQuantizationType.Q4_K).tobytes().hex()[:16], s.reason)"
    )
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_switched_off_by_the_environment_numpy_quantizes():
    off = _kernel_status_in_child({"MYTHOS_KERNELS": "0"})
    assert off.startswith("True ") and off.endswith(" MYTHOS_KERNELS=0")


@pytest.mark.skipif(not COMPILER_HERE, reason="needs Linux with a C compiler")
def test_a_failing_build_falls_back_to_numpy_with_the_same_bytes(tmp_path):
    """A compiler that fails (here `false`): numpy quantizes, the reason is given, no .so is left."""
    failed = _kernel_status_in_child({"CC": shutil.which("false"), "XDG_CACHE_HOME": str(tmp_path)})
    assert failed.startswith("True ") and "kernel build/load failed" in failed
    assert not list(tmp_path.rglob("*.so"))
    built = _kernel_status_in_child({"XDG_CACHE_HOME": str(tmp_path / "fresh")})
    assert built.startswith("False ") and built.endswith(".so")
    assert failed.split()[1] == built.split()[1]  # the same Q4_K bytes either way
    assert list((tmp_path / "fresh").rglob("kquants-*.so"))


@pytest.mark.parametrize(
    ("n_per_row", "imatrix", "message"),
    [
        (128, None, "multiple of 256"),
        (256, np.ones(128), "imatrix has 128 values"),
        (256, np.full(256, np.nan), "non-finite"),
    ],
)
def test_bad_input_is_refused_with_the_reason(n_per_row, imatrix, message, compiled):
    with pytest.raises(ValueError, match=message):
        kquants.quantize(np.ones((2, n_per_row), dtype=np.float32), Q.Q4_K, imatrix, compiled=compiled)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_all_finite_finds_one_bad_value_anywhere(bad):
    x = np.full((3, 1000), 3.4e38, dtype=np.float32)
    assert kquants.all_finite(x)
    for where in (0, 1234, 2999):
        y = x.copy()
        y.flat[where] = bad
        assert not kquants.all_finite(y)


def test_bfloat16_rounds_like_gguf_py(compiled):
    """BF16 (compiled: ggml's fp32_to_bf16) is gguf-py's rounding: nearest, ties to even."""
    cases = {1.00390625: 0x3F80, 1.01171875: 0x3F82, -0.0: 0x8000, 3.0: 0x4040, -1.5: 0xBFC0}
    x = np.array([list(cases)], dtype=np.float32)
    assert kquants.quantize(x, Q.BF16, compiled=compiled).view(np.uint16).ravel().tolist() == list(cases.values())
    rows = (np.random.default_rng(4).standard_normal((9, 768)) * 1e3).astype(np.float32)
    rows[0, :3] = [np.finfo(np.float32).max, 1e-40, -1e-45]
    assert np.array_equal(kquants.quantize(rows, Q.BF16, compiled=compiled), gguf.quants.quantize(rows, Q.BF16))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("qtype", [Q.Q8_0, Q.Q4_K, Q.Q6_K, Q.Q4_0, Q.BF16, Q.F16], ids=lambda t: t.name)
def test_check_finite_refuses_one_bad_value_and_changes_no_byte(qtype, bad, compiled):
    """`check_finite`: the compiled check folded into the quantizer or cast (slices of rows checked
    as they are encoded) and numpy's separate pass both refuse a NaN or infinity anywhere, in the
    first slice of rows or a later one; finite rows give the unchecked bytes."""
    rows = (np.random.default_rng(6).standard_normal((48, 768)) * 0.02).astype(np.float32)

    def encode(x: np.ndarray, check: bool) -> np.ndarray:
        if qtype == Q.F16:
            return kquants.to_f16(x, compiled=compiled, check_finite=check)
        return kquants.quantize(x, qtype, compiled=compiled, check_finite=check)

    assert np.array_equal(encode(rows, True).view(np.uint8), encode(rows, False).view(np.uint8))
    for where in ((0, 0), (21, 500), (47, 767)):
        poisoned = rows.copy()
        poisoned[where] = bad
        with pytest.raises(kquants.NonFiniteError, match="NaN or infinite values"):
            encode(poisoned, True)


@pytest.mark.skipif(not COMPILER_HERE, reason="needs Linux with a C compiler")
def test_compiled_q8_0_gives_ggml_bytes_on_blocks_holding_nan_or_inf():
    """The lane code's amax is order-free only for finite blocks; a block with NaN/Inf takes ggml's
    scalar loop, so even unchecked the bytes stay llama.cpp's."""
    rows = (np.random.default_rng(8).standard_normal((4, 256)) * 0.02).astype(np.float32)
    rows[0, 5], rows[1, 40], rows[2, 3], rows[2, 100], rows[3, 255] = np.nan, np.inf, -np.inf, np.nan, np.nan
    fn = kquants.kernel_status().quantize
    fast = kquants._quantize_compiled(fn, rows, Q.Q8_0, None)
    assert np.array_equal(fast, kquants._quantize_compiled(fn, rows, Q.Q8_0, None, reference=True))


@pytest.mark.skipif(not COMPILER_HERE, reason="needs Linux with a C compiler")
def test_the_self_test_runs_once_per_library_and_again_when_its_key_changes(tmp_path, monkeypatch):
    """A passing self-test is recorded beside the library under a key of what decides it; a process
    with that record skips it, one without (or with another key) runs it and can still fail."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    kquants.kernel_status.cache_clear()
    try:
        status = kquants.kernel_status()
        assert status.quantize is not None, status.reason
        records = list(tmp_path.rglob("kquants-*.so.selftest-*"))
        assert len(records) == 1
        monkeypatch.setattr(kquants, "_self_test", lambda fn: "the self-test was run")
        kquants.kernel_status.cache_clear()
        assert kquants.kernel_status().quantize is not None  # recorded: not run
        records[0].unlink()
        kquants.kernel_status.cache_clear()
        assert kquants.kernel_status().reason == "the self-test was run"
        assert not list(tmp_path.rglob("kquants-*.so.selftest-*"))  # a failure is not recorded
    finally:
        kquants.kernel_status.cache_clear()
    library = tmp_path / "lib.so"
    library.write_bytes(b"one build")
    first = kquants._self_test_key(library)
    library.write_bytes(b"another build")
    assert kquants._self_test_key(library) != first
