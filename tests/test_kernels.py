"""The compiled decode operations (model/kernels) against torch's, and the fallback when they cannot run.

On a Linux x86-64 machine with AVX2 and a C compiler (CI's, this one) the kernels must load: a
broken build that silently fell back to torch would otherwise pass every parity test unnoticed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import torch
from helpers import random_model, tiny_config

from mythos_convert.model import kernels
from mythos_convert.model.decode import TorchOps

ELIGIBLE = (
    sys.platform == "linux"
    and os.uname().machine == "x86_64"
    and {"avx2", "fma"} <= kernels._cpu_flags()
    and shutil.which("cc") is not None
    and os.environ.get(kernels.DISABLE_ENV, "1") != "0"
)
needs_kernels = pytest.mark.skipif(not ELIGIBLE, reason="needs Linux x86-64 with AVX2/FMA and a C compiler")

# float32: same products, different summation order. bfloat16: both round every result to bf16, so a
# sum that lands near a rounding boundary may round the other way: one bf16 ulp (2^-8 relative).
TOLERANCE = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.bfloat16: dict(rtol=2**-7, atol=2**-7)}
DTYPES = [torch.float32, torch.bfloat16]


@pytest.fixture(scope="module")
def lib():
    status = kernels.status()
    if ELIGIBLE:
        assert status.library is not None, status.reason
    return status.library


def _rand(*shape, dtype, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


def _ops(lib, dtype):
    if lib is None:
        pytest.skip("compiled kernels unavailable here")
    return kernels.CompiledOps(lib, dtype), TorchOps(dtype)


def _close(got, want, dtype):
    torch.testing.assert_close(got.float(), want.float(), **TOLERANCE[dtype])


@needs_kernels
def test_kernels_load_here_and_say_where_from(lib):
    assert lib is not None
    assert kernels.status().reason.endswith(".so")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("n", "k"), [(1, 1), (5, 48), (37, 75), (64, 256), (130, 1000)])  # tails of every loop
def test_matvec_and_residual(lib, dtype, n, k):
    compiled, reference = _ops(lib, dtype)
    w, x, add = _rand(n, k, dtype=dtype), _rand(k, dtype=dtype, seed=1), _rand(n, dtype=dtype, seed=2)
    _close(compiled.matvec(w, x), reference.matvec(w, x), dtype)
    _close(compiled.matvec(w, x, add), reference.matvec(w, x, add), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows", [(96,), (48, 16, 16), (40, 40)])  # the head; q|k|v (GQA); w1|w3
def test_norm_matvec_of_stacked_matrices(lib, dtype, rows):
    """Up to three matrices read in place give the product of their fused copy."""
    compiled, reference = _ops(lib, dtype)
    ws = tuple(_rand(n, 72, dtype=dtype, seed=10 + i) for i, n in enumerate(rows))
    x = 3 * _rand(72, dtype=dtype, seed=1)
    g = (1 + 0.3 * _rand(72, dtype=torch.float32, seed=2)).to(dtype)
    fused = (torch.cat(ws),)
    _close(compiled.norm_matvec(ws, x, g, 1e-5), reference.norm_matvec(fused, x, g, 1e-5), dtype)
    _close(reference.norm_matvec(ws, x, g, 1e-5), reference.norm_matvec(fused, x, g, 1e-5), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_swiglu_matvec(lib, dtype):
    compiled, reference = _ops(lib, dtype)
    w, gate_up, add = _rand(40, 88, dtype=dtype), 2 * _rand(176, dtype=dtype, seed=1), _rand(40, dtype=dtype, seed=2)
    _close(compiled.swiglu_matvec(w, gate_up, add), reference.swiglu_matvec(w, gate_up, add), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("n_q", "n_kv", "d"), [(4, 2, 16), (6, 6, 10), (8, 1, 64)])
def test_attend_writes_the_cache_and_attends_like_sdpa(lib, dtype, n_q, n_kv, d):
    """RoPE'd keys and raw values land at `pos` in both caches; the output is SDPA's over 0..pos."""
    from mythos_convert.model.layers import rope_tables, signed_sin

    compiled, reference = _ops(lib, dtype)
    max_len, pos = 32, 19
    cos, sin = rope_tables(d, max_len, 10000.0)
    cos, sin = cos.to(dtype)[pos].contiguous(), signed_sin(sin.to(dtype))[pos].contiguous()
    qkv = _rand((n_q + 2 * n_kv) * d, dtype=dtype, seed=3)
    history = _rand(1, n_kv, max_len, d, dtype=dtype, seed=4), _rand(1, n_kv, max_len, d, dtype=dtype, seed=5)
    caches = {}
    for name, ops in (("compiled", compiled), ("torch", reference)):
        k_cache, v_cache = history[0].clone(), history[1].clone()
        out = ops.attend(qkv, cos, sin, k_cache, v_cache, pos, n_q, n_kv, d)
        caches[name] = out, k_cache, v_cache
    for got, want in zip(caches["compiled"], caches["torch"], strict=True):
        _close(got, want, dtype)
    # positions after pos are untouched (the kernel writes one row per kv head, nothing else)
    assert torch.equal(caches["compiled"][1][:, :, pos + 1 :], history[0][:, :, pos + 1 :])


@pytest.mark.parametrize("dtype", DTYPES)
def test_decode_with_kernels_matches_torch_ops_and_the_full_pass(dtype):
    """Whole tokens, odd sizes (head_dim 10, SwiGLU width 86): compiled plan vs torch plan vs no cache."""
    cfg = tiny_config(vocab_size=301, d_model=60, n_heads=6, n_kv_heads=2, d_ff=130)
    model = random_model(cfg, seed=7).to(dtype)
    ids = torch.randint(5, cfg.vocab_size, (1, 30), generator=torch.Generator().manual_seed(1))
    runs = {}
    with torch.inference_mode():
        full = model(ids).float()
        for compiled in (True, False):
            model.setup_cache(1, 40, compiled=compiled)
            used = type(model.decode_plan.ops).__name__
            steps = [model(ids[:, :10])] + [model(ids[:, i : i + 1], start=i) for i in range(10, 30)]
            runs[used] = torch.cat(steps, 1).float()
            model.clear_cache()
    if ELIGIBLE:
        assert set(runs) == {"CompiledOps", "TorchOps"}
    scale = full.abs().max().item()
    for logits in runs.values():
        if dtype is torch.float32:
            torch.testing.assert_close(logits, full, rtol=0, atol=1e-5 * scale)
        else:  # bf16 rounds at every op; the cached path and the full pass differ in summation order
            assert (logits - full).abs().max().item() < 0.03 * scale
            assert (logits.argmax(-1) == full.argmax(-1)).float().mean() >= 0.9


def _status_in_child(env: dict[str, str]) -> str:
    code = "from mythos_convert.model import kernels; s = kernels.status(); print(s.library is None, s.reason)"
    result = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


def test_switched_off_by_the_environment():
    assert _status_in_child({kernels.DISABLE_ENV: "0"}) == f"True {kernels.DISABLE_ENV}=0"


@needs_kernels
def test_a_failing_build_falls_back_to_torch_and_says_why(tmp_path):
    """A compiler that fails (here `false`) leaves torch's operations in place, with the reason."""
    out = _status_in_child({"CC": shutil.which("false"), "XDG_CACHE_HOME": str(tmp_path)})
    assert out.startswith("True kernel build/load failed")
    assert not list(tmp_path.rglob("*.so"))  # nothing half-written left in the cache


