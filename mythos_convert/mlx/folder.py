"""An MLX folder as `mythos-convert mlx` (mlx-lm's `convert`) writes it: its width, config, size and files.

mlx-lm marks a quantized folder by a `quantization` object ({"group_size", "bits", "mode"}) in
its config.json (mlx_lm/utils.py, `save_config`); the rest of that config is the HF export's, so
the model's shape and parameter count are read with the HF config reader. `eval` and the card
find the folders beside the HF export by the names `mythos-convert mlx` gives them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mythos_convert.errors import MythosError
from mythos_convert.formats.hf_config import mythos_config_from_hf
from mythos_convert.model.config import MythosConfig

CARD = "README.md"  # rewritten by `mlx`'s card: never bound, like an HF folder's card


def _quantization(path: Path) -> dict[str, Any] | None:
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    q = config.get("quantization") if isinstance(config, dict) else None
    return q if isinstance(q, dict) and isinstance(q.get("bits"), int) else None


def is_mlx_folder(path: str | Path) -> bool:
    """A folder whose config.json carries mlx-lm's `quantization` object."""
    return Path(path).is_dir() and _quantization(Path(path)) is not None


@dataclass(frozen=True)
class MLXFolder:
    """What eval and the card need of one MLX folder."""

    path: Path
    bits: int
    group_size: int
    config: MythosConfig

    @property
    def label(self) -> str:
        return f"MLX {self.bits}-bit"

    @property
    def weights(self) -> list[str]:
        return sorted(p.name for p in self.path.glob("*.safetensors") if p.is_file())

    @property
    def size(self) -> int:
        """Bytes of its weight files (quantized weights, their scales and biases, the norms)."""
        return sum((self.path / n).stat().st_size for n in self.weights)

    @property
    def bits_per_weight(self) -> float:
        """Weight-file bits per model parameter, as `mythos-convert mlx` reports it."""
        return self.size * 8 / self.config.num_parameters()

    def bound_names(self) -> list[str]:
        """Every file that decides what it computes or how it tokenizes: all but its card."""
        return sorted(p.name for p in self.path.iterdir() if p.is_file() and p.name != CARD)


def read_mlx_folder(path: str | Path) -> MLXFolder:
    """Raises MythosError for a folder that is not an MLX folder or whose config does not map."""
    path = Path(path)
    q = _quantization(path)
    if q is None:
        raise MythosError(
            f"{path} is not an MLX folder (no `quantization` in its config.json): pass a folder `mythos-convert mlx` wrote"
        )
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    return MLXFolder(path, int(q["bits"]), int(q.get("group_size", 64)), mythos_config_from_hf(config))


def mlx_subfolders(folder: str | Path) -> list[Path]:
    """The MLX folders `mythos-convert mlx` wrote beside an HF export (4-bit, then 8-bit)."""
    from mythos_convert.mlx.export import BITS, mlx_folder_name

    found = [Path(folder) / mlx_folder_name(b) for b in sorted(BITS)]
    return [p for p in found if is_mlx_folder(p)]


def mlx_digests(path: Path, name: str | None = None) -> dict[str, dict[str, Any]]:
    """sha256 and size of an MLX folder's bound files, named relative to the folder it sits in, as
    `name/config.json` (`name`: the folder's final name, when `path` is still its temporary one)."""
    from mythos_convert.verify.record import hash_files

    own = hash_files(path, read_mlx_folder(path).bound_names())
    return {f"{name or path.name}/{file}": digest for file, digest in own.items()}
