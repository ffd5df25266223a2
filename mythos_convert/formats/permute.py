"""llama.cpp's q/k row layout: the one permutation between half-split RoPE rows and interleaved ones.

Native and HF weights rotate row j of a head with row j + head_dim/2; llama.cpp rotates rows
(2j, 2j+1). The GGUF writer applies `permute_rows`, every GGUF reader `unpermute_rows`. numpy only.
"""

from __future__ import annotations

import numpy as np


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


TRANSFORMS = {  # named by the name table's rows
    "permute_q": lambda w, cfg: permute_rows(w, cfg.n_heads),
    "permute_k": lambda w, cfg: permute_rows(w, cfg.n_kv_heads),
}
