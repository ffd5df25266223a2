"""Where verify results live: `verify.json` in the exported folder, one entry per target.

The card shows the last results, and `push` refuses a folder whose last verify failed, or whose
files changed since it. Schema:

    {"version": 2,
     "results": {"hf": {...}, "mythos-tiny-F16.gguf": {...}}}

Each result is a flat dict: `passed` (bool), `target`, `kind` ("hf" or "gguf"), `dtype`,
`max_abs_diff`, `mean_abs_diff`, `argmax_agreement` (0..1), `greedy_equal` (bool or null),
`tolerance`, `tokenizer_agreement` (0..1 or null), `n_tokens`, `checkpoint`, `timestamp` (ISO),
plus any extra fields the verifier adds. Since version 2 a result binds itself to what it checked:
`files` maps each verified file (relative to the folder) to `{"sha256", "size"}`, and `source`
holds the same for the reference (the checkpoint file, or the folder's weights for a GGUF checked
against them). Version 1 files have no `files`: `push` asks for a new verify. Non-finite figures
are stored as the strings "NaN", "Infinity", "-Infinity" so the published file is strict JSON.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import threading
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

from mythos_convert.data.tokenizer import TOKENIZER_FILE
from mythos_convert.errors import MythosError
from mythos_convert.formats.hf_folder import CONFIG_FILE, GENERATION_FILE, SPECIAL_TOKENS_FILE, TOKENIZER_CONFIG_FILE
from mythos_convert.formats.safetensors import INDEX_FILE
from mythos_convert.support.strict_json import write_strict_json

RESULTS_FILE = "verify.json"
RESULTS_VERSION = 2
Digests = dict[str, dict[str, Any]]  # file name -> {"sha256", "size"}, as `file_digest` returns
# Files of an HF folder that decide what it computes or how it tokenizes: an HF verify binds them.
HF_BOUND_NAMES = (
    CONFIG_FILE,
    GENERATION_FILE,
    TOKENIZER_FILE,
    TOKENIZER_CONFIG_FILE,
    SPECIAL_TOKENS_FILE,
    INDEX_FILE,
)
_CHUNK = 1 << 20
# A mapped digest reads through a window this size: hashlib then needs the GIL once per window, not
# once per read. Beside a thread holding the GIL (verify hashes while it imports), 1.8 GB read in
# 4 MiB chunks took 2.0 s, mapped 1.6 s (1.3 s and 1.5 s alone).
_WINDOW = 128 << 20


def needs_verify(name: str) -> bool:
    """Is `name` (relative to the folder) a file that push publishes only as verified?"""
    return name in HF_BOUND_NAMES or name.endswith((".safetensors", ".gguf"))


def hf_bound_files(folder: str | Path) -> list[str]:
    """The files of an HF folder that its verify binds: weight shards, index, config, tokenizer files."""
    folder = Path(folder)
    names = [p.name for p in folder.glob("*.safetensors") if p.is_file()]
    names += [n for n in HF_BOUND_NAMES if (folder / n).is_file()]
    return sorted(names)


class Cancelled(Exception):
    """A digest given up because its `stop` event was set (verify failed before it was needed)."""


def file_digest(path: str | Path, stop: threading.Event | None = None, *, mapped: bool = False) -> dict[str, Any]:
    """sha256 and size of one file (about 1 s per 1.3 GB; hashlib releases the GIL while it hashes).

    `stop`, when set, ends the read between chunks with `Cancelled`: a digest on a thread must
    not keep the process alive for a second after what needed it has failed. `mapped` hashes
    mapped windows instead of reads (faster beside a thread that holds the GIL), for a caller
    that maps the file anyway: a file truncated while mapped kills the process (SIGBUS), where a
    read just ends early.
    """
    with Path(path).open("rb") as fh:
        if mapped:
            try:
                return _mapped_digest(fh, stop)
            except (OSError, ValueError):  # a file that cannot be mapped: read it
                pass
        digest = hashlib.sha256()
        while chunk := fh.read(_CHUNK):
            if stop is not None and stop.is_set():
                raise Cancelled(str(path))
            digest.update(chunk)
        return {"sha256": digest.hexdigest(), "size": fh.tell()}


def _mapped_digest(fh: BinaryIO, stop: threading.Event | None) -> dict[str, Any]:
    """`file_digest` of an open file through mapped windows of `_WINDOW` bytes."""
    digest, size = hashlib.sha256(), os.fstat(fh.fileno()).st_size
    for offset in range(0, size, _WINDOW):
        if stop is not None and stop.is_set():
            raise Cancelled(fh.name)
        with mmap.mmap(fh.fileno(), min(_WINDOW, size - offset), access=mmap.ACCESS_READ, offset=offset) as view:
            digest.update(view)
    return {"sha256": digest.hexdigest(), "size": size}


def hash_files(
    folder: str | Path, names: Iterable[str], stop: threading.Event | None = None, *, mapped: bool = False
) -> dict[str, dict[str, Any]]:
    """`{name: {"sha256", "size"}}` for files named relative to `folder` (`stop`, `mapped`: see `file_digest`)."""
    folder = Path(folder)
    return {name: file_digest(folder / name, stop, mapped=mapped) for name in sorted(set(names))}


def changed_files(
    folder: str | Path, files: dict[str, Any], names: Iterable[str] | None = None, known: Digests | None = None
) -> list[str]:
    """Which recorded files (all, or only `names`) are missing or differ from their recorded hash now.

    The size is compared first, so a changed length costs no hashing. `known` holds digests
    already taken of some of the files (a push hashes its copy as it makes it): not hashed again.
    """
    folder = Path(folder)
    changed = []
    for name in sorted(files if names is None else set(names) & set(files)):
        want, path = files[name], folder / name
        if not isinstance(want, dict):
            changed.append(name)
        elif known and name in known:
            if (known[name]["size"], known[name]["sha256"]) != (want.get("size"), want.get("sha256")):
                changed.append(name)
        elif not path.is_file() or path.stat().st_size != want.get("size"):
            changed.append(name)
        elif file_digest(path)["sha256"] != want.get("sha256"):
            changed.append(name)
    return changed


def is_bound(folder: str | Path, entry: Any) -> bool:
    """Does a result record file hashes, all of which match the folder's files now?"""
    files = entry.get("files") if isinstance(entry, dict) else None
    return isinstance(files, dict) and bool(files) and not changed_files(folder, files)


def load_results(folder: str | Path, strict: bool = False) -> dict[str, dict[str, Any]]:
    """All recorded results of a folder (empty when it was never verified).

    A verify.json that does not parse, or is not shaped like one, reads as empty, unless `strict`:
    then it is a MythosError (push must not mistake a damaged record for a missing one).
    """
    path = Path(folder) / RESULTS_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
        results = data.get("results", {})
        if not isinstance(results, dict):
            raise ValueError("`results` is not a mapping")
        return dict(results)
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, ValueError) as exc:
        if not strict:
            return {}
        detail = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise MythosError(
            f"{path} is corrupted ({detail}): delete it and re-run `mythos-convert verify` on the folder"
        ) from None


def record_result(folder: str | Path, target: str, result: dict[str, Any]) -> Path:
    """Store one target's result (replacing its previous one), atomically.

    A damaged verify.json is replaced rather than refused: re-running verify is how it gets fixed.
    """
    folder = Path(folder)
    results = load_results(folder)
    entry = dict(result)
    entry.setdefault("timestamp", datetime.now(timezone.utc).isoformat(timespec="seconds"))
    results[target] = entry
    path = folder / RESULTS_FILE
    return write_strict_json(path, {"version": RESULTS_VERSION, "results": results}, sort_keys=True)
