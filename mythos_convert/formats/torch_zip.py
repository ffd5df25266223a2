"""Read a `torch.save` zip file without importing torch: plain values, and tensors as file byte ranges.

A torch checkpoint is an uncompressed zip: `<name>/data.pkl` (the pickled object graph) plus one
record `<name>/data/<key>` per storage. Unpickling `data.pkl` with a restricted `Unpickler` that
maps `torch._utils._rebuild_tensor_v2` and the storage classes to small descriptors (the approach
of llama.cpp's former `convert.py` "LazyUnpickler") yields the checkpoint's dicts, numbers and
strings with every tensor as a `TensorRef`: dtype, shape, stride, and where its bytes lie in the
file. Nothing is read beyond the pickle, and importing torch (about 2 s) is avoided.

Anything this reader does not understand exactly (another global in the pickle, a compressed
record, big-endian data, a legacy non-zip file, a torn zip) raises `NotPlain`; callers then use
`torch.load`, which gives the proper error or the proper result. Only globals on the allow-list are
ever resolved, so reading is as safe as `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import collections
import math
import os
import pickle
import struct
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# torch's legacy storage class names -> (dtype name, bytes per element)
STORAGE_DTYPES = {
    "FloatStorage": ("float32", 4),
    "HalfStorage": ("float16", 2),
    "BFloat16Storage": ("bfloat16", 2),
    "DoubleStorage": ("float64", 8),
    "LongStorage": ("int64", 8),
    "IntStorage": ("int32", 4),
    "ShortStorage": ("int16", 2),
    "CharStorage": ("int8", 1),
    "ByteStorage": ("uint8", 1),
    "BoolStorage": ("bool", 1),
}
_LOCAL_HEADER = struct.Struct("<IHHHHHIIIHH")  # zip local file header, 30 bytes
_LOCAL_MAGIC = 0x04034B50


class NotPlain(Exception):
    """The file is not a checkpoint this reader can describe exactly: use torch.load instead."""


@dataclass(frozen=True)
class StorageRef:
    """One storage record of the zip: its dtype and where its bytes start in the file."""

    key: str
    dtype: str
    itemsize: int
    numel: int
    file_offset: int


@dataclass(frozen=True)
class TensorRef:
    """A tensor described, not loaded: a view (offset, shape, stride in elements) of a storage."""

    storage: StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    @property
    def dtype(self) -> str:
        return self.storage.dtype

    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel() * self.storage.itemsize

    def data_ptr(self) -> int:
        """Where the first element lies in the file: equal for views that start at the same byte."""
        return self.storage.file_offset + self.offset * self.storage.itemsize

    def is_contiguous(self) -> bool:
        """Row-major and dense, the layout safetensors stores (strict: size-1 dims need their usual stride)."""
        expected, step = [], 1
        for size in reversed(self.shape):
            expected.append(step)
            step *= size
        return tuple(reversed(expected)) == self.stride

    def file_range(self) -> tuple[int, int]:
        """(first byte, byte count) of the tensor's data in the file; only meaningful when contiguous."""
        return self.data_ptr(), self.nbytes


def _rebuild_tensor(storage: Any, offset: Any, shape: Any, stride: Any, *_: Any) -> TensorRef:
    if not isinstance(storage, StorageRef) or not isinstance(offset, int):
        raise NotPlain("unexpected tensor arguments")
    shape, stride = tuple(shape), tuple(stride)
    if len(shape) != len(stride) or not all(isinstance(v, int) and v >= 0 for v in (*shape, *stride)):
        raise NotPlain("unexpected tensor shape")
    ref = TensorRef(storage, offset, shape, stride)
    if ref.numel() and offset + sum((s - 1) * st for s, st in zip(shape, stride, strict=True)) >= storage.numel:
        raise NotPlain("tensor reaches past its storage")
    return ref


def _rebuild_parameter(data: Any, *_: Any) -> Any:
    if not isinstance(data, TensorRef):
        raise NotPlain("unexpected parameter")
    return data


class _StorageType:
    def __init__(self, name: str):
        self.dtype, self.itemsize = STORAGE_DTYPES[name]


