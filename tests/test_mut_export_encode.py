"""Encoding tensors into GGUF types (export/gguf_encode.py): casts, quantizers as gguf-py writes them,
one NaN/Inf check per tensor, the worker count, and the rows spread over a pool only when worth it."""

from __future__ import annotations

import concurrent.futures
import os
from types import SimpleNamespace

import gguf
import numpy as np
import pytest

import mythos_convert.export.gguf_encode as gguf_encode
from mythos_convert.errors import MythosError
from mythos_convert.export.gguf_encode import ParallelEncoder, checking_type, encode, quantize_workers
from mythos_convert.quant import kquants

Q = gguf.GGMLQuantizationType


def _rows(n: int, cols: int = 256, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, cols)).astype(np.float32)


def test_float_types_are_casts():
    x = np.random.default_rng(1).standard_normal((3, 8))  # float64 in
    f32 = encode(x, Q.F32)
    assert f32.dtype == np.float32 and f32.flags.c_contiguous and np.array_equal(f32, x.astype(np.float32))
    f16 = encode(x, Q.F16)
    assert f16.dtype == np.float16 and np.array_equal(f16, x.astype(np.float16))


def test_a_quantized_type_is_what_gguf_py_writes_row_by_row():
    x = _rows(4, 64).reshape(2, 2, 64)
    got = encode(x, Q.Q8_0)
    assert got.shape == (2, 2, 68)
    assert np.array_equal(got, gguf.quants.quantize(x, Q.Q8_0))
    assert np.array_equal(encode(x.reshape(4, 64), Q.Q4_0), gguf.quants.quantize(x.reshape(4, 64), Q.Q4_0))


@pytest.mark.parametrize("qtype", [Q.F32, Q.F16, Q.Q8_0])
def test_non_finite_values_are_refused_only_when_checked(qtype):
    x = _rows(2, 64)
    x[1, 3] = np.nan
    with pytest.raises(kquants.NonFiniteError):
        encode(x, qtype, check_finite=True)
    encode(x, qtype)  # unchecked: written as they are


def test_an_f32_check_says_what_it_found():
    with pytest.raises(kquants.NonFiniteError, match=r"^NaN or infinite values$"):
        encode(np.array([[1.0, np.inf]], dtype=np.float32), Q.F32, check_finite=True)


def test_the_first_type_that_is_not_f32_checks_the_tensor():
    assert checking_type([Q.F32, Q.F16, Q.Q8_0]) == Q.F16
    assert checking_type([Q.F32, Q.Q4_K, Q.F16]) == Q.Q4_K
    assert checking_type([Q.F32, Q.F32]) == Q.F32
    assert checking_type([Q.Q6_K]) == Q.Q6_K


@pytest.mark.parametrize(("value", "workers"), [("3", 3), (" 5 ", 5), ("0", 1), ("-2", 1), ("1", 1)])
def test_the_worker_count_from_the_environment(monkeypatch, value, workers):
    monkeypatch.setenv("MYTHOS_QUANT_WORKERS", value)
    assert quantize_workers() == workers


@pytest.mark.parametrize("value", ["", "  "])
def test_the_worker_count_defaults_to_the_usable_cores(monkeypatch, value):
    monkeypatch.setenv("MYTHOS_QUANT_WORKERS", value)
    assert quantize_workers() == len(os.sched_getaffinity(0))
    monkeypatch.delenv("MYTHOS_QUANT_WORKERS")
    assert quantize_workers() == len(os.sched_getaffinity(0))


def test_a_worker_count_that_is_not_a_number_is_refused(monkeypatch):
    monkeypatch.setenv("MYTHOS_QUANT_WORKERS", "two")
    with pytest.raises(MythosError) as caught:
        quantize_workers()
    assert str(caught.value) == "MYTHOS_QUANT_WORKERS must be an integer, got 'two': fix or unset it"
    assert isinstance(caught.value.__cause__, ValueError)


