"""`mythos-convert push` (placeholder until its issue lands)."""

from __future__ import annotations

from mythos_convert.errors import MythosError


def push() -> None:
    """Not implemented yet."""
    raise MythosError("'push' is not implemented yet")
