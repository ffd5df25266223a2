"""Write a safetensors file one tensor at a time, giving back the checkpoint's mapped pages as it goes.

`safetensors.torch.save_file` needs every tensor of a file at once, so converting a memory-mapped
checkpoint keeps all its weight pages resident (plus every cast copy). Here the header is computed
from shapes and dtypes first, then each tensor is cast, checked and written, and the pages of the
source tensor are handed back to the kernel (`madvise(MADV_DONTNEED)`) when they belong to a
read-only file mapping, so peak memory is about one tensor. The bytes are exactly what `save_file`
writes for the same tensors (tested): compact JSON header with `__metadata__` first, tensors
sorted by name, padded with spaces to 8 bytes, little-endian data.
"""

from __future__ import annotations

import ctypes
import mmap
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from mythos_convert.convert.dtypes import dtype_name
from mythos_convert.convert.hf_layout import layout_header

_MADV_DONTNEED = 4
_PAGE = mmap.PAGESIZE


def header_bytes(specs: Mapping[str, tuple[tuple[int, ...], torch.dtype]], metadata: Mapping[str, str]) -> bytes:
    """The length-prefixed JSON header for tensors `name -> (shape, dtype)` laid out in name order."""
    return layout_header({name: (shape, dtype_name(dtype)) for name, (shape, dtype) in specs.items()}, metadata)


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


def write_file(
    path: Path,
    tensors: Mapping[str, torch.Tensor],
    dtype: torch.dtype,
    *,
    metadata: Mapping[str, str],
    prepare: Callable[[str, torch.Tensor], torch.Tensor],
    releaser: PageReleaser | None = None,
    advance: Callable[[int], None] | None = None,
) -> None:
    """Write `tensors` (cast to `dtype` by `prepare(name, tensor)`) as one safetensors file."""
    specs = {name: (tuple(t.shape), dtype) for name, t in tensors.items()}
    with open(path, "wb") as fh:
        fh.write(header_bytes(specs, metadata))
        for name in sorted(tensors):
            source = tensors[name]
            out = prepare(name, source)
            if out.dtype != dtype or tuple(out.shape) != specs[name][0] or not out.is_contiguous():
                raise AssertionError(f"prepare() returned {out.dtype} {tuple(out.shape)} for {name}")
            if out.numel():
                fh.write(out.reshape(-1).view(torch.uint8).numpy().data)
            if releaser is not None:
                releaser.release(source)
            del out
            if advance is not None:
                advance(source.numel())