_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name) for name in STORAGE_DTYPES},
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, storages: dict[str, tuple[int, int]]):
        import io

        super().__init__(io.BytesIO(data))
        self.storages = storages  # key -> (file offset, byte count) of its record
        self.seen: dict[str, StorageRef] = {}

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _GLOBALS[(module, name)]
        except KeyError:
            raise NotPlain(f"global {module}.{name}") from None

    def persistent_load(self, pid: Any) -> StorageRef:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise NotPlain("unexpected persistent id")
        _, kind, key, _location, numel = pid
        if not isinstance(kind, _StorageType) or not isinstance(key, str) or not isinstance(numel, int):
            raise NotPlain("unexpected storage")
        if key in self.seen:
            ref = self.seen[key]
            if (ref.dtype, ref.numel) != (kind.dtype, numel):
                raise NotPlain("storage seen with two dtypes")
            return ref
        if key not in self.storages:
            raise NotPlain(f"storage record {key} missing")
        offset, size = self.storages[key]
        if size != numel * kind.itemsize:
            raise NotPlain(f"storage record {key} has {size} bytes, not {numel * kind.itemsize}")
        ref = self.seen[key] = StorageRef(key, kind.dtype, kind.itemsize, numel, offset)
        return ref


def _data_offset(fh: Any, info: zipfile.ZipInfo, file_size: int) -> int:
    """Where a stored record's bytes start: after its local header (name and extra field vary)."""
    fh.seek(info.header_offset)
    header = fh.read(_LOCAL_HEADER.size)
    if len(header) != _LOCAL_HEADER.size:
        raise NotPlain("torn zip")
    fields = _LOCAL_HEADER.unpack(header)
    if fields[0] != _LOCAL_MAGIC:
        raise NotPlain("bad local header")
    start = info.header_offset + _LOCAL_HEADER.size + fields[9] + fields[10]
    if start + info.file_size > file_size:
        raise NotPlain("record reaches past the end of the file")
    return start


def read_torch_zip(path: str | Path) -> Any:
    """The object `torch.load(path, weights_only=True)` returns, with every tensor as a `TensorRef`.

    Raises:
        NotPlain: anything not described exactly (the caller falls back to torch.load).
    """
    if sys.byteorder != "little":
        raise NotPlain("big-endian host")
    path = Path(path)
    try:
        file_size = os.path.getsize(path)
        with open(path, "rb") as fh, zipfile.ZipFile(fh) as archive:
            infos = archive.infolist()
            pickles = [i for i in infos if i.filename.endswith("/data.pkl") and i.filename.count("/") == 1]
            if len(pickles) != 1:
                raise NotPlain("no single data.pkl")
            prefix = pickles[0].filename[: -len("data.pkl")]
            storages: dict[str, tuple[int, int]] = {}
            for info in infos:
                if not info.filename.startswith(prefix):
                    if not info.filename.startswith(".data/"):  # not a record torch writes
                        raise NotPlain(f"unexpected record {info.filename}")
                    continue
                rest = info.filename[len(prefix) :]
                if rest == "byteorder" and archive.read(info) != b"little":
                    raise NotPlain("big-endian data")
                if rest.startswith("data/"):
                    if info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size:
                        raise NotPlain("compressed storage record")
                    storages[rest[len("data/") :]] = (_data_offset(fh, info, file_size), info.file_size)
            data = archive.read(pickles[0])
    except (OSError, zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError) as exc:
        raise NotPlain(f"zip: {exc}") from exc
    try:
        return _Unpickler(data, storages).load()
    except NotPlain:
        raise
    except Exception as exc:  # torn or hostile pickle: torch.load names the problem
        raise NotPlain(f"pickle: {type(exc).__name__}") from exc


def contains_tensor(value: Any, budget: int = 10_000_000) -> bool:
    """Does a plain value (dicts, lists, tuples) hold a TensorRef anywhere?

    Iterative, so a value nested thousands deep is walked instead of raising RecursionError here.
    Past `budget` items (a pickle repeating one list exponentially) it answers True: the caller
    then takes the torch path, whose checkpoint reader refuses such values by name.
    """
    stack, seen = [value], 0
    while stack:
        item = stack.pop()
        seen += 1
        if isinstance(item, TensorRef) or seen > budget:
            return True
        if isinstance(item, dict):
            stack.extend(item.values())
            stack.extend(item)
        elif isinstance(item, (list, tuple, set, frozenset)):
            stack.extend(item)
    return False
