"""What an MLX export wrote: the record its card, its caller and the CLI read."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mythos_convert.support.ui import human_size

GROUP_SIZE = 64  # mlx-lm's default group


@dataclass
class MLXWritten:
    """One MLX folder written by `export_mlx`."""

    bits: int
    path: Path
    size: int  # bytes of its weight files
    bits_per_weight: float
    verify: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        """One line: the folder, its width, size, bits per weight and mlx-lm parity figures."""
        v = self.verify
        figures = f", KL mean {v['mean_kl']:.3g} / p99 {v['p99_kl']:.3g}" if "mean_kl" in v else ", not verified"
        return f"{self.path}: {self.bits}-bit, {human_size(self.size)}, {self.bits_per_weight:.2f} bits/weight{figures}"
