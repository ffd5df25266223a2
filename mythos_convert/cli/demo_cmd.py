"""`mythos-convert demo` (placeholder until its issue lands)."""

from __future__ import annotations

from mythos_convert.errors import MythosError


def demo() -> None:
    """Not implemented yet."""
    raise MythosError("'demo' is not implemented yet")
