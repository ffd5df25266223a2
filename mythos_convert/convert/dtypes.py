"""The weight dtypes an export holds, in every spelling, defined once.

HF and torch say `float32`, safetensors headers say `F32`, the shard planner needs bytes per value.
Every reader and writer looks them up here (no torch import: the torch-free export path uses it).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import torch


@dataclass(frozen=True)
class WeightDtype:
    name: str  # HF config / torch spelling
    code: str  # safetensors header spelling
    itemsize: int  # bytes per value


WEIGHT_DTYPES = (WeightDtype("float32", "F32", 4), WeightDtype("bfloat16", "BF16", 2), WeightDtype("float16", "F16", 2))
HF_DTYPES = tuple(d.name for d in WEIGHT_DTYPES)  # what --dtype accepts and config.json may declare
BY_NAME = {d.name: d for d in WEIGHT_DTYPES}
BY_CODE = {d.code: d for d in WEIGHT_DTYPES}


def torch_dtype(name: str) -> torch.dtype:
    import torch  # only callers that already hold tensors get here

    return getattr(torch, BY_NAME[name].name)


def dtype_name(dtype: torch.dtype) -> str:
    """`torch.bfloat16` -> `bfloat16` (KeyError for a dtype an export cannot hold)."""
    return BY_NAME[str(dtype).removeprefix("torch.")].name


def is_torch_tensor(value: Any) -> bool:
    """Without importing torch: a reader that made torch tensors has imported it already."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def float32_array(value: Any) -> np.ndarray:
    """A tensor of any reader (torch, numpy) as float32 numpy: a view where it already is float32."""
    import numpy as np

    if is_torch_tensor(value):
        import torch

        return value.detach().to(torch.float32).numpy()
    return np.asarray(value, dtype=np.float32)
