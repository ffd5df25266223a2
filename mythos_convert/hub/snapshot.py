"""A private, frozen copy of the files a push checks and uploads.

Checking a folder and uploading it read its files at different times: anything writing to the
folder in between (an editor, a training job, a careless script) would get bytes published that
no check saw. So a push copies each file once into a private folder (0700, files 0400) beside the
source folder, on the same filesystem: a reflink (FICLONE: btrfs, XFS, bcachefs; no extra space)
where the filesystem can, else a plain copy, which needs as much free space as the files. The
bytes are hashed as they are copied. Every check reads the copy and the upload reads only the
copy; `changed_in_source` then tells whether the user's folder still holds those bytes (a push
refuses to commit when it does not). The copy is removed afterwards, on errors and Ctrl-C too; a
copy a killed push left behind is recognisably stale (its `flock` died with the process) and the
next push beside that folder removes it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from mythos_convert.errors import MythosError, UnsafePathError

FICLONE = 0x40049409  # linux/fs.h: _IOW(0x94, 9, int)
_CHUNK = 4 << 20
# errors meaning "this filesystem (pair) cannot share blocks": copy instead
_NO_REFLINK = {errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.EINVAL, errno.ENOTTY, errno.ENOSYS, errno.EPERM}


@dataclass(frozen=True)
class Stamp:
    """What a file looked like when it was copied: any write since changes ctime (which no one can set)."""

    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> Stamp:
        return cls(st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@dataclass
class Snapshot:
    """The private copy of some of `source`'s files: where it is, and the sha256 of each copy."""

    source: Path
    root: Path
    digests: dict[str, dict[str, int | str]] = field(default_factory=dict)  # rel -> {"sha256", "size"}
    stamps: dict[str, Stamp] = field(default_factory=dict)  # rel -> the source file as it was copied

    def path(self, rel: str) -> Path:
        return self.root / rel

    def shown(self, text: str) -> str:
        """A message about the copy, naming the user's folder instead (the copy is gone by the time it is read)."""
        return text.replace(str(self.root), str(self.source))

    def changed_in_source(self, names: Iterable[str]) -> list[str]:
        """Which of `names` the source folder no longer holds as copied (edited, replaced, removed).

        A file whose stat is as it was when copied is unchanged; one whose stat moved is hashed,
        so a `touch` alone is not a change.
        """
        changed = []
        for rel in names:
            try:
                with _open_inside(self.source, rel) as fd:
                    st = os.fstat(fd)
                    if Stamp.of(st) == self.stamps[rel]:
                        continue
                    if st.st_size == self.digests[rel]["size"] and _hash_fd(fd) == self.digests[rel]["sha256"]:
                        continue
            except (OSError, MythosError):
                pass
            changed.append(rel)
        return changed


@contextlib.contextmanager
def _open_inside(folder: Path, rel: str) -> Iterator[int]:
    """A read-only fd of the regular file `folder/rel`, no link followed at any step (no check-then-open gap)."""
    parts = PurePosixPath(rel).parts
    if not parts or any(p in ("", ".", "..") for p in parts) or PurePosixPath(rel).is_absolute():
        raise UnsafePathError(f"{rel!r} is not a path inside {folder}")
    fds = [os.open(folder, os.O_RDONLY | os.O_DIRECTORY)]
    try:
        for part in parts[:-1]:
            fds.append(os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fds[-1]))
        fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=fds[-1])
        fds.append(fd)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UnsafePathError(
                f"{rel} in {folder} became a link or special file during the push: replace it with the file itself"
            )
        yield fd
    finally:
        for opened in reversed(fds):
            os.close(opened)