@needs_kernels
def test_generation_is_the_same_with_and_without_kernels(tiny_ckpt):
    """The CLI's greedy continuation does not depend on which operations ran (float32)."""
    args = [sys.executable, "-m", "mythos_convert", "generate", str(tiny_ckpt), "The"]
    args += ["--max-new-tokens", "24", "--temperature", "0"]
    outputs = [
        subprocess.run(args, env={**os.environ, kernels.DISABLE_ENV: flag}, capture_output=True, text=True, check=True)
        for flag in ("1", "0")
    ]
    assert outputs[0].stdout == outputs[1].stdout


def _drive(tuner, seconds_for, steps):
    picks = []
    for _ in range(steps):
        threads = tuner.pick()
        picks.append(threads)
        tuner.record(threads, seconds_for(threads))
    return picks


def test_thread_tuner_follows_the_load():
    """Both counts are timed first; the faster runs; the other is re-timed and taken when it wins."""
    from mythos_convert.model.decode import ThreadTuner

    tuner = ThreadTuner(2)
    picks = _drive(tuner, {2: 0.02, 1: 0.03}.__getitem__, 3 + 300)  # quiet: 2 threads are faster
    assert picks[:3] == [2, 2, 1]  # the first step is a warm-up
    assert picks[3:].count(2) > 290 and 1 in picks[3:]  # runs 2, still probes 1 now and then
    picks = _drive(tuner, {2: 0.3, 1: 0.05}.__getitem__, 300)  # busy: a barrier waits on a preempted thread
    assert picks[1] == 1  # switched after the first slow step; 2 threads only in the periodic probes
    assert picks[1:].count(1) == 299 - 300 // ThreadTuner.PROBE_EVERY
    picks = _drive(tuner, {2: 0.02, 1: 0.05}.__getitem__, 300)  # quiet again: the next probe brings 2 back
    assert picks[-100:].count(2) >= 99
    assert _drive(ThreadTuner(1), lambda t: 0.01, 10) == [1] * 10


@needs_kernels
@pytest.mark.parametrize("dtype", DTYPES)
def test_one_call_per_token_is_the_five_operations_bit_for_bit(dtype):
    """`step_*` in C chains the same operations as the Python loop: same logits and cache, every bit."""
    cfg = tiny_config(vocab_size=301, d_model=60, n_heads=6, n_kv_heads=2, d_ff=130)
    model = random_model(cfg, seed=8).to(dtype)
    ids = torch.randint(5, cfg.vocab_size, (12,), generator=torch.Generator().manual_seed(2)).tolist()
    runs = []
    with torch.inference_mode():
        for whole in (True, False):
            model.setup_cache(1, 16)
            plan = model.decode_plan
            assert plan.whole_token is not None
            step = plan.step if whole else plan.step_by_operations
            logits = [step(torch.tensor([[token]]), pos) for pos, token in enumerate(ids)]
            runs.append((torch.cat(logits), plan.layers[-1].k.clone(), plan.layers[-1].v.clone()))
            model.clear_cache()
    for got, want in zip(*runs, strict=True):
        assert torch.equal(got, want)
