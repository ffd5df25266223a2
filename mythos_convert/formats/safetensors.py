"""Safetensors files: read their headers, plan shards, and write them with one writer.

Reading: a header is a few kilobytes at the start of each file, so the card counts parameters and
`push` checks an index's consistency without loading a weight; `hf_read` opens tensors through
`safe_open`. Writing: `write_safetensors` lays out each file exactly as `safetensors.save_file`
does (compact JSON header with `__metadata__` first, tensors in name order, padded to 8 bytes,
little-endian data; tested) and then writes each tensor's payload one at a time through
`formats.tensor_bytes`: a `torch_zip.TensorRef` already stored contiguously in the export dtype
is copied byte for byte from the checkpoint (no torch at all), anything else is cast with torch,
so peak memory is about one tensor, not the model.

Shards are planned by huggingface_hub's helper (its names, its index layout).
"""

from __future__ import annotations

import collections
import contextlib
import json
import math
import struct
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from mythos_convert.errors import MythosError
from mythos_convert.formats.dtypes import BY_CODE, BY_NAME
from mythos_convert.formats.tensor_bytes import (
    PageReleaser,
    RangeCopier,
    RangeReader,
    cast_checked,
    nonfinite_error,
    payload,
)
from mythos_convert.formats.torch_zip import TensorRef
from mythos_convert.model.config import short_repr
from mythos_convert.names import convert_name
from mythos_convert.support.safe_paths import inside
from mythos_convert.support.ui import progress_task

if TYPE_CHECKING:  # imported where used: a GGUF export never loads huggingface_hub
    from huggingface_hub import StateDictSplit

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
FILENAME_PATTERN = "model{suffix}.safetensors"
SAFETENSORS_METADATA = {"format": "pt"}
_MAX_HEADER = 100 * 1024 * 1024  # the safetensors format's own limit


