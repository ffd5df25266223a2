"""The one exception type a user can cause.

Every error that bad input can provoke is raised as `MythosError` with a message that names the
problem and the fix. The CLI catches it in one place, prints the message on one line and exits 2.
"""

from __future__ import annotations


class MythosError(Exception):
    """A problem with the user's input, files or environment; the message says what to do."""

    exit_code = 2


class UnsafePathError(MythosError):
    """A folder's file points outside it or is a link or special file: never read past, never skipped."""
