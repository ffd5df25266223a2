"""Write safetensors by copying tensor bytes straight from the checkpoint file, without torch.

When every exported tensor is stored contiguously in the checkpoint in the export dtype, its
safetensors data is exactly its bytes in the checkpoint file (both little-endian, row-major). So
each file is the header (`hf_layout.layout_header`) followed by byte ranges of the checkpoint,
moved by the kernel (`os.copy_file_range`, falling back to `write` from a mapping) with no
conversion. The NaN/Inf refusal reads each range once through a short-lived mapping (numpy on the
mapped pages, a few MiB at a time), so peak memory stays at one window, not the model. The bytes
written are those of the torch path (tested), which stays the path for casts and for verify.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from mythos_convert.convert.hf_layout import (
    SAFETENSORS_METADATA,
    layout_header,
    nonfinite_error,
    plan_shards,
    write_index,
)
from mythos_convert.convert.names import convert_name
from mythos_convert.convert.torch_zip import TensorRef
from mythos_convert.errors import MythosError
from mythos_convert.ui import progress_task

WINDOW = 64 << 20  # bytes mapped at a time
_CHECK_CHUNK = 4 << 20  # bytes checked at a time, so the two passes of min/max hit the cache
_POPULATE = getattr(mmap, "MAP_POPULATE", 0)  # fault the window in at once (Linux)
# dtype -> mask of the exponent bits of a 16-bit float: all ones means Inf or NaN
_EXPONENT16 = {"bfloat16": 0x7F80, "float16": 0x7C00}


def finite(view: memoryview, dtype: str) -> bool:
    """No NaN/Inf among the little-endian `dtype` values in `view`."""
    for start in range(0, len(view), _CHECK_CHUNK):
        chunk = view[start : start + _CHECK_CHUNK]
        if dtype == "float32":  # min and max propagate NaN and show Inf
            values = np.frombuffer(chunk, dtype=np.float32)
            if not (np.isfinite(values.min()) and np.isfinite(values.max())):
                return False
        else:
            bits = np.frombuffer(chunk, dtype="<u2") & 0x7FFF
            if int(bits.max()) >= _EXPONENT16[dtype]:
                return False
    return True


class _RangeCopier:
    """Copies byte ranges of `source` to the end of `dest`, checking them on the way when asked."""

    def __init__(self, source: int, dest: int):
        self.source, self.dest = source, dest
        self.kernel_copy = hasattr(os, "copy_file_range")

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

    def copy(self, offset: int, count: int, check: Callable[[memoryview], bool] | None) -> bool:
        """Append `count` bytes from `offset`; return False (stopping there) if `check` fails on them."""
        for start in range(offset, offset + count, WINDOW):
            size = min(WINDOW, offset + count - start)
            if check is None and self.kernel_copy and self._kernel_copy(start, size):
                continue
            base = start - start % mmap.ALLOCATIONGRANULARITY
            with mmap.mmap(
                self.source, start + size - base, flags=mmap.MAP_SHARED | _POPULATE, prot=mmap.PROT_READ, offset=base
            ) as mapped:
                with memoryview(mapped) as whole, whole[start - base :] as view:
                    if check is not None and not check(view):
                        return False
                    if not (self.kernel_copy and self._kernel_copy(start, size)):
                        self.write(view)
        return True


def copyable(weights: Mapping[str, object], dtype: str) -> bool:
    """Can these tensors be exported as `dtype` by copying their bytes (no cast, no re-layout)?"""
    return all(isinstance(t, TensorRef) and t.dtype == dtype and t.is_contiguous() for t in weights.values())


def write_safetensors_copy(
    folder: Path,
    weights: Mapping[str, TensorRef],
    source_file: Path,
    dtype: str,
    *,
    max_shard_size: int | str = "5GB",
    allow_nonfinite: bool = False,
) -> list[str]:
    """`hf_weights.write_safetensors` for tensors that `copyable` accepts: same files, same bytes, no torch."""
    hf_names = {convert_name(n, "native", "hf"): n for n in weights}
    split = plan_shards({hf: weights[n].shape for hf, n in hf_names.items()}, dtype, max_shard_size)
    total = sum(t.numel() for t in weights.values())
    check = None if allow_nonfinite else (lambda view: finite(view, dtype))
    with open(source_file, "rb") as src, progress_task("writing safetensors", total=total) as advance:
        for filename, names in split.filename_to_tensors.items():
            with open(folder / filename, "wb", buffering=0) as out:
                copier = _RangeCopier(src.fileno(), out.fileno())
                copier.write(
                    memoryview(
                        layout_header({hf: (weights[hf_names[hf]].shape, dtype) for hf in names}, SAFETENSORS_METADATA)
                    )
                )
                for hf in sorted(names):
                    tensor = weights[hf_names[hf]]
                    if tensor.nbytes and not copier.copy(*tensor.file_range(), check):
                        raise nonfinite_error(hf_names[hf], after_cast=False)
                    advance(tensor.numel())
    return write_index(folder, split)
