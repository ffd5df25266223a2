"""The hot loop of generation: one new token for a batch of one, with per-layer work hoisted out.

Decoding reads every weight once per token, so its ceiling is memory bandwidth. `DecodePlan` is
built once by `Mythos.setup_cache(batch=1)` and runs a token as five operations per layer on plain
per-layer tensors (no module calls): norm + stacked q|k|v product, attention (RoPE on q and k, the
cache write, one query over the cache), output product + residual, norm + stacked w1|w3 product,
SwiGLU + w2 product + residual. Two implementations of those five share one signature:
`TorchOps` (torch calls, the fallback, runs anywhere) and `kernels.CompiledOps` (AVX2 C that
streams the weights at memory speed; see kernels/__init__.py). The compiled ones also chain the
five for every layer in one call per token (`whole_token`), bit-identical to calling them from here.

Both compute what the module path computes, rounding bfloat16 where it rounds (float32: the same to
~1e-6; the tests compare every path against a full recomputation). Used only under no_grad.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mythos_convert.model import kernels
from mythos_convert.model.layers import rms_norm, signed_sin


@dataclass
class LayerPlan:
    attn_norm: torch.Tensor  # [D]
    wqkv: tuple[torch.Tensor, ...]  # stacked: [(H + 2K) d, D] (wq, wk, wv, or the fused copy)
    wo: torch.Tensor  # [D, H d]
    ffn_norm: torch.Tensor  # [D]
    w13: tuple[torch.Tensor, ...]  # stacked: [2 F, D] (w1, w3, or the fused copy)
    w2: torch.Tensor  # [D, F]
    k: torch.Tensor  # cache [1, K, max_len, d]
    v: torch.Tensor


class TorchOps:
    """The five operations in torch: 1-D products (`torch.mv` has the one fast bf16 kernel on AVX2)."""

    def __init__(self, dtype: torch.dtype):
        self.float32 = dtype is torch.float32

    def matvec(self, w: torch.Tensor, x: torch.Tensor, add: torch.Tensor | None = None) -> torch.Tensor:
        if add is None:
            return torch.mv(w, x)
        if self.float32:
            return torch.addmv(add, w, x)  # add + w x in one call
        return add + torch.mv(w, x)  # bf16 addmv has no fast kernel; mv does

    def norm_matvec(self, ws: tuple[torch.Tensor, ...], x: torch.Tensor, g: torch.Tensor, eps: float) -> torch.Tensor:
        """[ws stacked] @ (rmsnorm(x) * g); one fused matrix makes it one call"""
        h = rms_norm(x, g, eps)  # the module's formula
        return torch.cat([torch.mv(w, h) for w in ws]) if len(ws) > 1 else torch.mv(ws[0], h)

    def swiglu_matvec(self, w: torch.Tensor, gate_up: torch.Tensor, add: torch.Tensor) -> torch.Tensor:
        gate, up = gate_up.chunk(2)
        return self.matvec(w, F.silu(gate).mul_(up), add)

    def attend(self, qkv, cos, sin, k_cache, v_cache, pos: int, n_q: int, n_kv: int, head_dim: int) -> torch.Tensor:
        d, end = head_dim, pos + 1
        qkv = qkv.view(n_q + 2 * n_kv, d)
        qk = qkv[: n_q + n_kv]
        qk = qk * cos + qk.unflatten(-1, (2, -1)).flip(-2).flatten(-2) * sin  # RoPE, q and k at once
        k_cache[0, :, pos].copy_(qk[n_q:])
        v_cache[0, :, pos].copy_(qkv[n_q + n_kv :])
        att = F.scaled_dot_product_attention(
            qk[:n_q].view(1, n_q, 1, d), k_cache[:, :, :end], v_cache[:, :, :end], enable_gqa=n_kv != n_q
        )
        return att.view(-1)


class ThreadTuner:
    """How many threads the compiled step uses, chosen by timing the steps themselves.

    On a quiet machine all of torch's threads read the weights fastest. When other processes hold
    the cores, every parallel region ends at a barrier that waits a whole scheduler slice for a
    descheduled thread: measured here with one core kept busy, 2 threads decoded 1.0-1.4 tok/s
    and 1 thread 3.0. So the first steps time both counts, the faster one runs, and every
    `PROBE_EVERY` steps the other is timed again, in case the load went (one step in 128: <1%).
    """

    PROBE_EVERY = 128  # a load that comes shows at once (the running count's steps slow down); one that goes, here

    def __init__(self, threads: int):
        self.choices = [threads, 1] if threads > 1 else [threads]
        self.start = [threads, threads, 1]  # the very first step warms up and is not counted
        self.seconds: dict[int, float] = {}  # moving average of a step's time per thread count
        self.steps = 0

    def pick(self) -> int:
        if len(self.choices) == 1:
            return self.choices[0]
        if self.steps < len(self.start):
            return self.start[self.steps]
        best = min(self.seconds, key=self.seconds.__getitem__)
        if (self.steps - len(self.start)) % self.PROBE_EVERY == self.PROBE_EVERY - 1:
            return next(c for c in self.choices if c != best)
        return best

    def record(self, threads: int, seconds: float) -> None:
        """The running count's time is averaged over steps; a probe's replaces the stale one outright."""
        if self.steps > 0:
            previous = self.seconds.get(threads)
            running = previous is not None and threads == min(self.seconds, key=self.seconds.__getitem__)
            self.seconds[threads] = 0.5 * (previous + seconds) if running else seconds
        self.steps += 1


class DecodePlan:
    """Per-layer tensors and constants for `step`; valid while the model's cache lives."""

    def __init__(self, model, caches, compiled: bool = True):
        """`compiled`: use the AVX2 operations where they run. They read q|k|v and w1|w3 as stacked
        products straight from the module's weights; torch's need fused copies (built here)."""
        cfg = model.config
        self.n_q, self.n_kv, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.eps = cfg.norm_eps
        self.embedding = model.embedding.weight
        self.dtype = self.embedding.dtype
        self.norm = model.norm.weight
        self.output = model.output.weight
        self.cos = model.rope_cos.to(self.dtype)
        self.sin = signed_sin(model.rope_sin.to(self.dtype))
        ops = compiled_ops_for(model) if compiled else None
        self.ops = ops or TorchOps(self.dtype)
        self.tuner = ThreadTuner(torch.get_num_threads()) if ops else None
        self.layers: list[LayerPlan] = []
        for layer, cache in zip(model.layers, caches, strict=True):
            attention, ffn = layer.attention, layer.feed_forward
            if ops:
                qkv, w13 = (
                    (attention.wq.weight, attention.wk.weight, attention.wv.weight),
                    (ffn.w1.weight, ffn.w3.weight),
                )
            else:
                attention.fuse()
                ffn.fuse()
                qkv, w13 = (attention.wqkv,), (ffn.w13,)
            self.layers.append(
                LayerPlan(
                    layer.attn_norm.weight,
                    qkv,
                    attention.wo.weight,
                    layer.ffn_norm.weight,
                    w13,
                    ffn.w2.weight,
                    cache.k,
                    cache.v,
                )
            )
        # the compiled operations also run the whole token in one call: no Python between products
        self.whole_token = ops.bind_step(self) if ops else None

    def step(self, token: torch.Tensor, pos: int) -> torch.Tensor:
        """Logits [1, 1, V] for `token` ([1, 1]) at position `pos`, its k/v written into the cache."""
        if self.tuner is None:
            return self._step(token, pos)
        self.ops.threads = threads = self.tuner.pick()
        started = time.perf_counter()
        logits = self._step(token, pos)
        self.tuner.record(threads, time.perf_counter() - started)
        return logits

    def _step(self, token: torch.Tensor, pos: int) -> torch.Tensor:
        if self.whole_token is not None:
            return self.whole_token(int(token), pos).view(1, 1, -1)
        return self.step_by_operations(token, pos)

    def step_by_operations(self, token: torch.Tensor, pos: int) -> torch.Tensor:
        """The token as the five operations per layer, called one by one from Python."""
        ops, eps = self.ops, self.eps
        cos, sin = self.cos[pos], self.sin[pos]  # [d], once per token
        x = self.embedding[int(token)]  # [D]
        for layer in self.layers:
            qkv = ops.norm_matvec(layer.wqkv, x, layer.attn_norm, eps)
            att = ops.attend(qkv, cos, sin, layer.k, layer.v, pos, self.n_q, self.n_kv, self.head_dim)
            x = ops.matvec(layer.wo, att, add=x)
            x = ops.swiglu_matvec(layer.w2, ops.norm_matvec(layer.w13, x, layer.ffn_norm, eps), add=x)
        return ops.norm_matvec((self.output,), x, self.norm, eps).view(1, 1, -1)


def compiled_ops_for(model) -> kernels.CompiledOps | None:
    """The compiled operations for this model's weights as they are, or None where torch's must run.

    They read the weights in place; torch's one-token path needs fused copies of q|k|v and w1|w3.
    """
    dtype = model.embedding.weight.dtype
    if not _contiguous_cpu(model, dtype):
        return None
    return kernels.compiled_ops(dtype, model.config.head_dim)


def _contiguous_cpu(model, dtype: torch.dtype) -> bool:
    """Whether every weight is a contiguous CPU tensor of `dtype`: what the compiled operations read."""
    return all(p.device.type == "cpu" and p.is_contiguous() and p.dtype is dtype for p in model.parameters())
