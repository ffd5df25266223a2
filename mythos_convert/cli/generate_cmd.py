"""`mythos-convert generate` (placeholder until its issue lands)."""

from __future__ import annotations

from mythos_convert.errors import MythosError


def generate() -> None:
    """Not implemented yet."""
    raise MythosError("'generate' is not implemented yet")
