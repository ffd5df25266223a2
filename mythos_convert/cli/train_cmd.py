"""`mythos-convert train` (placeholder until its issue lands)."""

from __future__ import annotations

from mythos_convert.errors import MythosError


def train() -> None:
    """Not implemented yet."""
    raise MythosError("'train' is not implemented yet")
