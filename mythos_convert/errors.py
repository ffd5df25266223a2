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


class VerificationFailed(MythosError):
    """A written output that failed its parity check: the files stay, with the failure recorded.

    `results` maps each verified output (`hf`, a GGUF file name, `mlx-4bit/`) to its result dict, as
    recorded in verify.json; `output` is what the call produced (an `HFExport`, a `GGUFExport`, ...)
    so a caller can still report it.
    """

    def __init__(self, message: str, results: dict[str, dict], output: object = None) -> None:
        super().__init__(message)
        self.results = results
        self.output = output

    @property
    def result(self) -> dict:
        """The first failed result (the only one, where one output was verified)."""
        return next(r for r in self.results.values() if not r.get("passed"))
