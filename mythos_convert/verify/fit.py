"""Whole or layerwise verify: whole-model verify holds two float32 models, so it runs where they fit.

Whole verify builds the native model and the export's (transformers, or llama.cpp's buffers) in
float32: about 2x the weights at its peak (docs/performance.md). Where that exceeds the memory
the kernel says is available (/proc/meminfo MemAvailable), verify goes block by block instead.
"""

from __future__ import annotations

from pathlib import Path

from mythos_convert.model.config import MythosConfig

MODES = ("auto", "whole", "layerwise")
WHOLE_FACTOR = 2.0  # whole verify's peak, in float32 weights


def available_bytes(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """MemAvailable in bytes, or None where the kernel does not say (then whole verify runs)."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def choose_mode(config: MythosConfig, mode: str = "auto", available: int | None = None) -> tuple[str, str]:
    """("whole" | "layerwise", why), for the output line that says which ran."""
    need = WHOLE_FACTOR * 4 * config.num_parameters()
    if mode != "auto":
        return mode, f"--{mode} asked for"
    available = available if available is not None else available_bytes()
    if available is None:
        return "whole", "available memory unknown"
    gb = 1e9
    if need > available:
        return "layerwise", f"2x the weights ({need / gb:.2f} GB) exceed the {available / gb:.2f} GB available"
    return "whole", f"2x the weights ({need / gb:.2f} GB) fit in the {available / gb:.2f} GB available"
