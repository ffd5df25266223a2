"""Safetensors files: read their headers, plan shards, and write them with one writer.

Reading: a header is a few kilobytes at the start of each file, so the card counts parameters and
`push` checks an index's consistency without loading a weight; `hf_read` opens tensors through
`safe_open`. Writing: `write_safetensors` lays out each file exactly as `safetensors.save_file`
does (compact JSON header with `__metadata__` first, tensors in name order, padded to 8 bytes,
little-endian data; tested) and then writes each tensor's payload one at a time:

- a `torch_zip.TensorRef` already stored contiguously in the export dtype is copied byte for byte
  from the checkpoint (`os.copy_file_range`, else through a small buffer), with no torch at all;
  its NaN/Inf check reads the range again on a second thread alongside the copy;
- anything else (a torch tensor) is cast with torch, checked, written, and the checkpoint's mapped
  pages under it are given back (`PageReleaser`): peak memory is about one tensor, not the model.

Shards are planned by huggingface_hub's helper (its names, its index layout).
"""

from __future__ import annotations

import collections
import ctypes
import json
import math
import mmap
import os
import struct
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mythos_convert.errors import MythosError
from mythos_convert.formats.dtypes import BY_CODE, BY_NAME, torch_dtype
from mythos_convert.formats.torch_zip import TensorRef
from mythos_convert.model.config import short_repr
from mythos_convert.names import convert_name
from mythos_convert.support.safe_paths import inside
from mythos_convert.support.ui import progress_task

if TYPE_CHECKING:  # imported where used: a byte copy never loads torch, a GGUF export never huggingface_hub
    import torch
    from huggingface_hub import StateDictSplit

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
FILENAME_PATTERN = "model{suffix}.safetensors"
SAFETENSORS_METADATA = {"format": "pt"}
_MAX_HEADER = 100 * 1024 * 1024  # the safetensors format's own limit
_CHUNK = 4 << 20  # bytes read and checked at a time: the two passes of min/max hit the cache
# dtype -> mask of the exponent bits of a 16-bit float: all ones means Inf or NaN
_EXPONENT16 = {"bfloat16": 0x7F80, "float16": 0x7C00}
_MADV_DONTNEED = 4
_PAGE = mmap.PAGESIZE


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


def nonfinite_error(name: str, after_cast: bool) -> MythosError:
    """The refusal of NaN/Inf weights, naming the tensor and whether the cast caused it."""
    cause = " after casting (values overflow the dtype)" if after_cast else ""
    return MythosError(
        f"tensor {name} holds NaN or Inf values{cause}: the checkpoint is damaged "
        "(or pass --allow-nonfinite to export it anyway)"
    )


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


# --- payloads: byte copies and their NaN/Inf check --------------------------------------------


def finite(view: memoryview, dtype: str) -> bool:
    """No NaN/Inf among the little-endian `dtype` values in `view`."""
    import numpy as np  # here, so the checker thread pays its import (0.15 s) while the copy runs

    for start in range(0, len(view), _CHUNK):
        chunk = view[start : start + _CHUNK]
        if dtype == "float32":  # min and max propagate NaN and show Inf
            values = np.frombuffer(chunk, dtype=np.float32)
            if not (np.isfinite(values.min()) and np.isfinite(values.max())):
                return False
        else:
            bits = np.frombuffer(chunk, dtype="<u2") & 0x7FFF
            if int(bits.max()) >= _EXPONENT16[dtype]:
                return False
    return True


class _Reader:
    """Reads byte ranges of a file through one reusable buffer (a few MiB: it stays in the CPU cache)."""

    def __init__(self, fd: int):
        self.fd = fd
        self.buffer = memoryview(bytearray(_CHUNK))

    def chunks(self, offset: int, count: int) -> Iterator[memoryview]:
        """The range, chunk by chunk; each chunk is valid until the next is read."""
        end = offset + count
        while offset < end:
            view = self.buffer[: min(_CHUNK, end - offset)]
            got = os.preadv(self.fd, [view], offset)
            if got == 0:
                raise MythosError("checkpoint file shrank while it was being read: re-copy it and retry")
            yield view[:got]
            offset += got

    def finite(self, offset: int, count: int, dtype: str) -> bool:
        """Are the `dtype` values in bytes [offset, offset + count) all finite?"""
        # a chunk boundary never splits a value: chunks and tensor starts are multiples of the item size
        return all(finite(chunk, dtype) for chunk in self.chunks(offset, count))


class _RangeCopier:
    """Appends byte ranges of file `source` to file `dest`: in the kernel where it can, else through a buffer."""

    def __init__(self, source: int, dest: int):
        self.source, self.dest = source, dest
        self.kernel_copy = hasattr(os, "copy_file_range")
        self.reader: _Reader | None = None

    def write(self, view: memoryview) -> None:
        while view:
            view = view[os.write(self.dest, view) :]

    def _kernel_copy(self, offset: int, count: int) -> bool:
        """copy_file_range the range; False when the kernel or file system refuses before any byte moved."""
        done = 0
        while done < count:
            try:
                moved = os.copy_file_range(self.source, self.dest, count - done, offset + done)
            except OSError:
                if done:
                    raise
                self.kernel_copy = False
                return False
            if moved == 0:
                raise MythosError("checkpoint file shrank while it was being read: re-copy it and retry")
            done += moved
        return True

    def copy(self, offset: int, count: int) -> None:
        if self.kernel_copy and self._kernel_copy(offset, count):
            return
        self.reader = self.reader or _Reader(self.source)
        for chunk in self.reader.chunks(offset, count):
            self.write(chunk)


