"""The files of a push: which a folder offers, how the Hub stores each, and the plan listing them.

A push takes every regular file of a folder but hidden entries (caches, atomic-write temporaries,
`.git`), narrowed by huggingface_hub's own include/exclude pattern rules; a symlink or special file
it would take is refused. Each planned file says whether the Hub stores it in LFS, by the Hub's
default `.gitattributes` rule (a pattern, more than 10 MB, or binary), so `--dry-run` can show it.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mythos_convert.hub.snapshot import Snapshot
from mythos_convert.support.safe_paths import folder_files, refuse_unsafe, scan_folder

# The Hub's default .gitattributes puts these in LFS; it also puts anything > 10 MB or binary there.
LFS_PATTERNS = (
    "*.7z *.arrow *.bin *.bz2 *.ckpt *.ftz *.gz *.h5 *.joblib *.mlmodel *.model *.msgpack *.npy *.npz *.onnx "
    "*.ot *.parquet *.pb *.pickle *.pkl *.pt *.pth *.rar *.safetensors *.tar *.tar.* *.tflite *.tgz *.wasm "
    "*.xz *.zip *.zst *tfevents* *.gguf"
).split()
LFS_SIZE = 10 * 1024 * 1024


@dataclass(frozen=True)
class PlannedFile:
    """One file of the commit: where it is, where it goes, and whether the Hub stores it in LFS."""

    path_in_repo: str
    local: Path
    size: int
    lfs: bool
    why: str  # "pattern *.safetensors", "> 10 MB", "binary" or "text"
    content: bytes | None = None  # written by the push itself (a GGUF repo's card), not read from the folder


def generated_file(path_in_repo: str, content: bytes) -> PlannedFile:
    """A file the push makes (not in the folder): uploaded from memory, scanned for credentials too."""
    reason = lfs_reason(path_in_repo, len(content), content[:512])
    return PlannedFile(path_in_repo, Path(path_in_repo), len(content), reason is not None, reason or "text", content)


def planned_file(folder: Path, rel: str) -> PlannedFile:
    """The plan's entry for the folder's file `rel`: its size, and LFS or not from its first 512 bytes."""
    local = folder / rel
    size = local.stat().st_size
    with local.open("rb") as fh:
        sample = fh.read(512)
    reason = lfs_reason(rel, size, sample)
    return PlannedFile(rel, local, size, reason is not None, reason or "text")


@dataclass
class PushPlan:
    """Everything a push will do, decided locally."""

    folder: Path
    repo_id: str
    endpoint: str
    revision: str = "main"
    create_pr: bool = False
    private: bool = False
    commit_message: str = ""
    files: list[PlannedFile] = field(default_factory=list)
    snapshot: Snapshot | None = None  # the private copy the checks read and the upload reads (`frozen`)

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)


def lfs_reason(path_in_repo: str, size: int, sample: bytes) -> str | None:
    """Why the Hub would store this file in LFS (None: a regular git file)."""
    name = path_in_repo.rsplit("/", 1)[-1]
    for pattern in LFS_PATTERNS:
        if fnmatch.fnmatch(name, pattern):
            return f"pattern {pattern}"
    if size > LFS_SIZE:
        return "> 10 MB"
    if b"\0" in sample:
        return "binary"
    return None


def _select(paths: list[str], include: Sequence[str] | None, exclude: Sequence[str] | None) -> list[str]:
    """huggingface_hub's own allow/ignore pattern semantics (a trailing "/" means the whole folder)."""
    from huggingface_hub.utils import filter_repo_objects

    return list(filter_repo_objects(paths, allow_patterns=list(include or []) or None, ignore_patterns=exclude))


def local_files(folder: Path) -> list[str]:
    """Files a push considers: every regular file but hidden entries (caches, atomic-write temporaries, .git).

    Raises:
        MythosError: a symlink or special file anywhere in the folder (`safe_paths.folder_files`).
    """
    return folder_files(folder)


def select_files(folder: Path, include: Sequence[str] | None, exclude: Sequence[str] | None) -> list[str]:
    """The files an upload takes, refusing any selected symlink or special file (an excluded one is left alone)."""
    files, unsafe = scan_folder(folder)
    selected = _select(files + list(unsafe), include, exclude)
    refuse_unsafe(folder, {rel: unsafe[rel] for rel in selected if rel in unsafe})
    return selected
