"""Write safetensors by copying tensor bytes straight from the checkpoint file, without torch.

When every exported tensor is stored contiguously in the checkpoint in the export dtype, its
safetensors data is exactly its bytes in the checkpoint file (both little-endian, row-major). So
each file is the header (`hf_layout.layout_header`) followed by byte ranges of the checkpoint,
moved by the kernel (`os.copy_file_range`, falling back to read/write through a buffer) with no
conversion. The NaN/Inf refusal reads each range once more into a small reused buffer (numpy
min/max, a few MiB at a time, faster here than mapping the pages) on a second thread, alongside
the copy; memory stays at a few MiB, not the model. The bytes
written are those of the torch path (tested), which stays the path for casts and for verify.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

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

_CHUNK = 4 << 20  # bytes read and checked at a time: the two passes of min/max hit the cache
# dtype -> mask of the exponent bits of a 16-bit float: all ones means Inf or NaN
_EXPONENT16 = {"bfloat16": 0x7F80, "float16": 0x7C00}


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
    with (
        open(source_file, "rb") as src,
        ThreadPoolExecutor(1) as checker,
        progress_task("writing safetensors", total=total) as advance,
    ):
        # The NaN/Inf check of a tensor runs on a second thread while the kernel copies it; the
        # copy runs at most one tensor ahead of the check, and any failure raises before return.
        pending: collections.deque[tuple[str, Future[bool]]] = collections.deque()
        reader = _Reader(src.fileno())  # the checker thread's own buffer

        def settle(keep: int) -> None:
            while len(pending) > keep:
                name, verdict = pending.popleft()
                if not verdict.result():
                    raise nonfinite_error(name, after_cast=False)

        for filename, names in split.filename_to_tensors.items():
            with open(folder / filename, "wb", buffering=0) as out:
                copier = _RangeCopier(src.fileno(), out.fileno())
                header = layout_header({hf: (weights[hf_names[hf]].shape, dtype) for hf in names}, SAFETENSORS_METADATA)
                copier.write(memoryview(header))
                for hf in sorted(names):
                    tensor = weights[hf_names[hf]]
                    if tensor.nbytes and not allow_nonfinite:
                        verdict = checker.submit(reader.finite, *tensor.file_range(), dtype)
                        pending.append((hf_names[hf], verdict))
                    if tensor.nbytes:
                        copier.copy(*tensor.file_range())
                    advance(tensor.numel())
                    settle(keep=1)
            settle(keep=0)
    return write_index(folder, split)
