"""The decode step's operations compiled for AVX2, with torch's as the fallback.

Decoding reads every weight once per token, and on CPU torch's matrix-vector kernels reach about
half the read bandwidth (float32 through MKL's sgemv on row-major weights, bfloat16 on AVX2 with
no fast kernel at all), while ~600 tiny operator calls per token add a fifth on top: together
most of what separated this engine from llama.cpp. `decode_ops.c` (~300 lines) streams the weights
and fuses the small work into the products. It is compiled on first use with the system C
compiler (about a second) into the user cache and loaded with ctypes (`mythos_convert.support.cbuild`),
so installing the package needs no compiler and no build step. Where it cannot be used (not Linux x86-64 with AVX2+FMA, no
compiler, `MYTHOS_KERNELS=0`, the build or its self-test fails) the decode plan runs its torch
operations instead; `describe()` says which and why (`mythos-convert generate` prints it).
"""

from __future__ import annotations

import ctypes
import functools
import platform
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from mythos_convert.support import cbuild

SOURCE = Path(__file__).with_name("decode_ops.c")
ABI = 4
FLAGS = ["-O3", "-mavx2", "-mfma", "-fopenmp", "-shared", "-fPIC"]
DISABLE_ENV = cbuild.DISABLE_ENV  # "0" turns the compiled kernels off
MAX_HEAD_DIM = 1024  # the attention kernel's per-head accumulator
SUFFIX = {torch.float32: "f32", torch.bfloat16: "bf16"}


@dataclass(frozen=True)
class KernelStatus:
    library: ctypes.CDLL | None
    reason: str  # the library's path, or why torch's operations run instead


cache_dir = cbuild.cache_dir
_cpu_flags = cbuild.cpu_flags


def _bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    ptr, long, cint, cfloat = ctypes.c_void_p, ctypes.c_long, ctypes.c_int, ctypes.c_float
    signatures = {
        "mv": [ptr, ptr, ptr, ptr, long, long, cint],
        "norm_mv": [ptr, long, ptr, long, ptr, long, ptr, ptr, cfloat, ptr, long, cint],
        "swiglu_mv": [ptr, ptr, ptr, ptr, long, long, cint],
        "attend": [ptr, ptr, ptr, ptr, ptr, ptr, long, long, long, long, long, cint],
        "step": [ptr, long, ptr, ptr, ptr, long, ptr, ptr, long, long, long, long, long, long, long, cfloat, ptr, cint],
    }
    for name, argtypes in signatures.items():
        for suffix in SUFFIX.values():
            fn = getattr(lib, f"{name}_{suffix}")
            fn.argtypes, fn.restype = argtypes, None
    lib.mythos_abi.restype = ctypes.c_int
    return lib


def _self_test(lib: ctypes.CDLL) -> str | None:
    """Products with tails in both loops against torch, both dtypes; None when all agree."""
    gen = torch.Generator().manual_seed(0)
    for n, k in ((37, 75), (64, 256)):
        w, x, add = torch.randn(n, k, generator=gen), torch.randn(k, generator=gen), torch.randn(n, generator=gen)
        if not torch.allclose(CompiledOps(lib, torch.float32).matvec(w, x, add), torch.addmv(add, w, x), atol=1e-4):
            return f"the float32 self-test failed at {n}x{k}"
        wb, xb, addb = w.bfloat16(), x.bfloat16(), add.bfloat16()
        want = addb + torch.mv(wb.float(), xb.float()).bfloat16()
        if (CompiledOps(lib, torch.bfloat16).matvec(wb, xb, addb).float() - want.float()).abs().max() > 0.07:
            return f"the bfloat16 self-test failed at {n}x{k}"
    return None


@functools.cache
def status() -> KernelStatus:
    """Load (building once if needed) the compiled operations, or say why torch's are used."""
    if cbuild.disabled():
        return KernelStatus(None, f"{DISABLE_ENV}=0")
    if platform.machine().lower() not in ("x86_64", "amd64") or sys.platform != "linux":
        return KernelStatus(None, f"no AVX2 kernels for {sys.platform}/{platform.machine()}")
    if not {"avx2", "fma"} <= _cpu_flags():
        return KernelStatus(None, "the CPU lacks AVX2/FMA")
    library, where = cbuild.load(SOURCE, FLAGS)
    if library is None:
        return KernelStatus(None, where)
    try:
        lib = _bind(library)
    except AttributeError as exc:
        return KernelStatus(None, f"kernel build/load failed: {exc}"[:300])
    if lib.mythos_abi() != ABI:
        return KernelStatus(None, f"{where} implements another ABI")
    failure = _self_test(lib)
    return KernelStatus(None, failure) if failure else KernelStatus(lib, where)


def compiled_ops(dtype: torch.dtype, head_dim: int) -> CompiledOps | None:
    """The compiled operations for CPU tensors of `dtype`, or None where torch's must run."""
    lib = status().library
    if lib is None or dtype not in SUFFIX or head_dim > MAX_HEAD_DIM or head_dim % 2:
        return None
    return CompiledOps(lib, dtype)