def _each(x, qtypes, imatrix=None):
    return [encode(x, q, imatrix) for q in qtypes]


def _same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(x.dtype == y.dtype and np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_threads_encode_every_type_as_one_pass_would():
    x = _rows(256)  # 65,536 values of one quantized type: just enough for threads
    qtypes = [Q.F32, Q.Q8_0, Q.F16, Q.Q8_0]
    with ParallelEncoder(3) as enc:
        got = enc.encode_all(x, qtypes)
        assert isinstance(enc._pool, concurrent.futures.ThreadPoolExecutor)
        pool = enc._pool
        assert enc.encode_all(x, [Q.Q4_0]) and enc._pool is pool  # started once
    assert _same(got, _each(x, qtypes))
    assert pool._shutdown


def test_an_imatrix_reaches_every_worker():
    x = _rows(256)
    imatrix = np.linspace(0.1, 4.0, 256, dtype=np.float32)
    with ParallelEncoder(2) as enc:
        got = enc.encode_all(x, [Q.Q4_K, Q.Q5_0], imatrix)
    assert _same(got, _each(x, [Q.Q4_K, Q.Q5_0], imatrix))
    assert not np.array_equal(got[0], encode(x, Q.Q4_K))


def test_small_or_flat_work_stays_in_this_thread():
    for workers, x, qtypes in (
        (1, _rows(512), [Q.Q8_0]),  # one worker
        (4, _rows(255), [Q.Q8_0]),  # 65,280 values: below the threads' threshold
        (4, _rows(1, 65536)[0], [Q.Q8_0]),  # one row
        (4, _rows(512), [Q.F32, Q.F16]),  # nothing to quantize
    ):
        with ParallelEncoder(workers) as enc:
            got = enc.encode_all(x, qtypes)
            assert enc._pool is None
        assert _same(got, _each(x, qtypes))
    with ParallelEncoder(4) as enc:
        enc.encode_all(_rows(128), [Q.Q8_0, Q.Q4_0])  # 2 types of 32,768 values: threads
        assert enc._pool is not None


def test_a_tensor_with_nan_is_refused_once_in_either_path():
    for rows in (8, 512):
        x = _rows(rows)
        x[rows - 1, 5] = np.inf
        with ParallelEncoder(2) as enc, pytest.raises(kquants.NonFiniteError):
            enc.encode_all(x, [Q.F32, Q.Q8_0])
        with ParallelEncoder(2) as enc, pytest.raises(kquants.NonFiniteError):
            enc.encode_all(x, [Q.F32, Q.F32])


def test_fewer_rows_than_slices():
    x = _rows(2, 32768)  # 2 rows for 8 slices
    with ParallelEncoder(4) as enc:
        got = enc.encode_all(x, [Q.Q8_0])
        assert enc._pool is not None
    assert _same(got, _each(x, [Q.Q8_0]))


def _without_kernels(monkeypatch) -> list:
    """gguf_encode as it runs where the compiled quantizers did not load: a process pool (a thread
    pool stands in for it here) that returns each slice's bytes."""
    started = []

    def process_pool(workers, method):
        started.append((workers, method))
        return concurrent.futures.ThreadPoolExecutor(workers)

    status = SimpleNamespace(quantize=None)
    proxy = SimpleNamespace(
        quantize=kquants.quantize,
        to_f16=kquants.to_f16,
        all_finite=kquants.all_finite,
        NonFiniteError=kquants.NonFiniteError,
        kernel_status=lambda: status,
    )
    monkeypatch.setattr(gguf_encode, "kquants", proxy)
    monkeypatch.setattr(gguf_encode, "process_pool", process_pool)
    return started


def test_without_kernels_processes_encode_when_the_work_is_large(monkeypatch):
    started = _without_kernels(monkeypatch)
    x = _rows(2048)  # 524,288 values of two types: 2^20, enough for processes
    with ParallelEncoder(3) as enc:
        got = enc.encode_all(x, [Q.Q8_0, Q.F16, Q.Q4_0])
    assert started == [(3, "spawn")]
    assert _same(got, _each(x, [Q.Q8_0, Q.F16, Q.Q4_0]))
    with ParallelEncoder(3) as enc:
        enc.encode_all(_rows(2047), [Q.Q8_0, Q.Q4_0])  # just below
        assert enc._pool is None
    assert started == [(3, "spawn")]
    x3 = _rows(2048).reshape(2, 1024, 256)
    with ParallelEncoder(2) as enc:
        got = enc.encode_all(x3, [Q.Q8_0, Q.Q8_0])
    assert got[0].shape == (2, 1024, 272) and _same(got, _each(x3, [Q.Q8_0, Q.Q8_0]))


def test_two_workers_are_enough_for_a_pool_and_one_is_not():
    with ParallelEncoder(2) as enc:
        enc.encode_all(_rows(256), [Q.Q8_0])
        assert enc._pool is not None
    with ParallelEncoder(1) as enc:
        enc.encode_all(_rows(256), [Q.Q8_0])
        assert enc._pool is None


def test_an_imatrix_reaches_the_encoder_in_this_thread_too():
    x = _rows(8)
    imatrix = np.linspace(0.1, 4.0, 256, dtype=np.float32)
    with ParallelEncoder(1) as enc:
        got = enc.encode_all(x, [Q.Q4_K], imatrix)
    assert np.array_equal(got[0], encode(x, Q.Q4_K, imatrix)) and not np.array_equal(got[0], encode(x, Q.Q4_K))


def test_a_tensor_of_three_dimensions_is_quantized_by_its_last():
    x = _rows(256).reshape(2, 128, 256)
    imatrix = np.linspace(0.1, 4.0, 256, dtype=np.float32)
    with ParallelEncoder(2) as enc:
        got = enc.encode_all(x, [Q.Q4_K], imatrix)
        assert enc._pool is not None
    assert got[0].shape == (2, 128, 144) and np.array_equal(got[0], encode(x, Q.Q4_K, imatrix))


def test_the_one_check_falls_to_the_first_type_that_is_not_f32_in_either_path():
    for rows in (8, 512):
        for qtypes in ([Q.Q8_0], [Q.F16, Q.Q8_0], [Q.F32, Q.F16, Q.Q8_0]):
            x = _rows(rows)
            x[0, 0] = np.nan
            with ParallelEncoder(2) as enc, pytest.raises(kquants.NonFiniteError):
                enc.encode_all(x, qtypes)


def test_the_thread_pool_has_the_workers_asked_for_and_named_threads():
    with ParallelEncoder(3) as enc:
        enc.encode_all(_rows(256), [Q.Q8_0])
        assert enc._pool._max_workers == 3 and enc._pool._thread_name_prefix == "quantize"


def test_the_pool_is_abandoned_only_after_an_error(monkeypatch):
    closed = []
    monkeypatch.setattr(gguf_encode, "close_pool", lambda pool, abandon: closed.append(abandon) or pool.shutdown())
    with ParallelEncoder(2) as enc:
        enc.encode_all(_rows(256), [Q.Q8_0])
    with pytest.raises(KeyError), ParallelEncoder(2) as enc:
        enc.encode_all(_rows(256), [Q.Q8_0])
        raise KeyError("stop")
    with ParallelEncoder(2):
        pass  # no pool started: nothing to close
    assert closed == [False, True]


def test_without_sched_getaffinity_the_cpu_count(monkeypatch):
    monkeypatch.delenv("MYTHOS_QUANT_WORKERS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert quantize_workers() == len(os.sched_getaffinity(0)) != 64  # the cores this process may use
    monkeypatch.delattr(os, "sched_getaffinity")
    assert quantize_workers() == 64
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert quantize_workers() == 1
