"""Read an HF Llama folder lazily: config, tokenizer path, tensors streamed from (sharded) safetensors.

Used by `native` (HF -> native), by the verifier and by the GGUF writer. Tensors are opened with
`safe_open` one at a time, so reading never holds more than one tensor beyond the page cache.
The GGUF writer reads with `get_array` instead: numpy views of the memory-mapped files, no
torch import and no copy (float32 and float16 stay in the page cache; bfloat16 is widened).
"""

from __future__ import annotations

import json
import mmap
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from safetensors import SafetensorError, safe_open

from mythos_convert.convert.dtypes import BY_CODE, BY_NAME
from mythos_convert.convert.hf_config import mythos_config_from_hf
from mythos_convert.convert.names import HF_IGNORED, TIED_HEAD, convert_name
from mythos_convert.convert.weights_index import INDEX_FILE, read_header
from mythos_convert.errors import MythosError
from mythos_convert.model.config import MythosConfig
from mythos_convert.safe_paths import inside

if TYPE_CHECKING:  # imported where used: the constants above are read by `hf` without torch
    import torch

SINGLE_FILE = "model.safetensors"
GENERATION_FILE = "generation_config.json"
META_FILE = "mythos.json"  # provenance written by `mythos-convert hf` (published with the model)
# Local paths (source checkpoint, tokenizer) that `verify` defaults to. Hidden, so `push` never
# publishes them: a user's directory layout is nobody else's business.
LOCAL_FILE = ".mythos-local.json"
EMBED = convert_name("embedding.weight", "native", "hf")


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
    """An HF Llama folder: `config` (MythosConfig), `config_json`, `meta` (mythos.json or {}), weights."""

    folder: Path
    config: MythosConfig
    config_json: dict[str, Any]
    weight_map: dict[str, str]  # hf tensor name -> file name inside folder
    meta: dict[str, Any] = field(default_factory=dict)
    _mapped: dict[str, tuple[mmap.mmap, int, dict]] = field(default_factory=dict, repr=False)
    _last: tuple[mmap.mmap, int, int] | None = field(default=None, repr=False)

    @property
    def tokenizer_path(self) -> Path | None:
        path = inside(self.folder, "tokenizer.json")
        return path if path.is_file() else None

    def files(self) -> list[Path]:
        """Every file of the folder this source reads: what no output may replace."""
        names = ["config.json", GENERATION_FILE, META_FILE, LOCAL_FILE, INDEX_FILE, "tokenizer.json"]
        names += sorted(set(self.weight_map.values()))
        return [self.folder / n for n in names if (self.folder / n).exists()]

    @property
    def tied(self) -> bool:
        return TIED_HEAD["hf"] not in self.weight_map or bool(self.config_json.get("tie_word_embeddings", True))

    def tensor_names(self) -> list[str]:
        return [n for n in self.weight_map if not HF_IGNORED.search(n)]

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
        if dtype is np.uint16:  # bfloat16: the high half of a float32
            return (array.astype(np.uint32) << 16).view(np.float32)
        return array

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

    def iter_tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        """Yield (hf_name, tensor) file by file; a stored lm_head is checked against the embedding and skipped.

        Raises:
            MythosError: an lm_head that differs from the embedding (an untied model).
        """
        by_file: dict[str, list[str]] = {}
        for name, filename in self.weight_map.items():
            by_file.setdefault(filename, []).append(name)
        for filename in sorted(by_file):
            with safe_open(self.folder / filename, framework="pt") as handle:
                for name in by_file[filename]:
                    if HF_IGNORED.search(name):
                        continue
                    tensor = handle.get_tensor(name)
                    if name == TIED_HEAD["hf"]:
                        self._check_tied_head(tensor)
                        continue
                    yield name, tensor

    def _check_tied_head(self, head: torch.Tensor) -> None:
        if EMBED not in self.weight_map:
            raise MythosError(
                f"{self.folder} stores {TIED_HEAD['hf']} but no {EMBED}: Mythos needs the embedding; re-save the model"
            )
        import torch

        embed = self.get_tensor(EMBED)
        if head.shape != embed.shape or not torch.equal(head, embed):
            raise MythosError(
                f"{self.folder} has an untied lm_head.weight that differs from {EMBED} "
                "(tie_word_embeddings false): Mythos ties its output head to the embedding; convert a tied model"
            )


def _weight_map(folder: Path) -> dict[str, str]:
    """Tensor name -> weights file; every file named stays inside the folder."""
    index = inside(folder, INDEX_FILE)
    if index.is_file():
        data = _read_json(index, "index")
        weight_map = data.get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise MythosError(f"index {index} has no weight_map: re-export the folder")
        for name in sorted({str(f) for f in weight_map.values()}):
            inside(folder, name, f"shard listed in {INDEX_FILE}")
        missing = sorted({f for f in weight_map.values() if not (folder / f).is_file()})
        if missing:
            raise MythosError(
                f"{folder} is missing shard(s) {missing[:3]} listed in {INDEX_FILE}: copy them back or re-export the folder"
            )
        return {str(k): str(v) for k, v in weight_map.items()}
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
    declared = config_json.get("torch_dtype", config_json.get("dtype"))
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
    config_path = inside(folder, "config.json")
    if not config_path.is_file():
        raise MythosError(f"{folder} has no config.json: pass the folder `mythos-convert hf` wrote")
    config_json = _read_json(config_path, "config")
    config = mythos_config_from_hf(config_json)
    meta_path = inside(folder, META_FILE)
    meta = _read_json(meta_path, "provenance file") if meta_path.is_file() else {}
    local_path = inside(folder, LOCAL_FILE)
    if local_path.is_file():
        meta = {**meta, **_read_json(local_path, "local paths file")}
    for name in (GENERATION_FILE, "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        inside(folder, name)  # read later, by us or by transformers: refuse a link now
    weight_map = _weight_map(folder)
    _check_dtypes(folder, weight_map, config_json)
    return HFSource(folder=folder, config=config, config_json=config_json, weight_map=weight_map, meta=meta)
