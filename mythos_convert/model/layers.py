"""The model's building blocks, below both the module (`model.py`) and the one-token path (`decode.py`).

RMSNorm, RoPE in the half-split ("rotate_half") layout, the matrix product with its bf16 detours and
its input taps (how an importance matrix is collected), the preallocated KV cache and the causal
mask. Both `model.py` and `decode.py` import from here, so neither imports the other's internals.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    """`x * rsqrt(mean(x^2) + eps) * weight`, computed in float32 for stability."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Normalise in float32, round to x's dtype, then scale: the formula transformers' LlamaRMSNorm uses."""
    x32 = x.float()
    return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).type_as(x) * weight


def rope_tables(head_dim: int, max_seq_len: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables [max_seq_len, head_dim]: frequency theta^(-2j/d) repeated for both halves."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(max_seq_len, dtype=torch.float32), inv_freq)  # [T, d/2]
    angles = torch.cat([angles, angles], dim=-1)  # [T, d]: half-split layout
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [B, heads, T, d] by position tables cos/sin [T, d] (rotate_half layout)."""
    return rope(x, cos, signed_sin(sin))


def signed_sin(sin: torch.Tensor) -> torch.Tensor:
    """sin with its first half negated, so rotate_half becomes a swap of halves (no neg, no cat)."""
    half = sin.shape[-1] // 2
    return torch.cat([-sin[..., :half], sin[..., half:]], dim=-1)


def rope(x: torch.Tensor, cos: torch.Tensor, sin_signed: torch.Tensor) -> torch.Tensor:
    """x*cos + rotate_half(x)*sin, with rotate_half(x)*sin == swap_halves(x)*signed_sin: same bits."""
    swapped = x.unflatten(-1, (2, -1)).flip(-2).flatten(-2)  # [x2, x1]
    return (x * cos + swapped * sin_signed).type_as(x)


# Observers of every matrix product's input (x, weight): how an importance matrix is collected
# without a second copy of the forward pass. Empty (one list check per product) unless tapped.
_LINEAR_TAPS: list[Callable[[torch.Tensor, torch.Tensor], None]] = []


@contextlib.contextmanager
def tap_linear_inputs(tap: Callable[[torch.Tensor, torch.Tensor], None]) -> Iterator[None]:
    """Call `tap(x, weight)` before every `linear` in the block (the unfused, uncached forward)."""
    _LINEAR_TAPS.append(tap)
    try:
        yield
    finally:
        _LINEAR_TAPS.remove(tap)


def linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """F.linear, with two detours for bfloat16 on CPUs without native bf16 matmul (AVX2).

    There F.linear's bf16 kernels are 5-10x slower than float32: one row (decoding) goes through
    torch.mv, which has a vectorised bf16 path that reads the weights at memory speed; several
    rows (a prompt) are multiplied in float32 and rounded back once, as bf16 matmuls do anyway
    (they accumulate in float32), about 5x faster. The weights are widened `rows` at a time into
    one small buffer that stays in cache, not all at once: a float32 copy of every weight would be
    written to fresh memory on each prompt (0.23 s for mythos-172m here, most of the prompt's time).
    """
    for tap in _LINEAR_TAPS:
        tap(x, weight)
    if weight.dtype is torch.bfloat16 and x.dtype is torch.bfloat16 and x.device.type == "cpu":
        if x.numel() == x.shape[-1]:
            return torch.mv(weight, x.reshape(-1)).view(*x.shape[:-1], weight.shape[0])
        if not _native_bf16_matmul():
            return _widened_linear(x, weight)
    return F.linear(x, weight)


def _widened_linear(x: torch.Tensor, weight: torch.Tensor, rows: int = 256) -> torch.Tensor:
    """bf16 F.linear computed in float32 (the same result: bf16 matmuls accumulate in float32)."""
    x32 = x.float()
    buffer = torch.empty(min(rows, weight.shape[0]), weight.shape[1])
    parts = []
    for begin in range(0, weight.shape[0], rows):
        chunk = buffer[: min(rows, weight.shape[0] - begin)]
        chunk.copy_(weight[begin : begin + rows])
        parts.append(F.linear(x32, chunk))
    return torch.cat(parts, dim=-1).to(torch.bfloat16)


@functools.cache
def _native_bf16_matmul() -> bool:
    """Whether oneDNN has fast bf16 kernels here (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


class KVCache(nn.Module):
    """Preallocated keys/values [B, K, max_len, d] for one layer; filled in place, never concatenated."""

    def __init__(self, batch: int, n_kv_heads: int, max_len: int, head_dim: int, dtype: torch.dtype, device=None):
        super().__init__()
        shape = (batch, n_kv_heads, max_len, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    def update(self, start: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k/v [B, K, T, d] at positions start..start+T; return views of all S = start+T rows."""
        end = start + k.shape[2]
        self.k[:, :, start:end] = k
        self.v[:, :, start:end] = v
        return self.k[:, :, :end], self.v[:, :, :end]


def causal_mask(start: int, n_new: int, device=None) -> torch.Tensor:
    """Boolean mask [T, S] aligned to the end: new token i (absolute start+i) sees keys <= start+i.

    The reference engine used a top-left aligned mask here, which is wrong as soon as more than
    one new token is fed on top of a non-empty cache.
    """
    query_pos = torch.arange(start, start + n_new, device=device)[:, None]
    key_pos = torch.arange(start + n_new, device=device)[None, :]
    return key_pos <= query_pos
