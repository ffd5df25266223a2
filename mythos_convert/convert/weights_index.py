"""What the weights of an exported folder hold, read from the safetensors headers only.

The card counts parameters and `push` checks index consistency from these headers: a header is a
few kilobytes at the start of each file, so neither ever loads a weight.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

from mythos_convert.convert.dtypes import BY_CODE
from mythos_convert.errors import MythosError
from mythos_convert.safe_paths import inside

INDEX_FILE = "model.safetensors.index.json"
_MAX_HEADER = 100 * 1024 * 1024  # the safetensors format's own limit


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
    return header


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
