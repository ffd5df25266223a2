"""`mythos-convert gguf` (placeholder until its issue lands)."""

from __future__ import annotations

from mythos_convert.errors import MythosError


def gguf() -> None:
    """Not implemented yet."""
    raise MythosError("'gguf' is not implemented yet")
