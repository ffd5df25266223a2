"""The file names of a split GGUF (gguf-split's `name-00001-of-00003.gguf`), defined once.

The writer names its shards with `shard_paths`; every reader (verify, eval, the card, push's
checks) finds the others from the first with `shard_names`, and skips later shards with
`is_later_shard`. gguf-py only: no torch.
"""

from __future__ import annotations

import re
from pathlib import Path

import gguf

_FIRST_SHARD = re.compile(r"-00001-of-(\d{5})\.gguf$")
_LATER_SHARD = re.compile(r"-(?!00001)\d{5}-of-\d{5}\.gguf$")


def shard_paths(path: Path, n_shards: int) -> list[Path]:
    """gguf-split naming: `name-00001-of-00003.gguf` (a single file keeps its name)."""
    if n_shards <= 1:
        return [path]
    return [path.with_name(gguf.SHARD_NAME_FORMAT.format(path.stem, i + 1, n_shards)) for i in range(n_shards)]


def shard_names(name: str, n_shards: int) -> list[str]:
    """The file names of a (possibly split) GGUF, given its first shard's name."""
    if n_shards <= 1:
        return [name]
    return [_FIRST_SHARD.sub(f"-{i:05d}-of-\\1.gguf", name) for i in range(1, n_shards + 1)]


def is_later_shard(name: str) -> bool:
    """A second or later shard of a split GGUF: read, verified and listed through its first."""
    return _LATER_SHARD.search(name) is not None


def split_count(reader: gguf.GGUFReader) -> int:
    """How many files the GGUF whose first shard `reader` reads is split into (1: not split)."""
    field = reader.get_field(gguf.Keys.Split.LLM_KV_SPLIT_COUNT)
    return int(field.contents()) if field is not None else 1
