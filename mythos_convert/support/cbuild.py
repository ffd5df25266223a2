"""C sources of this package compiled on first use with the system compiler, cached, loaded with ctypes.

Installing the package needs no compiler and no build step: a source (`model/kernels/decode_ops.c`,
`quant/kquants.c`) is compiled the first time it is needed (about a second) into
`~/.cache/mythos-convert/kernels/<stem>-<hash>.so`, the hash covering the source, the flags and
the compiler, so an edited source or another compiler builds afresh. Each user of a library keeps
its own switch, platform checks and self-test, and falls back to its Python path when `load`
says why it could not (no compiler, a failed build or load). No torch here: the GGUF quantizers
use this without importing it.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

DISABLE_ENV = "MYTHOS_KERNELS"  # "0" turns every compiled kernel off: the Python paths run


def disabled() -> bool:
    return os.environ.get(DISABLE_ENV, "1") == "0"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mythos-convert" / "kernels"


def cpu_flags() -> set[str]:
    """The `flags` line of /proc/cpuinfo (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def find_compiler() -> str | None:
    return shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")


def _build(compiler: str, source: Path, flags: list[str], target: Path) -> None:
    """Compile to a temporary name beside `target` and rename: concurrent first uses cannot clash."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=target.stem, suffix=".tmp.so")
    os.close(fd)
    try:
        subprocess.run([compiler, *flags, str(source), "-o", tmp], check=True, capture_output=True, timeout=120)
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)


def load(source: Path, flags: list[str]) -> tuple[ctypes.CDLL | None, str]:
    """(the library, its path) built from `source` with `flags` if needed, or (None, why not)."""
    compiler = find_compiler()
    key = hashlib.sha256(source.read_bytes() + " ".join(flags).encode() + str(compiler).encode()).hexdigest()[:16]
    target = cache_dir() / f"{source.stem}-{key}.so"
    try:
        if not target.is_file():
            if compiler is None:
                return None, f"no C compiler (cc/gcc) to build {source.name}"
            _build(compiler, source, flags, target)
        return ctypes.CDLL(str(target)), str(target)
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", None) or str(exc).encode()
        return None, f"kernel build/load failed: {detail.decode(errors='replace').strip()[:300]}"
