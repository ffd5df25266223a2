"""Questions about tensors asked without importing torch (the torch-free export path must not pay for it)."""

from __future__ import annotations

import sys
from typing import Any


def is_torch_tensor(value: Any) -> bool:
    """Without importing torch: a reader that made torch tensors has imported it already."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)
