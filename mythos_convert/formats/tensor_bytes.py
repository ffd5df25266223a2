"""Moving one tensor's payload into a file: byte-range copies, NaN/Inf checks, casts, page release.

The safetensors writer (`formats.safetensors.write_safetensors`) lays files out; this module moves
the bytes under that layout, one tensor at a time, so peak memory is about one tensor:

- a tensor already stored contiguously in the export dtype is copied byte for byte from the
  checkpoint (`os.copy_file_range`, else through a small buffer), with no torch at all; its
  NaN/Inf check (`RangeReader.finite`) reads the range again, on a second thread;
- anything else (a torch tensor) is cast with torch and checked (`cast_checked`), and the
  checkpoint's mapped pages under it are given back afterwards (`PageReleaser`).
"""

from __future__ import annotations

import ctypes
import mmap
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mythos_convert.errors import MythosError
from mythos_convert.formats.dtypes import torch_dtype

if TYPE_CHECKING:  # imported where used: a byte copy never loads torch
    import torch

_CHUNK = 4 << 20  # bytes read and checked at a time: the two passes of min/max hit the cache
# dtype -> mask of the exponent bits of a 16-bit float: all ones means Inf or NaN
_EXPONENT16 = {"bfloat16": 0x7F80, "float16": 0x7C00}
_MADV_DONTNEED = 4
_PAGE = mmap.PAGESIZE
_SHRANK = "checkpoint file shrank while it was being read: re-copy it and retry"


def nonfinite_error(name: str, after_cast: bool) -> MythosError:
    """The refusal of NaN/Inf weights, naming the tensor and whether the cast caused it."""
    cause = " after casting (values overflow the dtype)" if after_cast else ""
    return MythosError(
        f"tensor {name} holds NaN or Inf values{cause}: the checkpoint is damaged "
        "(or pass --allow-nonfinite to export it anyway)"
    )


# --- byte copies and their NaN/Inf check ------------------------------------------------------


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


class RangeReader:
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
                raise MythosError(_SHRANK)
            yield view[:got]
            offset += got

    def finite(self, offset: int, count: int, dtype: str) -> bool:
        """Are the `dtype` values in bytes [offset, offset + count) all finite?"""
        # a chunk boundary never splits a value: chunks and tensor starts are multiples of the item size
        return all(finite(chunk, dtype) for chunk in self.chunks(offset, count))


class RangeCopier:
    """Appends byte ranges of file `source` to file `dest`: in the kernel where it can, else through a buffer."""

    def __init__(self, source: int, dest: int):
        self.source, self.dest = source, dest
        self.kernel_copy = hasattr(os, "copy_file_range")
        self.reader: RangeReader | None = None

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
                raise MythosError(_SHRANK)
            done += moved
        return True

    def copy(self, offset: int, count: int) -> None:
        if self.kernel_copy and self._kernel_copy(offset, count):
            return
        self.reader = self.reader or RangeReader(self.source)
        for chunk in self.reader.chunks(offset, count):
            self.write(chunk)


# --- torch tensors: cast, check, write, give the pages back -----------------------------------


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


def payload(tensor: Any) -> memoryview:
    """A contiguous torch tensor's bytes, without a copy."""
    import torch

    return memoryview(tensor.reshape(-1).view(torch.uint8).numpy())
