"""llama.cpp's q/k row layout: the one permutation between half-split RoPE rows and interleaved ones.

Native and HF weights rotate row j of a head with row j + head_dim/2; llama.cpp rotates rows
(2j, 2j+1). The GGUF writer applies `TRANSFORMS`, every GGUF reader `unpermute`. numpy only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from mythos_convert.model.config import MythosConfig


def permute_rows(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """Reorder each head's rows from the half-split RoPE layout to llama.cpp's interleaved one.

    Row j of a head's first half and row j of its second half form rotation pair j; llama.cpp
    rotates consecutive rows (2j, 2j+1), so the halves are interleaved. The same reshape as
    llama.cpp's `LlamaModel.permute`; q and k get the same reorder, so q.k is unchanged.
    """
    rows = weight.shape[0]
    return weight.reshape(n_heads, 2, rows // n_heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def unpermute_rows(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """The inverse of `permute_rows`: llama.cpp's interleaved rows back to the half-split layout."""
    rows = weight.shape[0]
    return weight.reshape(n_heads, rows // n_heads // 2, 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


# The head count each name-table transform permutes with: q rows per query head, k rows per
# key/value head (GQA), as llama.cpp's converter calls `permute(q, n_head, n_head)` and `permute(k, n_head, n_head_kv)`.
HEADS = {"permute_q": "n_heads", "permute_k": "n_kv_heads"}


def head_count(transform: str, cfg: MythosConfig) -> int:
    """The heads `transform` (a name-table row's) permutes a tensor's rows by, for `cfg`."""
    return getattr(cfg, HEADS[transform])


def _permuter(transform: str) -> Callable[[np.ndarray, MythosConfig], np.ndarray]:
    def apply(weight: np.ndarray, cfg: MythosConfig) -> np.ndarray:
        return permute_rows(weight, head_count(transform, cfg))

    return apply


# The writer's side, by transform name (tests replace one to write a broken file).
TRANSFORMS = {transform: _permuter(transform) for transform in HEADS}


def unpermute(weight: np.ndarray, transform: str, cfg: MythosConfig) -> np.ndarray:
    """Undo a name-table transform on the way back from GGUF."""
    return unpermute_rows(weight, head_count(transform, cfg))