def _hash_fd(fd: int) -> str:
    digest = hashlib.sha256()
    os.lseek(fd, 0, os.SEEK_SET)
    while chunk := os.read(fd, _CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def _reflink(src: int, dst: int) -> bool:
    """Share `src`'s blocks with the empty file `dst` (copy-on-write); False where the filesystem cannot."""
    try:
        fcntl.ioctl(dst, FICLONE, src)
    except OSError as exc:
        if exc.errno in _NO_REFLINK:
            return False
        raise
    return True


def _copy(src: int, dst: int) -> dict[str, int | str]:
    """Copy `src` into `dst` and return the sha256 and size of exactly the bytes written."""
    digest, size = hashlib.sha256(), 0
    while chunk := os.read(src, _CHUNK):
        digest.update(chunk)
        view = memoryview(chunk)
        while view:
            view = view[os.write(dst, view) :]
        size += len(chunk)
    return {"sha256": digest.hexdigest(), "size": size}


def _lock_dir(path: Path) -> int:
    """An fd holding `flock` on the folder: held for the snapshot's life, released by the kernel at death."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def _remove_stale(base: Path, prefix: str) -> None:
    """Copies beside `base` whose push died (their lock is free): removed."""
    for old in base.glob(f"{prefix}*"):
        try:
            fd = _lock_dir(old)
        except OSError:  # held by a live push, or gone
            continue
        try:
            shutil.rmtree(old, ignore_errors=True)
        finally:
            os.close(fd)


def _private_dir(folder: Path) -> tuple[Path, int]:
    """A new 0700 folder beside `folder` (same filesystem: a reflink can work), locked; the system
    temp folder when `folder`'s parent is not writable."""
    folder = folder.resolve()  # `.` names its folder too
    prefix, making = f".{folder.name}.push-", f".{folder.name}.new-"
    for base in (folder.parent, Path(tempfile.gettempdir())):
        try:
            # created under another name and renamed once locked, so a sweep never takes it for stale
            made = Path(tempfile.mkdtemp(prefix=making, dir=base))
        except OSError:
            continue
        fd = _lock_dir(made)
        final = base / (prefix + made.name.removeprefix(making))  # a new name: mkdtemp's suffix is unique
        os.rename(made, final)  # the lock moves with the inode
        _remove_stale(base, prefix)
        return final, fd
    raise MythosError(f"cannot create a private folder beside {folder} or in the temp folder: check permissions")


def _refuse_full_disk(root: Path, need: int, source: Path) -> None:
    free = shutil.disk_usage(root).free
    if need > free:
        from mythos_convert.support.ui import human_size

        raise MythosError(
            f"not enough free space for push's private copy of {source} in {root.parent} (needs "
            f"{human_size(need)}, {human_size(free)} free; this filesystem cannot reflink): free some space "
            "or --exclude large files"
        )


@contextlib.contextmanager
def take_snapshot(folder: str | Path, names: Iterable[str]) -> Iterator[Snapshot]:
    """Copy `names` (relative to `folder`) once into a private folder, yielding it; removed on exit.

    Raises:
        MythosError: a file gone, replaced by a link or special file, or not enough disk for the copy.
    """
    folder = Path(folder)
    root, lock = _private_dir(folder)
    snap = Snapshot(folder, root)
    try:
        _fill(snap, sorted(set(names)))
        yield snap
    finally:
        shutil.rmtree(root, ignore_errors=True)
        os.close(lock)


def _fill(snap: Snapshot, names: list[str]) -> None:
    space_checked = False
    for i, rel in enumerate(names):
        target = snap.path(rel)
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            with _open_inside(snap.source, rel) as src:
                snap.stamps[rel] = Stamp.of(os.fstat(src))
                dst = os.open(target, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
                try:
                    if _reflink(src, dst):  # the copy's own bytes are hashed
                        digest = {"sha256": _hash_fd(dst), "size": os.fstat(dst).st_size}
                    else:
                        if not space_checked:
                            _refuse_full_disk(snap.root, _sizes(snap.source, names[i:]), snap.source)
                            space_checked = True
                        digest = _copy(src, dst)
                    os.fchmod(dst, 0o400)
                finally:
                    os.close(dst)
        except FileNotFoundError:
            raise MythosError(f"{rel} disappeared from {snap.source} during the push: rerun push") from None
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise MythosError(
                    f"the disk filled up while push copied {rel} of {snap.source} into {snap.root.parent}: "
                    "free some space or --exclude large files"
                ) from None
            if exc.errno in (errno.EACCES, errno.EPERM):
                raise MythosError(
                    f"cannot read {rel} in {snap.source} ({exc.strerror}): make it readable or --exclude it"
                ) from None
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise UnsafePathError(
                    f"{rel} in {snap.source} became a link during the push: replace it with the file itself"
                ) from None
            raise
        snap.digests[rel] = digest


def _sizes(folder: Path, names: Iterable[str]) -> int:
    total = 0
    for rel in names:
        with contextlib.suppress(OSError):
            total += os.lstat(folder / rel).st_size
    return total
