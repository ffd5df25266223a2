"""`mythos-convert native` (placeholder until its issue lands)."""

from __future__ import annotations

from mythos_convert.errors import MythosError


def native() -> None:
    """Not implemented yet."""
    raise MythosError("'native' is not implemented yet")
