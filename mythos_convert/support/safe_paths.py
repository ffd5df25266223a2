"""Paths that stay where they claim to be: inside a folder, never over an input.

A folder someone hands us (a download, a shared export, a careless `ln -s`) can hold a symlink to
`~/.cache/huggingface/token`, a FIFO, or an index naming `../elsewhere/model.safetensors`. Every
reader of a folder's files and every upload goes through `inside` / `folder_files`, so nothing
outside a folder is read from its files or published from it. `refuse_output_over_inputs` is the
other half: no command writes an output that is, contains, or lies inside one of its inputs.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from mythos_convert.errors import MythosError, UnsafePathError


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device file"
    return "not a regular file"


def entry_problem(path: Path) -> str | None:
    """Why `path` may not be read or uploaded as a folder's own file (None: a regular file or folder, or absent)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    what = _kind(mode)
    if stat.S_ISLNK(mode):
        what += f" (to {os.readlink(path)})"
    return what


def require_file(path: str | Path, what: str, fix: str) -> Path:
    """`path`, a file the user named, if it is a regular file (links followed: the user chose it).

    Checked before anything opens it: a named pipe nobody writes to blocks its reader forever and a
    device file never ends, so each is refused by what it is (not reported as missing).

    Raises:
        MythosError: `{what} {path} does not exist: {fix}`, or is a folder, a named pipe, a device...
    """
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        raise MythosError(f"{what} {path} does not exist: {fix}") from None
    if stat.S_ISDIR(mode):
        raise MythosError(f"{what} {path} is a folder, not a file: {fix}")
    if not stat.S_ISREG(mode):
        raise MythosError(f"{what} {path} is {_kind(mode)}, not a regular file: {fix}")
    return path


def inside(folder: str | Path, name: str, what: str = "file") -> Path:
    """`folder/name`, refused unless `name` is a relative path that stays inside `folder` with no link on the way.

    `name` comes from the folder's own files (an index's shard names) or is one the reader expects
    (config.json). The path may not exist yet; callers check that themselves, with their own message.

    Raises:
        MythosError: an absolute path, a `..` part, a symlink or special file at any step.
    """
    folder = Path(folder)
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if not name or PurePosixPath(name).is_absolute() or not parts or any(p in ("..", "") for p in parts):
        raise UnsafePathError(
            f"{what} {name!r} named in {folder} points outside the folder: a model folder's files must name "
            "files inside it; re-export the folder"
        )
    path = folder
    for part in parts:
        path = path / part
        problem = entry_problem(path)
        if problem is not None:
            raise UnsafePathError(
                f"{path} is {problem}: mythos-convert reads only regular files inside {folder}; "
                "replace it with the file itself"
            )
    return path


def scan_folder(folder: str | Path) -> tuple[list[str], dict[str, str]]:
    """Non-hidden regular files under `folder`, and every symlink or special file there with what it is.

    Links are never followed; hidden entries (caches, atomic-write temporaries, .git) are skipped,
    as an upload skips them. Paths are POSIX and relative to `folder`.
    """
    folder = Path(folder)
    files: list[str] = []
    unsafe: dict[str, str] = {}
    for root, dirs, names in os.walk(folder, followlinks=False):
        base = Path(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for entry in [*dirs, *(n for n in names if not n.startswith("."))]:
            problem = entry_problem(base / entry)
            rel = (base / entry).relative_to(folder).as_posix()
            if problem is not None:
                unsafe[rel] = problem
            elif entry not in dirs:
                files.append(rel)
        dirs[:] = [d for d in dirs if (base / d).relative_to(folder).as_posix() not in unsafe]
    return sorted(files), unsafe


def refuse_unsafe(folder: str | Path, unsafe: dict[str, str]) -> None:
    """One error naming every symlink or special file that would be read or published."""
    if unsafe:
        listed = "; ".join(f"{rel} is {what}" for rel, what in sorted(unsafe.items()))
        raise UnsafePathError(
            f"{folder} holds {len(unsafe)} entr{'y' if len(unsafe) == 1 else 'ies'} that may not be read or "
            f"published: {listed}; replace links with the files themselves, or remove them"
        )


def folder_files(folder: str | Path) -> list[str]:
    """`scan_folder`'s files, refusing the folder if it holds any symlink or special file."""
    files, unsafe = scan_folder(folder)
    refuse_unsafe(folder, unsafe)
    return files


def refuse_output_over_inputs(output: str | Path, inputs: Iterable[tuple[str, str | Path | None]]) -> None:
    """Refuse an output that is, contains, or lies inside one of the command's inputs.

    `--force` replaces an output; it must never replace what the command reads (`hf run/ckpt.pt run
    --force` would delete the checkpoint it converts). Paths are compared resolved, so links and
    `..` cannot hide an overlap. An output file inside an input *folder* is refused too (outputs
    written into a data folder become data); callers list only the files they read from folders
    that are meant to receive outputs (an HF folder receiving its GGUF files).

    Raises:
        MythosError: naming the output, the input and what to do.
    """
    out = Path(output).resolve()
    for what, path in inputs:
        if path is None:
            continue
        src = Path(path).resolve()
        if out == src:
            raise MythosError(f"output {output} is the {what} {path} it reads: write the output to another path")
        if src.is_relative_to(out):
            raise MythosError(
                f"output {output} contains the {what} {path}: writing it would destroy its own input; "
                "choose an output outside it"
            )
        if src.is_dir() and out.is_relative_to(src):
            raise MythosError(
                f"output {output} lies inside the {what} folder {path}: choose an output outside that folder"
            )
