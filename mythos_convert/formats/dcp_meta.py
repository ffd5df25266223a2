"""The sidecar of a distributed (DCP) checkpoint folder: what the tensors alone do not say.

A DCP folder (`torch.distributed.checkpoint`) holds the tensors of `{"model": ..., "optimizer": ...}`
sharded by rank, plus its own `.metadata`. The model config, the step and the world size that wrote
it live here, in `mythos.json`, as plain JSON: DCP would pickle non-tensor values, and nothing this
project reads may unpickle arbitrary code. Rank 0 writes the sidecar last, atomically, so a folder
without it is an incomplete save, never a checkpoint.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mythos_convert.errors import MythosError
from mythos_convert.model.config import MythosConfig
from mythos_convert.support.strict_json import write_strict_json

SIDECAR_FILE = "mythos.json"
DCP_FORMAT = "mythos-dcp"
DCP_VERSION = 1
DCP_METADATA_FILE = ".metadata"  # written by torch.distributed.checkpoint's FileSystemWriter
MAX_SIDECAR_BYTES = 1 << 20


@dataclass(frozen=True)
class DcpMeta:
    """What `mythos.json` says of the checkpoint beside it."""

    folder: Path
    config: MythosConfig
    step: int
    world_size: int
    dtype: str
    training: dict[str, Any] | None = None  # the trainer's resume state and run facts (plain JSON), if any


def is_dcp_folder(path: Path) -> bool:
    """True for a folder that looks like a DCP save (its sidecar or DCP's own metadata is there)."""
    return path.is_dir() and ((path / SIDECAR_FILE).exists() or (path / DCP_METADATA_FILE).exists())


def write_sidecar(
    folder: str | Path,
    config: dict[str, Any],
    step: int,
    world_size: int,
    dtype: str = "float32",
    training: dict[str, Any] | None = None,
) -> Path:
    """Write `folder/mythos.json` atomically; call it after every rank's shards are on disk.

    `training` (optional, plain JSON) is what an exact resume needs beyond the tensors: the data
    position, every rank's RNG state, the run's facts.
    """
    payload: dict[str, Any] = {
        "format": DCP_FORMAT,
        "version": DCP_VERSION,
        "config": MythosConfig.from_dict(dict(config)).to_dict(),
        "step": int(step),
        "world_size": int(world_size),
        "dtype": dtype,
    }
    if training is not None:
        payload["training"] = training
    return write_strict_json(Path(folder) / SIDECAR_FILE, payload)


def read_sidecar(folder: str | Path) -> DcpMeta:
    """Read and check `folder/mythos.json`; a missing or malformed one is a `MythosError` naming the fix."""
    folder = Path(folder)
    path = folder / SIDECAR_FILE
    if not path.is_file():
        raise MythosError(
            f"{folder} has no {SIDECAR_FILE}: it is not a complete Mythos DCP checkpoint "
            "(the save was interrupted, or the folder was written by another tool); resume training to write it again"
        )
    if path.stat().st_size > MAX_SIDECAR_BYTES:
        raise MythosError(f"{path} is larger than {MAX_SIDECAR_BYTES} bytes: it is not a Mythos sidecar; remove it")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MythosError(
            f"{path} is not valid JSON ({exc}): restore it from the run or save the checkpoint again"
        ) from exc
    if not isinstance(data, dict) or data.get("format") != DCP_FORMAT:
        raise MythosError(f"{path} does not say format {DCP_FORMAT!r}: it is not a Mythos DCP sidecar")
    if data.get("version") != DCP_VERSION:
        raise MythosError(
            f"{path} has version {data.get('version')!r}; this mythos-convert reads version {DCP_VERSION}: upgrade mythos-convert"
        )
    return DcpMeta(
        folder=folder,
        config=MythosConfig.from_dict(data.get("config")),
        step=_whole(data, "step", path, minimum=0),
        world_size=_whole(data, "world_size", path, minimum=1),
        dtype=_dtype(data, path),
        training=_training(data, path),
    )


def _whole(data: dict[str, Any], key: str, path: Path, *, minimum: int) -> int:
    value = data.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise MythosError(
            f"{path}: {key} must be a whole number >= {minimum}, got {value!r}: fix or remove the sidecar"
        )
    return value


def _dtype(data: dict[str, Any], path: Path) -> str:
    value = data.get("dtype", "float32")
    if value not in ("float32", "bfloat16", "float16"):
        raise MythosError(f"{path}: dtype must be float32, bfloat16 or float16, got {value!r}: fix the sidecar")
    return value


def _training(data: dict[str, Any], path: Path) -> dict[str, Any] | None:
    value = data.get("training")
    if value is not None and not isinstance(value, dict):
        raise MythosError(f"{path}: training must be a mapping, got {type(value).__name__}: fix the sidecar")
    return value
