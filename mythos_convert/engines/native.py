"""The native engine: the Mythos model in torch, float32, on a checkpoint's (or any source's) weights.

It is the reference every export is compared with (verify) and the distribution KL divergence is
measured from (eval). Its greedy decoder fills the KV cache once and then reads one token per
step (`native_greedy`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from mythos_convert.engines.base import Engine, Ids
from mythos_convert.formats.checkpoint import NativeCheckpoint, load_model
from mythos_convert.model.decode import compiled_ops_for
from mythos_convert.source import open_hf


def native_logits(model, ids: Ids) -> torch.Tensor:
    """Full-sequence logits [T, V] of token ids, no cache (float32: the model runs in float32)."""
    with torch.no_grad():
        return model(torch.as_tensor(ids)[None])[0].float()


def native_greedy(model, seq: Sequence[int], n: int) -> tuple[torch.Tensor, list[int]]:
    """(logits [T, V] of `seq`, its `n` greedy tokens) from the native model.

    The prefill fills the KV cache; its logits are those of a forward without a cache (bit for bit
    here: the same operations, the keys read from the cache), so they can also serve a logit check
    and that sequence runs once. Then one token per step on the cache: the compiled step where
    the kernels run (the weights read in place, one call per token, threads chosen by timing:
    `decode.ThreadTuner`), elsewhere the module path without fused copies of the weights (a
    verifier holds one model's weights and nothing more).
    """
    seq = list(seq)
    model.setup_cache(1, len(seq) + n, fuse=compiled_ops_for(model) is not None)
    try:
        with torch.no_grad():
            logits = model(torch.tensor([seq]))[0]
            tokens = [int(logits[-1].float().argmax())]
            for pos in range(len(seq), len(seq) + n - 1):
                tokens.append(int(model(torch.tensor([tokens[-1:]]), start=pos)[0, -1].float().argmax()))
    finally:
        model.clear_cache()
    return logits, tokens[:n]


def native_engine_of(model, target: str, dtype: str = "float32") -> Engine:
    """An `Engine` around a built native model (a verifier that casts its weights keeps the model)."""
    return Engine(
        target,
        "native",
        "native (torch)",
        dtype,
        model.config.vocab_size,
        lambda ids: native_logits(model, ids),
        lambda ids, n: native_greedy(model, ids, n)[1],
        model=model,
    )


def native_engine(target: str, ckpt: NativeCheckpoint, dtype: str = "float32") -> Engine:
    """The native model in float32 on a checkpoint's weights (its own tensors: no random init, no copy)."""
    return native_engine_of(load_model(ckpt, torch.float32), target, dtype)


def native_from_hf(folder: Path) -> Engine:
    """The native model in float32 on an HF folder's weights (read through the name table)."""
    src = open_hf(folder)
    assert src.hf is not None
    return native_engine(f"{folder.name}/ (native)", src.as_checkpoint(), src.hf.stored_dtype())
