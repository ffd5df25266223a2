"""Read an HF Llama folder lazily: config, provenance, weight map, tensors opened one at a time.

`sources.open_hf` builds the folder's `ModelSource` on it. Tensors are opened with `safe_open`
one at a time, so reading never holds more than one tensor beyond the page cache; every path
read from the folder's files stays inside it. `get_array` reads without torch: numpy views of the
memory-mapped files, no copy (float32 and float16 stay in the page cache; bfloat16 is widened).
"""

from __future__ import annotations

import json
import mmap
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from safetensors import SafetensorError, safe_open

from mythos_convert.data.tokenizer import TOKENIZER_FILE
from mythos_convert.errors import MythosError
from mythos_convert.formats.dtypes import BY_CODE, BY_NAME
from mythos_convert.formats.hf_config import mythos_config_from_hf
from mythos_convert.formats.hf_folder import (
    CONFIG_FILE,
    GENERATION_FILE,
    LOCAL_FILE,
    META_FILE,
    SPECIAL_TOKENS_FILE,
    TOKENIZER_CONFIG_FILE,
    Provenance,
)
from mythos_convert.formats.safetensors import INDEX_FILE, SINGLE_FILE, read_header, read_index, weight_files
from mythos_convert.model.config import MythosConfig, short_repr
from mythos_convert.names import HF_IGNORED, convert_name
from mythos_convert.support.safe_paths import inside

if TYPE_CHECKING:  # imported where used: the constants above are read by `hf` without torch
    import torch

EMBED = convert_name("embedding.weight", "native", "hf")


# madvise(MADV_POPULATE_READ): Linux's value where Python's mmap module does not name it (3.11)
_POPULATE_READ = getattr(mmap, "MADV_POPULATE_READ", 22 if sys.platform.startswith("linux") else 0)


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MythosError(f"{what} {path} is not readable JSON ({exc}): re-export the folder") from exc
    if not isinstance(data, dict):
        raise MythosError(f"{what} {path} must hold a JSON object: re-export the folder")
    return data


