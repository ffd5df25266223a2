"""The sha256s an HF verify records, computed on one thread from the very start of verify.

Hashing a 172M export and its checkpoint (0.6 + 1.8 GB with the AdamW state) is about 1.6 s of one
core. File reads and hashlib release the GIL, so on a thread it runs on the second core while the
main thread imports torch and transformers (about 1.7 s of pure Python on the first), instead of
after them or beside torch's two threads. This module imports neither, so `verify` can start it
before it imports them.

The folder's files are hashed first, and `files()` waits for them: verify reads no file of the
folder before its hash is taken, so a file changed later fails push's re-hash instead of passing as
verified. The source checkpoint is hashed next (its digest only names what the folder was compared
with, as before): the one passed, else the one the export recorded in its local paths file.

`wait()` lets the hashing finish before verify's torch work starts: beside a hashing thread torch's
two threads wait on each other at every barrier (the hash then slowed them most).
"""

from __future__ import annotations

import concurrent.futures
import json
import threading
from pathlib import Path
from typing import Any

from mythos_convert.errors import MythosError
from mythos_convert.formats.hf_folder import LOCAL_FILE
from mythos_convert.support.safe_paths import inside
from mythos_convert.verify.record import file_digest, hash_files, hf_bound_files


class Digests:
    """The folder's bound files, then any source checkpoint asked for, hashed in order on one thread."""

    def __init__(self, folder: str | Path, source: str | Path | None = None):
        """`source`: the checkpoint to hash after the folder (default: the one the export recorded)."""
        self.folder = Path(folder)
        self._stop = threading.Event()
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="verify-digest")
        # mapped: verify maps these files itself (torch.load and safetensors), so that adds no risk
        self._files = self._pool.submit(hash_files, self.folder, hf_bound_files(self.folder), self._stop, mapped=True)
        self._sources: dict[Path, concurrent.futures.Future] = {}
        self.add_source(source if source is not None else recorded_source(self.folder))

    def add_source(self, path: str | Path | None) -> None:
        """Queue a checkpoint's digest (once per path; a missing file gets none, as before)."""
        if path is None or not Path(path).is_file():
            return
        key = Path(path).resolve()
        if key not in self._sources:
            self._sources[key] = self._pool.submit(file_digest, key, self._stop, mapped=True)

    def files(self) -> dict[str, dict[str, Any]]:
        """`{name: {"sha256", "size"}}` of the folder's bound files (waits for them)."""
        return self._files.result()

    def source(self, path: str | Path | None) -> dict[str, Any] | None:
        """sha256/size of the checkpoint the folder was compared with, under its name (verify.json is published)."""
        if path is None or not Path(path).is_file():
            return None
        self.add_source(path)
        return {"name": Path(path).name, **self._sources[Path(path).resolve()].result()}

    def wait(self) -> None:
        """Until everything queued so far is hashed (a failure is raised where its result is asked for)."""
        concurrent.futures.wait([self._files, *self._sources.values()])

    def close(self) -> None:
        """Stop what is still hashing (nothing left needs it) and end the thread."""
        self._stop.set()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Digests:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def recorded_source(folder: Path) -> Path | None:
    """The checkpoint an export recorded in its local paths file, or None (that file is not bound: reading
    it early reads nothing verify checks; `verify_hf` resolves the checkpoint itself later)."""
    try:
        data = json.loads(inside(folder, LOCAL_FILE).read_text())
    except (OSError, ValueError, MythosError):
        return None
    path = data.get("source_checkpoint_path") if isinstance(data, dict) else None
    return Path(path) if isinstance(path, str) and path else None
