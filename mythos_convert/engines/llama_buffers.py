"""Where llama.cpp keeps a model's weights on the CPU: its plain buffer, or its repacked layouts.

At load, llama.cpp can move weights into "extra buffer types": AMX (CPUs that report AMX_INT8)
and CPU_REPACK (rows interleaved for its gemm kernels, e.g. Q4_0 in 8x8 blocks), each tensor into
the first one that takes it. llama-cpp-python loads with them on. Its AMX matmul crashes
(llama.cpp issue 20824; rc 139 for Q4_0, Q8_0 and K-quant files on Sapphire Rapids with
llama-cpp-python 0.3.36, research/gguf.md section 5), so nothing here loads with AMX:

- `no_extra_buffers()`: every weight in the plain CPU buffer (`use_extra_bufts=False`). Right on
  every CPU; verify runs this way and its gates were measured on it.
- `repacked_weights()`: the extra buffer types with AMX taken out of llama.cpp's list for the
  load, so what CPU_REPACK takes is repacked, as llama.cpp itself runs a model on a CPU without
  AMX (eval's Q4_0 files; the llama.cpp server wrapper). The list is ggml's own (`ggml_backend_dev_get_extra_bufts`, a static array) and is put back
  after the load: the model keeps its own copy, later loads see llama.cpp's list unchanged.
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Iterator

REPACK = "CPU_REPACK"  # ggml's name of the repacked buffer type
AMX = "AMX"


@contextlib.contextmanager
def _extra_bufts(on: bool) -> Iterator[None]:
    """Models loaded meanwhile get `use_extra_bufts=on` (llama-cpp-python does not expose it)."""
    import llama_cpp.llama_cpp as lib

    original = lib.llama_model_default_params

    def params():
        p = original()
        p.use_extra_bufts = on
        return p

    lib.llama_model_default_params = params
    try:
        yield
    finally:
        lib.llama_model_default_params = original


def no_extra_buffers() -> contextlib.AbstractContextManager[None]:
    """Load llama.cpp models with every weight in the plain CPU buffer (no AMX, no repack)."""
    return _extra_bufts(False)


def _extra_list() -> tuple[ctypes.Array | None, list[tuple[int, str]]]:
    """(ggml's NULL-terminated extra buffer type array for the CPU, its [(pointer, name)]), or (None, [])
    when this ggml does not answer (a build without the CPU device registered, or another API)."""
    try:
        from llama_cpp._ggml import libggml
    except (ImportError, OSError):
        return None, []
    try:
        by_type = libggml.ggml_backend_dev_by_type
        reg_of = libggml.ggml_backend_dev_backend_reg
        proc = libggml.ggml_backend_reg_get_proc_address
        name_of = libggml.ggml_backend_buft_name
    except AttributeError:
        return None, []
    by_type.restype, by_type.argtypes = ctypes.c_void_p, [ctypes.c_int]
    reg_of.restype, reg_of.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
    proc.restype, proc.argtypes = ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_char_p]
    name_of.restype, name_of.argtypes = ctypes.c_char_p, [ctypes.c_void_p]
    device = by_type(0)  # GGML_BACKEND_DEVICE_TYPE_CPU
    if not device:
        return None, []
    address = proc(reg_of(device), b"ggml_backend_dev_get_extra_bufts")
    if not address:
        return None, []
    get = ctypes.CFUNCTYPE(ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p)(address)
    array = get(device)
    entries, i = [], 0
    while array and array[i]:
        entries.append((array[i], name_of(array[i]).decode()))
        i += 1
    return ctypes.cast(array, ctypes.POINTER(ctypes.c_void_p * (i + 1))).contents, entries


def extra_buffer_names() -> list[str]:
    """llama.cpp's extra buffer types on this CPU, in the order it tries them (e.g. ['AMX', 'CPU_REPACK'])."""
    return [name for _, name in _extra_list()[1]]


@contextlib.contextmanager
def repacked_weights() -> Iterator[bool]:
    """Load llama.cpp models with CPU_REPACK and without AMX; yields whether CPU_REPACK is there.

    Without it (a build without repack, a ggml that does not answer), the load is plain, as
    `no_extra_buffers`, and False says so.
    """
    array, entries = _extra_list()
    if array is None or not any(name == REPACK for _, name in entries):
        with no_extra_buffers():
            yield False
        return
    kept = [pointer for pointer, name in entries if name != AMX]
    saved = list(array)
    for i in range(len(array)):
        array[i] = kept[i] if i < len(kept) else None
    try:
        if AMX in extra_buffer_names():  # a ggml that hands out copies: the load would still reach AMX
            with no_extra_buffers():
                yield False
        else:
            with _extra_bufts(True):
                yield True
    finally:
        for i, pointer in enumerate(saved):
            array[i] = pointer


def can_repack() -> bool:
    """Whether `repacked_weights()` would load with CPU_REPACK (and without AMX) here: what a caller
    names its engine by before it loads."""
    with repacked_weights() as repacked:
        return repacked
