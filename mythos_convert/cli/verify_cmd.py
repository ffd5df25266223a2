"""`mythos-convert verify` (placeholder until its issue lands)."""

from __future__ import annotations

from mythos_convert.errors import MythosError


def verify() -> None:
    """Not implemented yet."""
    raise MythosError("'verify' is not implemented yet")
