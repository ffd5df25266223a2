"""The weight dtypes an export holds, in every spelling, defined once.

HF and torch say `float32`, safetensors headers say `F32`, the shard planner needs bytes per value.
Every reader and writer looks them up here (no torch import: the torch-free export path uses it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
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