@dataclass
class HFSource:
    """An HF Llama folder: `config` (MythosConfig), `config_json`, `provenance` (mythos.json, if any), weights."""

    folder: Path
    config: MythosConfig
    config_json: dict[str, Any]
    weight_map: dict[str, str]  # hf tensor name -> file name inside folder
    provenance: Provenance | None = None  # mythos.json with .mythos-local.json, when we wrote the folder
    _mapped: dict[str, tuple[mmap.mmap, int, dict]] = field(default_factory=dict, repr=False)
    _last: tuple[mmap.mmap, int, int] | None = field(default=None, repr=False)

    @property
    def tokenizer_path(self) -> Path | None:
        path = inside(self.folder, TOKENIZER_FILE)
        return path if path.is_file() else None

    def files(self) -> list[Path]:
        """Every file of the folder this source reads: what no output may replace."""
        names = [CONFIG_FILE, GENERATION_FILE, META_FILE, LOCAL_FILE, INDEX_FILE, TOKENIZER_FILE]
        names += weight_files(self.folder)
        return [self.folder / n for n in names if (self.folder / n).exists()]

    def tensor_names(self) -> list[str]:
        """The stored tensors' names (HF's `inv_freq` buffers left out)."""
        return [n for n in self.weight_map if not HF_IGNORED.search(n)]

    def read_json(self, name: str, what: str) -> dict[str, Any]:
        """One of the folder's JSON files (inside it, not a link), or MythosError naming it."""
        return _read_json(inside(self.folder, name), what)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Every tensor of the weight map with its stored shape (headers only)."""
        shapes = {}
        for filename in sorted(set(self.weight_map.values())):
            for name, entry in read_header(self.folder / filename).items():
                if self.weight_map.get(name) == filename:
                    shapes[name] = tuple(int(d) for d in entry.get("shape", ()))
        return shapes

    def get_tensor(self, name: str) -> torch.Tensor:
        if name not in self.weight_map:
            raise MythosError(
                f"tensor {name} is not in {self.folder}: the weights are incomplete; re-export the folder"
            )
        with safe_open(self.folder / self.weight_map[name], framework="pt") as handle:
            return handle.get_tensor(name)

    def get_array(self, name: str) -> np.ndarray:
        """One tensor as numpy without torch: a read-only view of the mapped file (F32, F16) or,
        for BF16, its float32 widening (exact).

        Raises:
            MythosError: a tensor not in the folder, or one whose offsets fall outside its file.
        """
        if name not in self.weight_map:
            raise MythosError(
                f"tensor {name} is not in {self.folder}: the weights are incomplete; re-export the folder"
            )
        filename = self.weight_map[name]
        if filename not in self._mapped:
            path = self.folder / filename
            with path.open("rb") as fh:
                (header_size,) = struct.unpack("<Q", fh.read(8))
                mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
            self._mapped[filename] = (mapped, 8 + header_size, read_header(path))
        mapped, base, header = self._mapped[filename]
        entry = header.get(name)
        dtype = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}[entry["dtype"]] if entry else None
        begin, end = (entry or {}).get("data_offsets", (0, -1))
        shape = tuple(entry["shape"]) if entry else ()
        count = int(np.prod(shape, dtype=np.int64))
        if dtype is None or end - begin != count * np.dtype(dtype).itemsize or base + end > len(mapped):
            raise MythosError(f"tensor {name} in {filename} has a corrupt safetensors entry: re-export the folder")
        self._release_last()
        array = np.frombuffer(mapped, dtype=dtype, count=count, offset=base + begin).reshape(shape)
        self._last = (mapped, base + begin, end - begin)
        self._populate(mapped, base + begin, end - begin)
        if dtype is np.uint16:  # bfloat16: the high half of a float32
            return (array.astype(np.uint32) << 16).view(np.float32)
        return array

    def _populate(self, mapped: mmap.mmap, start: int, length: int) -> None:
        """Map the tensor's pages (already in the page cache on a warm run) in one call before it is
        read: taking them one page fault at a time cost more than reading them (0.15-0.25 s of
        faults for the 614 MB of mythos-172m, against 0.08 s populated). Skipped where the kernel
        (Linux < 5.14) or platform lacks MADV_POPULATE_READ."""
        if not _POPULATE_READ or length <= 0:
            return
        aligned = start - start % mmap.PAGESIZE
        try:
            mapped.madvise(_POPULATE_READ, aligned, min(len(mapped), start + length) - aligned)
        except OSError:
            pass  # a failed populate only means the pages fault in as they are read

    def _release_last(self) -> None:
        """Unmap the pages of the tensor returned before (readers take one at a time): the process's
        memory stays one tensor. They stay in the page cache, and a view still held reads them again."""
        if self._last is not None and hasattr(mmap, "MADV_DONTNEED"):
            mapped, start, length = self._last
            aligned = start - start % mmap.PAGESIZE
            mapped.madvise(mmap.MADV_DONTNEED, aligned, min(len(mapped), start + length) - aligned)
        self._last = None

    def stored_dtype(self) -> str:
        """The dtype the weights are stored in (of the embedding), as an HF dtype name."""
        with safe_open(self.folder / self.weight_map[EMBED], framework="pt") as handle:
            code = handle.get_slice(EMBED).get_dtype()
        return BY_CODE[code].name if code in BY_CODE else code.lower()


def _weight_map(folder: Path) -> dict[str, str]:
    """Tensor name -> weights file; every file named stays inside the folder.

    The files are `safetensors.weight_files`' (the index's shards); without an index only
    model.safetensors is read, as transformers reads such a folder.
    """
    if inside(folder, INDEX_FILE).is_file():
        weight_map = read_index(folder)  # every shard named stays inside the folder
        if not weight_map:
            raise MythosError(f"index {folder / INDEX_FILE} has no weight_map: re-export the folder")
        missing = [f for f in weight_files(folder) if not (folder / f).is_file()]
        if missing:
            raise MythosError(
                f"{folder} is missing shard(s) {missing[:3]} listed in {INDEX_FILE}: copy them back or re-export the folder"
            )
        return weight_map
    single = inside(folder, SINGLE_FILE)
    if not single.is_file():
        raise MythosError(
            f"{folder} has neither {SINGLE_FILE} nor {INDEX_FILE}: pass the folder `mythos-convert hf` wrote"
        )
    try:
        with safe_open(single, framework="numpy") as handle:  # the names only: no torch import
            return {name: SINGLE_FILE for name in handle.keys()}
    except (SafetensorError, OSError) as exc:
        raise MythosError(f"{single} is not a readable safetensors file ({exc}): re-export the folder") from exc


def _check_dtypes(folder: Path, weight_map: dict[str, str], config_json: dict[str, Any]) -> None:
    """Every stored tensor is a float type (`read_header`) and, when config.json declares one, that dtype.

    A header that says I32 where the weights are floats (same byte size) would otherwise be
    converted as integers without a word.
    """
    key = "torch_dtype" if "torch_dtype" in config_json else "dtype"
    declared = config_json.get(key)
    if declared is not None and declared not in BY_NAME:
        raise MythosError(
            f"config.json field {key} is {short_repr(declared)}, not one of {', '.join(BY_NAME)} (what an export "
            f"holds): fix {key} in config.json or re-export the folder"
        )
    for filename in sorted(set(weight_map.values())):
        for name, entry in read_header(folder / filename).items():
            if name not in weight_map or HF_IGNORED.search(name):
                continue
            dtype = BY_CODE[str(entry["dtype"])].name  # read_header refuses non-float types
            if isinstance(declared, str) and declared in BY_NAME and dtype != declared:
                raise MythosError(
                    f"tensor {name} in {filename} is stored as {dtype} but config.json declares {declared}: "
                    "re-export the folder, or fix torch_dtype in config.json"
                )


def read_hf_folder(folder: str | Path) -> HFSource:
    """Open an HF Llama folder for reading (nothing loaded but config and shard headers).

    Raises:
        MythosError: not a folder, no config.json, a config that cannot map (naming the field),
            missing shards.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise MythosError(f"{folder} is not a folder: pass an HF model folder (config.json + safetensors)")
    config_path = inside(folder, CONFIG_FILE)
    if not config_path.is_file():
        raise MythosError(f"{folder} has no config.json: pass the folder `mythos-convert hf` wrote")
    config_json = _read_json(config_path, "config")
    config = mythos_config_from_hf(config_json)
    meta_path = inside(folder, META_FILE)
    meta = _read_json(meta_path, "provenance file") if meta_path.is_file() else {}
    local_path = inside(folder, LOCAL_FILE)
    if local_path.is_file():
        meta = {**meta, **_read_json(local_path, "local paths file")}
    for name in (GENERATION_FILE, TOKENIZER_FILE, TOKENIZER_CONFIG_FILE, SPECIAL_TOKENS_FILE):
        inside(folder, name)  # read later, by us or by transformers: refuse a link now
    weight_map = _weight_map(folder)
    _check_dtypes(folder, weight_map, config_json)
    provenance = Provenance.from_dict(meta) if meta else None
    return HFSource(folder=folder, config=config, config_json=config_json, weight_map=weight_map, provenance=provenance)
