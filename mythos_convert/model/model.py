"""The Mythos decoder: a LLaMA-style transformer in one readable file.

Pre-norm blocks `x + attn(attn_norm(x))`, `x + ffn(ffn_norm(x))`; RMSNorm; RoPE in the half-split
("rotate_half") layout, the same as transformers' Llama; grouped-query attention through
`scaled_dot_product_attention`; SwiGLU `w2(silu(w1 x) * w3 x)`; the output head tied to the
embedding. State-dict names are exactly the reference implementation's, `rope_cos`/`rope_sin`
buffers included, so reference checkpoints load with `strict=True` and ours load in the reference.

Shapes: B batch, T new tokens, S cached + new tokens, D d_model, H heads, K kv heads, d head_dim.

Speed (decoding is bound by reading every weight once per token): the cache is preallocated and
written in place; RoPE slices are taken once per forward, not per layer; linears call `linear()`,
which avoids F.linear's slow bf16 kernels on CPUs without native bf16 (AVX2);
`setup_cache` also prepares, for inference only, a `DecodePlan` (decode.py) that runs each new token
of a batch of one through five fused operations per layer (AVX2 kernels where they run), and where
torch's operations run, fused q|k|v and w1|w3 weights (plain attributes, so state-dict names and
saved checkpoints never change), dropped again by `clear_cache`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mythos_convert.model.config import MythosConfig
from mythos_convert.model.decode import DecodePlan
from mythos_convert.model.layers import KVCache, RMSNorm, causal_mask, linear, rope, rope_tables, signed_sin


class Attention(nn.Module):
    def __init__(self, cfg: MythosConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.dropout = cfg.dropout
        self.wq = nn.Linear(cfg.d_model, cfg.n_heads * cfg.head_dim, bias=False)
        self.wk = nn.Linear(cfg.d_model, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.wv = nn.Linear(cfg.d_model, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.wo = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.d_model, bias=False)
        self.wqkv: torch.Tensor | None = None  # inference-only fused [wq; wk; wv], see fuse()

    def fuse(self) -> None:
        """Build the fused q|k|v weight for inference (a plain attribute: not in the state dict)."""
        self.wqkv = torch.cat([self.wq.weight, self.wk.weight, self.wv.weight]).detach()

    def project(self, x: torch.Tensor, cos: torch.Tensor, sin_signed: torch.Tensor, fused: bool = False):
        """q [B, H, T, d], k, v [B, K, T, d] with RoPE applied to q and k (`fused`: one q|k|v product)."""
        bsz, n_new, _ = x.shape
        n_q, n_kv = self.n_heads, self.n_kv_heads
        if fused and self.wqkv is not None:
            qkv = linear(x, self.wqkv).view(bsz, n_new, n_q + 2 * n_kv, self.head_dim)
            qk = rope(qkv[:, :, : n_q + n_kv], cos[:, None], sin_signed[:, None])  # one call for q and k
            q, k, v = qk[:, :, :n_q], qk[:, :, n_q:], qkv[:, :, n_q + n_kv :]
            return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        q = linear(x, self.wq.weight).view(bsz, n_new, n_q, self.head_dim).transpose(1, 2)
        k = linear(x, self.wk.weight).view(bsz, n_new, n_kv, self.head_dim).transpose(1, 2)
        v = linear(x, self.wv.weight).view(bsz, n_new, n_kv, self.head_dim).transpose(1, 2)
        return rope(q, cos, sin_signed), rope(k, cos, sin_signed), v

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin_signed: torch.Tensor,
        start: int = 0,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """x [B, T, D]; cos/sin_signed [T, d] for positions start..start+T (see `signed_sin`)."""
        bsz, n_new, _ = x.shape
        q, k, v = self.project(x, cos, sin_signed, fused=cache is not None and not torch.is_grad_enabled())
        if cache is not None:
            k, v = cache.update(start, k, v)  # [B, K, S, d]
        mask, is_causal = None, False
        if start == 0 and k.shape[2] == n_new:
            is_causal = n_new > 1  # plain causal attention over a fresh sequence
        elif n_new > 1:
            mask = causal_mask(start, n_new, x.device)  # chunk on top of a cache
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            is_causal=is_causal,
            dropout_p=self.dropout if self.training else 0.0,
            enable_gqa=self.n_kv_heads != self.n_heads,
        )
        return linear(out.transpose(1, 2).reshape(bsz, n_new, -1), self.wo.weight)


class FeedForward(nn.Module):
    def __init__(self, cfg: MythosConfig):
        super().__init__()
        self.w1 = nn.Linear(cfg.d_model, cfg.ffn_dim, bias=False)  # gate
        self.w2 = nn.Linear(cfg.ffn_dim, cfg.d_model, bias=False)  # down
        self.w3 = nn.Linear(cfg.d_model, cfg.ffn_dim, bias=False)  # up
        self.w13: torch.Tensor | None = None  # inference-only fused [w1; w3], see fuse()

    def fuse(self) -> None:
        self.w13 = torch.cat([self.w1.weight, self.w3.weight]).detach()

    def forward(self, x: torch.Tensor, fused: bool = False) -> torch.Tensor:
        if fused and self.w13 is not None:
            gate, up = linear(x, self.w13).chunk(2, dim=-1)
        else:
            gate, up = linear(x, self.w1.weight), linear(x, self.w3.weight)
        return linear(F.silu(gate) * up, self.w2.weight)


class Block(nn.Module):
    def __init__(self, cfg: MythosConfig):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attention = Attention(cfg)
        self.ffn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.feed_forward = FeedForward(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, cos, sin_signed, start: int = 0, cache: KVCache | None = None) -> torch.Tensor:
        x = x + self.drop(self.attention(self.attn_norm(x), cos, sin_signed, start, cache))
        fused = cache is not None and not torch.is_grad_enabled()  # generation only, never training/eval
        return x + self.drop(self.feed_forward(self.ffn_norm(x), fused))


class Mythos(nn.Module):
    """The decoder. `forward(tokens)` gives logits; with `targets`, also the mean cross-entropy."""

    def __init__(self, cfg: MythosConfig):
        super().__init__()
        self.config = cfg.validate()
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.output = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.output.weight = self.embedding.weight  # tied: one storage, two state-dict names
        cos, sin = rope_tables(cfg.head_dim, cfg.max_seq_len, cfg.rope_theta)
        self.register_buffer("rope_cos", cos)  # persistent: the reference saves them
        self.register_buffer("rope_sin", sin)
        self.caches: list[KVCache] | None = None
        self.decode_plan = None  # set by setup_cache(batch=1): see decode.py
        self.apply(self._init_weights)
        scale = 0.02 / (2 * cfg.n_layers) ** 0.5  # GPT-2 style: shrink residual projections
        for name, param in self.named_parameters():
            if name.endswith(("wo.weight", "w2.weight")):
                nn.init.normal_(param, mean=0.0, std=scale)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def setup_cache(
        self,
        batch: int,
        max_len: int | None = None,
        dtype: torch.dtype | None = None,
        *,
        fuse: bool = True,
        compiled: bool = True,
    ) -> None:
        """Preallocate a KV cache per layer for generation (drop it with `clear_cache`).

        With `fuse`, also prepare the inference fast paths, used only while the cache is in use under
        no_grad/inference_mode. For a batch of one that is a `DecodePlan` (decode.py); where its AVX2
        operations run they read the weights in place, otherwise (and for larger batches) fused q|k|v
        and w1|w3 copies of the current weights make fewer, larger products. Call `setup_cache` again
        after changing the weights or dtype. `compiled=False` keeps the one-token path on torch's
        operations even where the AVX2 kernels run (see model/kernels).
        """
        max_len = max_len or self.config.max_seq_len
        dtype = dtype or self.embedding.weight.dtype
        device = self.embedding.weight.device
        cfg = self.config
        self.caches = [KVCache(batch, cfg.n_kv_heads, max_len, cfg.head_dim, dtype, device) for _ in self.layers]
        self.decode_plan = None
        for layer in self.layers:
            layer.attention.wqkv = layer.feed_forward.w13 = None
        if fuse and batch == 1 and dtype == self.embedding.weight.dtype:
            self.decode_plan = DecodePlan(self, self.caches, compiled=compiled)
        elif fuse:
            for layer in self.layers:
                layer.attention.fuse()
                layer.feed_forward.fuse()

    def clear_cache(self) -> None:
        """Drop the KV cache and the fused inference weights."""
        self.caches = None
        self.decode_plan = None
        for layer in self.layers:
            layer.attention.wqkv = layer.feed_forward.w13 = None

    def forward(
        self,
        tokens: torch.Tensor,
        targets: torch.Tensor | None = None,
        start: int = 0,
        *,
        last_only: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """tokens [B, T] at absolute positions start..start+T (start > 0 needs `setup_cache`).

        `last_only` computes the output head for the last position only (logits [B, 1, V]):
        what generation needs after a prefill.
        """
        n_new = tokens.shape[1]
        end = start + n_new
        if end > self.config.max_seq_len:
            raise ValueError(f"cannot run position {end - 1}: max_seq_len is {self.config.max_seq_len}")
        if start > 0 and self.caches is None:
            raise ValueError("start > 0 needs a KV cache: call setup_cache() first")
        if self.decode_plan is not None and tokens.shape == (1, 1) and targets is None and not torch.is_grad_enabled():
            return self.decode_plan.step(tokens, start)  # one token on top of the cache: the hot loop
        x = self.embedding(tokens)  # [B, T, D]
        # once per forward, not per layer: the position slices of the RoPE tables
        cos, sin = self.rope_cos[start:end].to(x.dtype), signed_sin(self.rope_sin[start:end].to(x.dtype))
        caches = self.caches if self.caches is not None else [None] * len(self.layers)
        for layer, cache in zip(self.layers, caches, strict=True):
            x = layer(x, cos, sin, start, cache)
        if last_only:
            x = x[:, -1:]
        logits = linear(self.norm(x), self.output.weight)  # [B, T, V]
        if targets is None:
            return logits
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        return logits, loss

    def num_parameters(self, *, include_embedding: bool = True) -> int:
        """Real parameter count: tied tensors once; buffers excluded."""
        seen, total = set(), 0
        for param in self.parameters():
            if id(param) in seen:
                continue
            seen.add(id(param))
            total += param.numel()
        return total if include_embedding else total - self.embedding.weight.numel()
