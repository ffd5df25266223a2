"""The weight dtypes an export holds, in every spelling, defined once.

HF and torch say `float32`, safetensors headers say `F32`, the shard planner needs bytes per value.
Every reader and writer looks them up here (no torch import: the torch-free export path uses it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mythos_convert.support.torch_free import is_torch_tensor

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
# What a native checkpoint's weights may be: the export dtypes, and float64 (exported as float32).
# Integers or bools are not trained weights: converting them would publish a model of rounded values.
NATIVE_DTYPES = (*HF_DTYPES, "float64")


def torch_dtype(name: str) -> torch.dtype:
    import torch  # only callers that already hold tensors get here

    return getattr(torch, BY_NAME[name].name)


def dtype_text(dtype: Any) -> str:
    """A torch dtype (`torch.int64`) or the torch-free reader's name (`int64`) as `int64`."""
    return str(dtype).removeprefix("torch.")


def export_dtype(dtype: Any) -> str:
    """The export dtype that holds a native weight dtype: itself, or float32 for float64."""
    name = dtype_text(dtype)
    return name if name in BY_NAME else "float32"


def float32_array(value: Any) -> np.ndarray:
    """A tensor of any reader (torch, numpy) as float32 numpy: a view where it already is float32."""
    import numpy as np

    if is_torch_tensor(value):
        import torch

        return value.detach().to(torch.float32).numpy()
    return np.asarray(value, dtype=np.float32)
