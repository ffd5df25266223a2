"""Whole or layerwise verify: whole-model verify holds two float32 models, so it runs where they fit.

Whole verify builds the native model and the export's (transformers, or llama.cpp's buffers) in
float32: about 2x the weights at its peak (docs/commands/verify.md has the measured figures).
Where that exceeds the memory the kernel says is available (/proc/meminfo MemAvailable), verify
goes block by block instead. The first look is the files' sizes only (nothing of the export is
read before verify hashes it): only where their widest float32 size might not fit is the config read.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mythos_convert.model.config import MythosConfig

MODES = ("auto", "whole", "layerwise")
WHOLE_FACTOR = 2  # whole verify's peak, in float32 weights
WIDEST = {".gguf": 8, "": 2}  # float32 bytes per stored byte at most: 4-bit GGUF types, 16-bit HF folders
GB = 1e9


def available_bytes(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """MemAvailable in bytes, or None where the kernel does not say (then whole verify runs)."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def stored_bytes(target: Path) -> int:
    """The export's weight files' size on disk (stat only): an HF folder's safetensors, or a GGUF file."""
    if target.is_dir():
        return sum(p.stat().st_size for p in target.glob("*.safetensors") if p.is_file())
    return target.stat().st_size if target.is_file() else 0


def choose_mode(
    target: Path, mode: str, config_of: Callable[[], MythosConfig], available: int | None = None
) -> tuple[str, str]:
    """("whole" | "layerwise", why), for the output line that says which ran."""
    if mode != "auto":
        return mode, f"--{mode} asked for"
    available = available if available is not None else available_bytes()
    if available is None:
        return "whole", "available memory unknown"
    bound = WHOLE_FACTOR * WIDEST[".gguf" if target.suffix == ".gguf" else ""] * stored_bytes(target)
    if bound <= available:
        return "whole", f"2x the weights (at most {bound / GB:.2f} GB) fit in the {available / GB:.2f} GB available"
    need = WHOLE_FACTOR * 4 * config_of().num_parameters()
    if need > available:
        return "layerwise", f"2x the weights ({need / GB:.2f} GB) exceed the {available / GB:.2f} GB available"
    return "whole", f"2x the weights ({need / GB:.2f} GB) fit in the {available / GB:.2f} GB available"