# --- reading headers --------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorInfo:
    """One stored tensor: its name, dtype string (safetensors spelling), shape and file."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    file: str

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def read_header(path: str | Path) -> dict[str, dict]:
    """The JSON header of one safetensors file (tensor name -> dtype/shape/offsets), metadata dropped.

    Raises:
        MythosError: the file is missing, truncated or not safetensors.
    """
    path = Path(path)
    try:
        with path.open("rb") as fh:
            raw = fh.read(8)
            if len(raw) != 8:
                raise MythosError(f"weights file {path} is truncated (no safetensors header): re-export the folder")
            (size,) = struct.unpack("<Q", raw)
            if size <= 0 or size > _MAX_HEADER:
                raise MythosError(
                    f"weights file {path} is not a safetensors file (bad header size {size}): re-export the folder"
                )
            text = fh.read(size)
    except OSError as exc:
        raise MythosError(
            f"cannot read weights file {path}: {exc.strerror or exc}; check its permissions or re-export the folder"
        ) from exc
    if len(text) != size:
        raise MythosError(f"weights file {path} is truncated (header cut short): re-export the folder")
    try:
        header = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MythosError(f"weights file {path} has a corrupt safetensors header: re-export the folder") from exc
    if not isinstance(header, dict):
        raise MythosError(f"weights file {path} has a corrupt safetensors header: re-export the folder")
    header.pop("__metadata__", None)
    if not all(isinstance(v, dict) for v in header.values()):
        raise MythosError(f"weights file {path} has a corrupt safetensors header: re-export the folder")
    for name, entry in header.items():
        if entry.get("dtype") not in BY_CODE:  # a Llama folder's weights; anything else is a corrupt header
            raise MythosError(
                f"tensor {name} in {path} is stored as {entry.get('dtype')}, not a float type "
                f"({', '.join(BY_CODE)}): the weights file is corrupt or not a Llama model; re-export the folder"
            )
    _check_layout(path, header)
    return header


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_layout(path: Path, header: dict[str, dict]) -> None:
    """Shapes and offsets as the safetensors format requires them: whole numbers, each tensor's bytes
    its shape times its dtype's size, the tensors back to back from offset 0 (so none overlaps).

    Every reader of a header (the card, push's checks) then trusts these numbers; without this a
    shape of "abc" or offsets of 5 ended as a TypeError in whichever read it first.
    """
    spans = []
    for name, entry in header.items():
        shape, offsets = entry.get("shape"), entry.get("data_offsets")
        if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
            raise MythosError(
                f"tensor {name} in {path} has shape {short_repr(shape)}, not a list of sizes: the safetensors "
                "header is corrupt; re-export the folder"
            )
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_count(o) for o in offsets)):
            raise MythosError(
                f"tensor {name} in {path} has data_offsets {short_repr(offsets)}, not [begin, end]: the "
                "safetensors header is corrupt; re-export the folder"
            )
        size = math.prod(shape) * BY_CODE[entry["dtype"]].itemsize
        if offsets[1] - offsets[0] != size:
            raise MythosError(
                f"tensor {name} in {path} spans bytes {offsets} but its shape {shape} needs {size}: the "
                "safetensors header is corrupt; re-export the folder"
            )
        spans.append((offsets[0], offsets[1], name))
    end = 0
    for begin, stop, name in sorted(spans):
        if begin != end:
            raise MythosError(
                f"tensor {name} in {path} starts at byte {begin}, not {end} where the previous one ends "
                "(overlapping or gapped data): the safetensors header is corrupt; re-export the folder"
            )
        end = stop


def weight_files(folder: str | Path) -> list[str]:
    """The weight files of a folder: the index's shards when there is an index, else *.safetensors."""
    folder = Path(folder)
    index = inside(folder, INDEX_FILE)
    if index.is_file():
        return sorted(set(read_index(folder).values()))
    return sorted(p.name for p in folder.glob("*.safetensors") if inside(folder, p.name))


def read_index(folder: str | Path) -> dict[str, str]:
    """The `weight_map` of a sharded folder (tensor name -> shard file), every shard inside the folder.

    Raises:
        MythosError: not a valid index, or a shard name that escapes the folder or is a link.
    """
    path = inside(folder, INDEX_FILE)
    try:
        data = json.loads(path.read_text())
        weight_map = data["weight_map"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise MythosError(f"{path} is not a valid safetensors index (no weight_map): re-export the folder") from exc
    if not isinstance(weight_map, dict):
        raise MythosError(f"{path} has a weight_map that is not a mapping: re-export the folder")
    for name in sorted({str(v) for v in weight_map.values()}):
        inside(folder, name, f"shard listed in {INDEX_FILE}")
    return {str(k): str(v) for k, v in weight_map.items()}


def read_tensors(folder: str | Path) -> dict[str, TensorInfo]:
    """Every tensor stored in the folder's weight files, by name (headers only)."""
    folder = Path(folder)
    tensors: dict[str, TensorInfo] = {}
    for name in weight_files(folder):
        for tensor, entry in read_header(folder / name).items():
            tensors[tensor] = TensorInfo(tensor, str(entry.get("dtype")), tuple(entry.get("shape", ())), name)
    return tensors


# --- layout: shards, index, header ------------------------------------------------------------


def plan_shards(shapes: Mapping[str, tuple[int, ...]], dtype: str, max_shard_size: int | str) -> StateDictSplit:
    """huggingface_hub's shard plan for tensors `hf name -> shape` stored as `dtype`, in the given order.

    The same plan `split_torch_state_dict_into_shards` makes for meta tensors (no storage ids,
    sizes numel x itemsize), without its torch imports (torch.distributed alone costs a second).
    """
    from huggingface_hub import split_state_dict_into_shards_factory

    itemsize = BY_NAME[dtype].itemsize
    try:
        return split_state_dict_into_shards_factory(
            dict(shapes),
            get_storage_size=lambda shape: math.prod(shape) * itemsize,
            filename_pattern=FILENAME_PATTERN,
            max_shard_size=max_shard_size,
        )
    except ValueError as exc:
        raise MythosError(
            f"--max-shard-size {max_shard_size!r} is not a size ({exc}): pass e.g. --max-shard-size 5GB or 500MB"
        ) from exc


def write_index(folder: Path, split: StateDictSplit) -> list[str]:
    """The index file when sharded; return the weight files written (and the index)."""
    if split.is_sharded:
        index = {"metadata": dict(split.metadata), "weight_map": dict(sorted(split.tensor_to_filename.items()))}
        (folder / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
        return [*split.filename_to_tensors, INDEX_FILE]
    return list(split.filename_to_tensors)


def layout_header(specs: Mapping[str, tuple[tuple[int, ...], str]], metadata: Mapping[str, str]) -> bytes:
    """The length-prefixed safetensors header for `name -> (shape, dtype name)`, tensors in name order.

    Exactly what `safetensors.save_file` writes: compact JSON with `__metadata__` first, padded
    with spaces to 8 bytes.
    """
    header: dict[str, object] = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for name in sorted(specs):
        shape, dtype = specs[name]
        code, itemsize = BY_NAME[dtype].code, BY_NAME[dtype].itemsize
        size = math.prod(shape) * itemsize
        header[name] = {"dtype": code, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text


# --- the writer -------------------------------------------------------------------------------


def copyable(tensor: Any, dtype: str) -> bool:
    """Can this tensor be written as `dtype` by copying its bytes from the checkpoint (no cast, no re-layout)?"""
    return isinstance(tensor, TensorRef) and tensor.dtype == dtype and tensor.is_contiguous()


class _ShardWriter:
    """Writes shard files: the header, then each tensor's payload, byte-copied or cast.

    A copied tensor's NaN/Inf check runs on the `checker` thread while the kernel copies it; the
    copy runs at most one tensor ahead of the check, and any failure raises before the write ends.
    """

    def __init__(self, source: BinaryIO | None, checker: Executor, dtype: str, allow_nonfinite: bool, releaser):
        self.source, self.checker, self.releaser = source, checker, releaser
        self.dtype, self.allow_nonfinite = dtype, allow_nonfinite
        self.reader = RangeReader(source.fileno()) if source is not None else None  # the checker thread's buffer
        self.pending: collections.deque[tuple[str, Future[bool]]] = collections.deque()

    def write_file(self, path: Path, tensors: Mapping[str, tuple[str, Any]], advance: Callable[[int], None]) -> None:
        """One file holding `tensors` (hf name -> (native name, tensor)), in name order."""
        with open(path, "wb", buffering=0) as out:
            copier = RangeCopier(self.source.fileno() if self.source is not None else -1, out.fileno())
            specs = {hf: (tuple(tensor.shape), self.dtype) for hf, (_, tensor) in tensors.items()}
            copier.write(memoryview(layout_header(specs, SAFETENSORS_METADATA)))
            for hf in sorted(tensors):
                native, tensor = tensors[hf]
                if copyable(tensor, self.dtype):
                    self._copy(copier, native, tensor)
                else:
                    self._cast(copier, native, tensor)
                advance(tensor.numel())
                self.settle(keep=1)

    def _copy(self, copier: RangeCopier, native: str, tensor: TensorRef) -> None:
        if self.reader is None:
            raise ValueError("a byte-copied tensor needs its source_file")
        if tensor.nbytes and not self.allow_nonfinite:
            self.pending.append((native, self.checker.submit(self.reader.finite, *tensor.file_range(), self.dtype)))
        if tensor.nbytes:
            copier.copy(*tensor.file_range())

    def _cast(self, copier: RangeCopier, native: str, tensor: Any) -> None:
        cast = cast_checked(native, tensor, self.dtype, self.allow_nonfinite)
        if cast.numel():
            copier.write(payload(cast))
        self.releaser.release(tensor)

    def settle(self, keep: int) -> None:
        """Wait for the checks until at most `keep` are pending; raise for the first that failed."""
        while len(self.pending) > keep:
            name, verdict = self.pending.popleft()
            if not verdict.result():
                raise nonfinite_error(name, after_cast=False)


def write_safetensors(
    folder: Path,
    weights: Mapping[str, Any],
    dtype: str,
    *,
    max_shard_size: int | str = "5GB",
    allow_nonfinite: bool = False,
    source_file: Path | None = None,
) -> list[str]:
    """Write native `weights` under HF names into `folder` as `dtype`; return the file names written.

    Single file `model.safetensors`, or `model-0000k-of-0000n.safetensors` plus the index when the
    total exceeds `max_shard_size` (a tensor larger than that gets a shard of its own). Tensors
    that `copyable` accepts are copied from `source_file` (the checkpoint) without torch; the rest
    are cast with torch, and the pages of `source_file`'s mapping under them are given back.
    The tied head is stored once, as the embedding.

    Raises:
        MythosError: a tensor holding NaN/Inf (unless `allow_nonfinite`), naming it.
    """
    hf_names = {convert_name(n, "native", "hf"): n for n in weights}
    split = plan_shards({hf: tuple(weights[n].shape) for hf, n in hf_names.items()}, dtype, max_shard_size)
    total = sum(t.numel() for t in weights.values())
    copies = any(copyable(t, dtype) for t in weights.values())
    releaser = PageReleaser(source_file)  # finds no mapping when nothing was loaded through torch
    with contextlib.ExitStack() as stack:
        source = stack.enter_context(open(source_file, "rb")) if copies and source_file is not None else None
        checker = stack.enter_context(ThreadPoolExecutor(1))
        advance = stack.enter_context(progress_task("writing safetensors", total=total))
        writer = _ShardWriter(source, checker, dtype, allow_nonfinite, releaser)
        for filename, names in split.filename_to_tensors.items():
            writer.write_file(folder / filename, {hf: (hf_names[hf], weights[hf_names[hf]]) for hf in names}, advance)
        writer.settle(keep=0)
    return write_index(folder, split)