class PageReleaser:
    """Drops resident pages of tensors that live in a mapping of the checkpoint file (never anonymous memory).

    Dropping a page of a file mapping we never write to is harmless: the next access reads it from
    the file again. Anonymous memory would come back as zeros, so only ranges found in
    /proc/self/maps as mappings of `path` are touched. Does nothing where that is not available.
    """

    def __init__(self, path: str | Path | None):
        self.ranges: list[tuple[int, int]] = []
        if path is None:
            return
        target = str(Path(path).resolve())
        try:
            lines = Path("/proc/self/maps").read_text().splitlines()
            self.madvise = ctypes.CDLL(None, use_errno=True).madvise
        except (OSError, AttributeError):
            return
        for line in lines:
            parts = line.split(maxsplit=5)
            if len(parts) == 6 and parts[5] == target:  # a mapping of the checkpoint file itself
                start, end = (int(x, 16) for x in parts[0].split("-"))
                self.ranges.append((start, end))

    def release(self, tensor: torch.Tensor) -> None:
        if not self.ranges or tensor.device.type != "cpu":
            return
        begin = tensor.data_ptr()
        end = begin + tensor.numel() * tensor.element_size()
        begin = (begin + _PAGE - 1) // _PAGE * _PAGE  # only whole pages: neighbours may share the edges
        end = end // _PAGE * _PAGE
        if end <= begin or not any(lo <= begin and end <= hi for lo, hi in self.ranges):
            return
        self.madvise(ctypes.c_void_p(begin), ctypes.c_size_t(end - begin), _MADV_DONTNEED)


def copyable(tensor: Any, dtype: str) -> bool:
    """Can this tensor be written as `dtype` by copying its bytes from the checkpoint (no cast, no re-layout)?"""
    return isinstance(tensor, TensorRef) and tensor.dtype == dtype and tensor.is_contiguous()


def _finite_tensor(tensor: Any) -> bool:
    """No NaN/Inf in a torch tensor: min and max propagate NaN and show Inf, with no tensor-sized temporary."""
    import torch

    if not tensor.numel():
        return True
    low, high = tensor.aminmax()
    return bool(torch.isfinite(low) and torch.isfinite(high))


def cast_checked(name: str, tensor: Any, dtype: str, allow_nonfinite: bool) -> Any:
    """`tensor` cast to `dtype` (contiguous); refuse NaN/Inf, naming the tensor and whether the cast caused it."""
    out = tensor.to(torch_dtype(dtype)).contiguous()
    if not allow_nonfinite and not _finite_tensor(out):
        raise nonfinite_error(name, after_cast=_finite_tensor(tensor))
    return out


# --- the writer -------------------------------------------------------------------------------


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
    source = open(source_file, "rb") if copies and source_file is not None else None
    try:
        with ThreadPoolExecutor(1) as checker, progress_task("writing safetensors", total=total) as advance:
            # A copied tensor's NaN/Inf check runs on a second thread while the kernel copies it; the
            # copy runs at most one tensor ahead of the check, and any failure raises before return.
            pending: collections.deque[tuple[str, Future[bool]]] = collections.deque()
            reader = _Reader(source.fileno()) if source is not None else None  # the checker thread's buffer

            def settle(keep: int) -> None:
                while len(pending) > keep:
                    name, verdict = pending.popleft()
                    if not verdict.result():
                        raise nonfinite_error(name, after_cast=False)

            for filename, names in split.filename_to_tensors.items():
                with open(folder / filename, "wb", buffering=0) as out:
                    copier = _RangeCopier(source.fileno() if source is not None else -1, out.fileno())
                    specs = {hf: (tuple(weights[hf_names[hf]].shape), dtype) for hf in names}
                    copier.write(memoryview(layout_header(specs, SAFETENSORS_METADATA)))
                    for hf in sorted(names):
                        native, tensor = hf_names[hf], weights[hf_names[hf]]
                        if copyable(tensor, dtype):
                            if source is None or reader is None:
                                raise ValueError("a byte-copied tensor needs its source_file")
                            if tensor.nbytes and not allow_nonfinite:
                                pending.append((native, checker.submit(reader.finite, *tensor.file_range(), dtype)))
                            if tensor.nbytes:
                                copier.copy(*tensor.file_range())
                        else:
                            cast = cast_checked(native, tensor, dtype, allow_nonfinite)
                            if cast.numel():
                                copier.write(_payload(cast))
                            releaser.release(tensor)
                            del cast
                        advance(tensor.numel())
                        settle(keep=1)
                settle(keep=0)
    finally:
        if source is not None:
            source.close()
    return write_index(folder, split)


def _payload(tensor: Any) -> memoryview:
    """A contiguous torch tensor's bytes, without a copy."""
    import torch

    return memoryview(tensor.reshape(-1).view(torch.uint8).numpy())
