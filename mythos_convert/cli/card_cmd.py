"""`mythos-convert card` (placeholder until its issue lands)."""

from __future__ import annotations

from mythos_convert.errors import MythosError


def card() -> None:
    """Not implemented yet."""
    raise MythosError("'card' is not implemented yet")
