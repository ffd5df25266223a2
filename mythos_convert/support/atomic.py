"""Write outputs so that nothing is lost or half-written.

Every output goes to a temporary name beside its destination and is renamed into place only when
complete. An existing non-empty output is refused unless the caller passes `force`; with force the
old output is swapped out only after the new one is complete, so a crash mid-write leaves it intact.

While an output is written, `.NAME.lock` beside it is held with `flock`: a second run to the same
output is refused at once, and the refusal is checked again at rename time. The kernel drops the
lock when its process dies, so the file a crash leaves behind is recognisably stale: the next run
takes it over and removes the dead run's `.NAME.tmp-*` / `.NAME.old-*` leftovers.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from mythos_convert.errors import MythosError
from mythos_convert.support import interrupts


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


@contextlib.contextmanager
def _parent_folders(final: Path) -> Iterator[None]:
    """Create `final`'s missing parent folders; remove them again if the block fails.

    A refused or failed run leaves the disk as it found it: no empty `runs/` from a `train` whose
    data did not exist.
    """
    made = []
    parent = final.parent
    while not parent.exists() and parent != parent.parent:
        made.append(parent)
        parent = parent.parent
    with _refused(final):
        final.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield
    except BaseException:
        for folder in made:  # deepest first; stops at the first that is no longer empty
            try:
                folder.rmdir()
            except OSError:
                break
        raise


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
        raise MythosError(f"output {path} is a folder, expected a file path: name a file (e.g. {path}/model.gguf)")
    if path.exists() and not force:
        raise MythosError(f"output file {path} already exists: choose another name or pass --force to replace it")
    return path


def _lock_path(final: Path) -> Path:
    return final.parent / f".{final.name}.lock"


def _holder(lock: Path) -> str:
    try:
        pid = lock.read_text().strip()
    except OSError:
        return ""
    return f" (pid {pid})" if pid.isdigit() else ""


@contextlib.contextmanager
def output_lock(final: Path) -> Iterator[None]:
    """Hold `.NAME.lock` beside `final` for the block; refuse at once if another run holds it.

    The lock is `flock` on the file, so it dies with its process. After taking it, the file on disk
    must still be the one locked (another run may have removed it in between); else retry.

    Raises:
        MythosError: another run is writing the same output.
    """
    fd = -1
    try:
        with interrupts.deferred():  # a signal cannot fall between creating the lock and owning it
            fd = _take_lock(_lock_path(final), final)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        _remove_stale_leftovers(final)
        yield
    finally:
        if fd >= 0:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(_lock_path(final))
            os.close(fd)


def _take_lock(lock: Path, final: Path) -> int:
    """The open, flocked `lock` (the file on disk, not one another run removed meanwhile)."""
    while True:
        with _refused(final):
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise MythosError(
                f"another mythos-convert run{_holder(lock)} is writing {final}: wait for it to finish, "
                "or write to another output"
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


def _remove_stale_leftovers(final: Path) -> None:
    """Temporaries of `final` from a run that died (SIGKILL, power loss): only the lock holder writes them."""
    patterns = {f".{final.name}.tmp-*", f".{final.name}.old-*", f".{final.stem}.tmp-*"}  # the GGUF writer's: stem
    for pattern in sorted(patterns):
        for path in final.parent.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()


@contextlib.contextmanager
def atomic_dir(final: str | Path, force: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces `final` in one rename.

    On any exception the temporary folder is removed and `final` is untouched. The output lock is
    held throughout, and the non-empty check is repeated just before the rename.
    """
    final = check_output_dir(final, force)
    with _parent_folders(final), output_lock(final):
        check_output_dir(final, force)
        tmp: Path | None = None
        try:
            with interrupts.deferred(), _refused(final):  # created and owned by this `try` at once
                tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
            yield tmp
            check_output_dir(final, force)  # another process may have put something there meanwhile
            _publish_mode(tmp, is_dir=True)
            with interrupts.deferred():  # the old output out and the new one in, never half of it
                _swap_in(tmp, final)
        except BaseException:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
            raise


def _swap_in(tmp: Path, final: Path) -> None:
    """Rename `tmp` onto `final`, an existing `final` moved aside first and removed after."""
    old = None
    if final.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
        os.rmdir(old)
        os.replace(final, old)
    try:
        os.replace(tmp, final)
    except BaseException:
        if old is not None:
            os.replace(old, final)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(final: str | Path, force: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside `final`; renamed onto `final` only if the block succeeds.

    The output lock is held throughout; without `force` an existing file is refused before and
    again at rename time.
    """
    final = Path(final)
    if not force:
        check_output_file(final, force)
    with _parent_folders(final), output_lock(final):
        tmp: Path | None = None
        try:
            with interrupts.deferred(), _refused(final):  # created and owned by this `try` at once
                fd, name = tempfile.mkstemp(prefix=f".{final.name}.tmp-", dir=final.parent)
                os.close(fd)
                tmp = Path(name)
            yield tmp
            if not force:
                check_output_file(final, force)
            _publish_mode(tmp, is_dir=False)
            os.replace(tmp, final)
        finally:
            if tmp is not None and tmp.exists():
                tmp.unlink()
