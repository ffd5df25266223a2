"""Where training text comes from: the embedded default corpus, or the user's text/JSONL/Parquet files.

The embedded corpus is English text that every Python installation already has: the docstrings
of the standard library's pure-Python modules (read with `ast`, so no module is imported and
nothing runs) plus the help topics of `pydoc_data` (the language reference). It needs no network
and no user files, so `mythos-convert train --preset tiny` works on a fresh machine. Its exact
content depends on the Python version, and the data description records which one was used.
"""

from __future__ import annotations

import ast
import gzip
import json
import os
import sys
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from mythos_convert.errors import MythosError
from mythos_convert.support.safe_paths import require_file
from mythos_convert.support.workers import close_pool, process_pool, starting_workers

TEXT_SUFFIXES = (".txt", ".md", ".rst", ".text")
JSONL_SUFFIXES = (".jsonl", ".ndjson")
PARQUET_SUFFIXES = (".parquet",)
# Standard-library folders skipped: test suites (code-like strings, fixtures) and site-packages.
_SKIP_DIRS = {"test", "tests", "site-packages", "dist-packages", "__pycache__", "idle_test"}


@dataclass
class Corpus:
    """Raw documents and where they came from (for the checkpoint's data description)."""

    name: str
    texts: list[str]
    sources: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- the embedded default


def _stdlib_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = [p for p in root.rglob("*.py") if not _SKIP_DIRS.intersection(p.relative_to(root).parts)]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _docstrings_of_file(path: Path) -> list[str]:
    """Docstrings of a module and of its classes and functions, in source order."""
    try:
        tree = ast.parse(path.read_bytes())
    except (SyntaxError, ValueError, OSError, UnicodeDecodeError):
        return []  # a few stdlib files are templates or target other Python versions
    out: list[str] = []

    def visit(node: ast.AST) -> None:
        doc = ast.get_docstring(node, clean=True)  # type: ignore[arg-type]
        if doc:
            out.append(doc)
        for child in getattr(node, "body", []):
            if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                visit(child)

    visit(tree)
    return out


def _pydoc_topics() -> list[str]:
    try:
        from pydoc_data.topics import topics  # the language reference, shipped for help()
    except ImportError:
        return []
    return [topics[key] for key in sorted(topics)]


def embedded_corpus(max_files: int | None = None) -> list[str]:
    """English documents every Python machine has: stdlib docstrings and pydoc help topics.

    Deterministic for a given Python installation (sorted files, source order), duplicates
    removed keeping the first occurrence. About 2 MB of text on CPython 3.11.

    Args:
        max_files: read only the first N standard-library files (for quick tests).
    """
    files = _stdlib_files()[:max_files] if max_files is not None else _stdlib_files()
    workers = max(1, min(4, os.cpu_count() or 1))
    if workers > 1 and len(files) > 50:
        pool = process_pool(workers, "fork")  # workers that die with this process
        try:
            with starting_workers():
                parsed = pool.map(_docstrings_of_file, files, chunksize=16)
            per_file = list(parsed)
        except BaseException:  # interrupted or failed: the workers are not waited for
            close_pool(pool, abandon=True)
            raise
        close_pool(pool, abandon=False)
    else:
        per_file = [_docstrings_of_file(f) for f in files]
    docs = [doc for docs in per_file for doc in docs]
    if max_files is None:
        docs.extend(_pydoc_topics())
    return list(dict.fromkeys(docs))


def embedded_corpus_name() -> str:
    version = ".".join(map(str, sys.version_info[:3]))
    return f"Python {version} standard-library docstrings and pydoc topics (embedded default corpus)"


# ---------------------------------------------------------------- user files


def _open_text(path: Path):
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open("r", encoding="utf-8")


def _base_suffix(path: Path) -> str:
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    return Path(name).suffix.lower()


def _read_text_file(path: Path) -> Iterator[str]:
    with _open_text(path) as handle:
        yield handle.read()  # one file is one document


def _read_jsonl(path: Path) -> Iterator[str]:
    with _open_text(path) as handle:
        for lineno, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise MythosError(f"{path}:{lineno} is not valid JSON ({exc.msg}): fix the line or remove it") from exc
            if not isinstance(record, dict) or "text" not in record:
                raise MythosError(
                    f"{path}:{lineno} has no `text` field: each JSONL line must be an object with `text`; "
                    "fix the line or remove it"
                )
            if isinstance(record["text"], str):
                yield record["text"]


def _read_parquet(path: Path) -> Iterator[str]:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise MythosError(f"reading {path} needs pyarrow: pip install 'mythos-convert[parquet]'") from exc
    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid and friends
        raise MythosError(
            f"{path} is not a readable Parquet file ({str(exc)[:120]}): re-copy it or leave it out"
        ) from exc
    if "text" not in parquet.schema_arrow.names:
        raise MythosError(
            f"{path} has no `text` column (columns: {parquet.schema_arrow.names[:8]}): rename the text column "
            "to `text` or leave the file out"
        )
    for batch in parquet.iter_batches(columns=["text"]):
        yield from (t for t in batch.column(0).to_pylist() if isinstance(t, str))


def _reader(path: Path):
    suffix = _base_suffix(path)
    if suffix in JSONL_SUFFIXES:
        return _read_jsonl
    if suffix in PARQUET_SUFFIXES:
        return _read_parquet
    return _read_text_file


def data_files(paths: list[str | Path]) -> list[Path]:
    """Expand files and folders (recursively, sorted, hidden entries skipped) into data files."""
    known = TEXT_SUFFIXES + JSONL_SUFFIXES + PARQUET_SUFFIXES
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
                and _base_suffix(p) in known
            )
            if not found:
                raise MythosError(
                    f"data folder {path} holds no .txt, .md, .jsonl or .parquet files: pass a folder with such files"
                )
            files.extend(found)
        else:
            files.append(require_file(path, "data path", "pass a text, JSONL or Parquet file, or a folder"))
    return files


def read_documents(paths: list[str | Path]) -> Corpus:
    """Read every document of the given files/folders: text files whole, JSONL/Parquet by `text`.

    Raises:
        MythosError: a missing or unreadable path, a file that is not UTF-8, a bad JSONL line.
    """
    files = data_files(paths)
    texts: list[str] = []
    for path in files:
        try:
            texts.extend(_reader(path)(path))
        except UnicodeDecodeError as exc:
            raise MythosError(f"data file {path} is not UTF-8 text: convert it or leave it out") from exc
        except (OSError, EOFError) as exc:
            raise MythosError(
                f"cannot read data file {path}: {exc.strerror or exc}; check its permissions or leave it out"
            ) from exc
    name = ", ".join(str(p) for p in paths)
    return Corpus(name=name, texts=texts, sources=[str(p) for p in files])


def load_corpus(paths: list[str | Path] | None) -> Corpus:
    """The user's files, or the embedded default corpus when `paths` is empty."""
    if paths:
        return read_documents(paths)
    return Corpus(name=embedded_corpus_name(), texts=embedded_corpus(), sources=["embedded:python-stdlib"])
