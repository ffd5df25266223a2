"""`mythos-convert hf` (placeholder until its issue lands)."""

from __future__ import annotations

from mythos_convert.errors import MythosError


def hf() -> None:
    """Not implemented yet."""
    raise MythosError("'hf' is not implemented yet")