def describe(dtype: torch.dtype) -> str:
    """Which operations decode one token in `dtype` on CPU, in words: for logs and benchmark tables."""
    lib = status().library
    if lib is None:
        return f"torch operations ({status().reason})"
    return "AVX2 kernels" if dtype in SUFFIX else f"torch operations (no kernels for {dtype})"


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


class CompiledOps:
    """The decode plan's operations (same signatures as decode.TorchOps) on contiguous CPU tensors.

    Every argument must be contiguous and of the one dtype; the plan guarantees it, and the
    pointers are read while the tensors are alive (the caller holds them).
    """

    def __init__(self, lib: ctypes.CDLL, dtype: torch.dtype):
        self.dtype = dtype
        self.threads = torch.get_num_threads()  # the decode plan tunes it: see decode.ThreadTuner
        suffix = SUFFIX[dtype]
        self._mv = getattr(lib, f"mv_{suffix}")
        self._norm_mv = getattr(lib, f"norm_mv_{suffix}")
        self._swiglu_mv = getattr(lib, f"swiglu_mv_{suffix}")
        self._attend = getattr(lib, f"attend_{suffix}")
        self._step = getattr(lib, f"step_{suffix}")

    def matvec(self, w: torch.Tensor, x: torch.Tensor, add: torch.Tensor | None = None) -> torch.Tensor:
        """add + w @ x"""
        out = torch.empty(w.shape[0], dtype=self.dtype)
        self._mv(w.data_ptr(), x.data_ptr(), _ptr(add), out.data_ptr(), *w.shape, self.threads)
        return out

    def norm_matvec(self, ws: tuple[torch.Tensor, ...], x: torch.Tensor, g: torch.Tensor, eps: float) -> torch.Tensor:
        """[ws stacked] @ (rmsnorm(x) * g), for one to three matrices of x's width (q|k|v, w1|w3, the head)"""
        segments = [(w.data_ptr(), w.shape[0]) for w in ws] + [(None, 0)] * (3 - len(ws))
        out = torch.empty(sum(n for _, n in segments), dtype=self.dtype)
        pointers = [value for segment in segments for value in segment]
        self._norm_mv(*pointers, x.data_ptr(), g.data_ptr(), eps, out.data_ptr(), x.shape[0], self.threads)
        return out

    def swiglu_matvec(self, w: torch.Tensor, gate_up: torch.Tensor, add: torch.Tensor) -> torch.Tensor:
        """add + w @ (silu(gate) * up), gate_up = [gate | up]"""
        out = torch.empty(w.shape[0], dtype=self.dtype)
        self._swiglu_mv(w.data_ptr(), gate_up.data_ptr(), add.data_ptr(), out.data_ptr(), *w.shape, self.threads)
        return out

    def attend(self, qkv, cos, sin, k_cache, v_cache, pos: int, n_q: int, n_kv: int, head_dim: int) -> torch.Tensor:
        """RoPE on q and k, k/v into the caches [1, K, max_len, d] at pos, attention over 0..pos: [H d]."""
        out = torch.empty(n_q * head_dim, dtype=self.dtype)
        self._attend(
            qkv.data_ptr(),
            cos.data_ptr(),
            sin.data_ptr(),
            k_cache.data_ptr(),
            v_cache.data_ptr(),
            out.data_ptr(),
            n_q,
            n_kv,
            head_dim,
            pos,
            k_cache.shape[2],
            self.threads,
        )
        return out

    def bind_step(self, plan) -> Callable[[int, int], torch.Tensor]:
        """`run(token_id, pos) -> logits [V]`: the plan's whole token in one call (see step_* in the C file).

        The weight and cache pointers are gathered once here; the plan keeps every tensor alive.
        """
        pointers = []  # 11 per layer, in the order step_* reads them: the compiled plan stacks 3 + 2 matrices
        for layer in plan.layers:
            pointers += [layer.attn_norm, *layer.wqkv, layer.wo, layer.ffn_norm, *layer.w13, layer.w2, layer.k, layer.v]
        table = (ctypes.c_void_p * len(pointers))(*(t.data_ptr() for t in pointers))
        vocab, width = plan.output.shape
        ffn = plan.layers[0].w2.shape[1]
        max_len = plan.layers[0].k.shape[2]
        fixed_tail = (max_len, width, plan.n_q, plan.n_kv, plan.head_dim, ffn, plan.eps)

        def run(token_id: int, pos: int) -> torch.Tensor:
            logits = torch.empty(vocab, dtype=self.dtype)
            self._step(
                table,
                len(plan.layers),
                plan.embedding[token_id].data_ptr(),
                plan.norm.data_ptr(),
                plan.output.data_ptr(),
                vocab,
                plan.cos[pos].data_ptr(),
                plan.sin[pos].data_ptr(),
                pos,
                *fixed_tail,
                logits.data_ptr(),
                self.threads,
            )
            return logits

        return run
