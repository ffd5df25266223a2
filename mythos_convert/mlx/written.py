"""What an MLX export wrote: the record its card, its caller and the CLI read."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GROUP_SIZE = 64  # mlx-lm's default group


@dataclass
class MLXWritten:
    """One MLX folder written by `export_mlx`."""

    bits: int
    path: Path
    size: int  # bytes of its weight files
    bits_per_weight: float
    verify: dict[str, Any] = field(default_factory=dict)
