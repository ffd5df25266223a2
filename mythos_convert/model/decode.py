"""The hot loop of generation: one new token for a batch of one, with per-layer work hoisted out.

Decoding reads every weight once per token, so its ceiling is memory bandwidth; what keeps an
eager PyTorch engine below it is the fixed cost of each operator call. `DecodePlan` is built once
by `Mythos.setup_cache(batch=1)` and then runs a token with about half the operator calls of the
module path: plain per-layer tensors instead of module calls, fused q|k|v and w1|w3 products,
1-D matrix-vector products (`torch.mv`, which also has the fast bf16 kernel), residual adds fused
into `addmv` in float32, RoPE rows for the step taken once (not per layer), rotation for q and k
in one call, and keys/values written into the preallocated cache in place.

It computes what the module path computes (float32: the same to ~1e-6; the tests compare both
against a full recomputation); it is used only under no_grad/inference_mode.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class LayerPlan:
    attn_norm: torch.Tensor  # [D]
    wqkv: torch.Tensor  # [(H + 2K) d, D]
    wo: torch.Tensor  # [D, H d]
    ffn_norm: torch.Tensor  # [D]
    w13: torch.Tensor  # [2 F, D]
    w2: torch.Tensor  # [D, F]
    k: torch.Tensor  # cache [1, K, max_len, d]
    v: torch.Tensor


class DecodePlan:
    """Per-layer tensors and constants for `step`; valid while the model's cache lives."""

    def __init__(self, model, caches):
        cfg = model.config
        self.n_q, self.n_kv, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.eps = cfg.norm_eps
        self.gqa = cfg.n_kv_heads != cfg.n_heads
        self.embedding = model.embedding.weight
        self.dtype = self.embedding.dtype
        self.float32 = self.dtype is torch.float32
        self.norm = model.norm.weight
        self.output = model.output.weight
        from mythos_convert.model.model import signed_sin

        self.cos = model.rope_cos.to(self.dtype)
        self.sin = signed_sin(model.rope_sin.to(self.dtype))
        self.layers = [
            LayerPlan(
                layer.attn_norm.weight,
                layer.attention.wqkv,
                layer.attention.wo.weight,
                layer.ffn_norm.weight,
                layer.feed_forward.w13,
                layer.feed_forward.w2.weight,
                cache.k,
                cache.v,
            )
            for layer, cache in zip(model.layers, caches, strict=True)
        ]

    def _norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        if self.float32:
            return torch.rms_norm(x, (x.shape[-1],), weight, self.eps)  # one call, same formula
        x32 = x.float()  # the module's formula exactly (and transformers'): normalise in fp32, round, scale
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * weight

    def _residual(self, x: torch.Tensor, weight: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        if self.float32:
            return torch.addmv(x, weight, h)  # x + W h in one call
        return x + torch.mv(weight, h)  # bf16 addmv has no fast kernel; mv does

    def step(self, token: torch.Tensor, pos: int) -> torch.Tensor:
        """Logits [1, 1, V] for `token` ([1, 1]) at position `pos`, its k/v written into the cache."""
        n_q, n_kv, d = self.n_q, self.n_kv, self.head_dim
        end = pos + 1
        cos, sin = self.cos[pos], self.sin[pos]  # [d], once per token
        x = self.embedding[int(token)]  # [D]
        for layer in self.layers:
            qkv = torch.mv(layer.wqkv, self._norm(x, layer.attn_norm)).view(n_q + 2 * n_kv, d)
            qk = qkv[: n_q + n_kv]
            qk = qk * cos + qk.unflatten(-1, (2, -1)).flip(-2).flatten(-2) * sin  # RoPE, q and k at once
            layer.k[0, :, pos].copy_(qk[n_q:])
            layer.v[0, :, pos].copy_(qkv[n_q + n_kv :])
            att = F.scaled_dot_product_attention(
                qk[:n_q].view(1, n_q, 1, d), layer.k[:, :, :end], layer.v[:, :, :end], enable_gqa=self.gqa
            )
            x = self._residual(x, layer.wo, att.view(-1))
            gate, up = torch.mv(layer.w13, self._norm(x, layer.ffn_norm)).chunk(2)
            x = self._residual(x, layer.w2, F.silu(gate).mul_(up))
        return torch.mv(self.output, self._norm(x, self.norm)).view(1, 1, -1)
