"""Write outputs so that nothing is lost or half-written.

Every output goes to a temporary name beside its destination and is renamed into place only when
complete. An existing non-empty output is refused unless the caller passes `force`; with force the
old output is swapped out only after the new one is complete, so a crash mid-write leaves it intact.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from mythos_convert.errors import MythosError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publish_mode(path: Path, is_dir: bool) -> None:
    """mkstemp/mkdtemp create 0600/0700; give outputs the modes a normal write would (0644/0755)."""
    os.chmod(path, (0o777 if is_dir else 0o666) & ~_umask())


@contextlib.contextmanager
def _refused(final: Path) -> Iterator[None]:
    """The system refusing to create an output (a file where a folder goes, permissions) is bad input."""
    try:
        yield
    except OSError as exc:
        where = exc.filename or final.parent
        raise MythosError(
            f"cannot create output {final} ({exc.strerror or exc}: {where}): choose a path in a writable folder"
        ) from exc


def check_output_dir(path: str | Path, force: bool) -> Path:
    """Refuse a non-empty existing folder unless force; refuse a file where a folder should go."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise MythosError(f"output {path} exists and is not a folder: choose another path")
    if path.is_dir() and any(path.iterdir()) and not force:
        raise MythosError(f"output folder {path} is not empty: choose another folder or pass --force to replace it")
    return path


def check_output_file(path: str | Path, force: bool) -> Path:
    """Refuse an existing file unless force."""
    path = Path(path)
    if path.is_dir():
        raise MythosError(f"output {path} is a folder, expected a file path")
    if path.exists() and not force:
        raise MythosError(f"output file {path} already exists: choose another name or pass --force to replace it")
    return path


@contextlib.contextmanager
def atomic_dir(final: str | Path, force: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces `final` in one rename.

    On any exception the temporary folder is removed and `final` is untouched.
    """
    final = check_output_dir(final, force)
    with _refused(final):
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _publish_mode(tmp, is_dir=True)
    old = None
    if final.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
        os.rmdir(old)
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(final: str | Path, force: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside `final`; renamed onto `final` only if the block succeeds."""
    final = Path(final)
    if not force:
        check_output_file(final, force)
    with _refused(final):
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{final.name}.tmp-", dir=final.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        _publish_mode(tmp, is_dir=False)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()
