"""Reading a torch.distributed.checkpoint (DCP) folder without running code from it.

DCP keeps its index, `.metadata`, as a plain pickle, and PyTorch's `FileSystemReader.read_metadata`
loads it with `pickle.load`; its `DefaultLoadPlanner.load_bytes` loads non-tensor entries with
`torch.load(weights_only=False)`. Either would run whatever a hostile checkpoint put there. Here the
index is read by an unpickler that builds only DCP's own metadata dataclasses, torch dtypes and
sizes, and every storage entry must name a shard file inside the folder; non-tensor entries load with
`weights_only=True`. Everything else is PyTorch's own reader, used as is.
"""

from __future__ import annotations

import io
import pickle
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint._traverse import set_element
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta
from torch.distributed.checkpoint.planner import ReadItem

from mythos_convert.errors import MythosError
from mythos_convert.formats.dcp_meta import DCP_METADATA_FILE

_DCP_METADATA_CLASSES = frozenset(
    {
        "Metadata",
        "TensorStorageMetadata",
        "BytesStorageMetadata",
        "ChunkStorageMetadata",
        "TensorProperties",
        "MetadataIndex",
        "StorageMeta",
        "_MEM_FORMAT_ENCODING",
    }
)
_ALLOWED = {
    "torch.distributed.checkpoint.metadata": _DCP_METADATA_CLASSES,
    "torch.distributed.checkpoint.filesystem": frozenset({"_StorageInfo"}),
    "torch.serialization": frozenset({"_get_layout"}),
    "torch": frozenset({"Size"}),
    "pathlib": frozenset({"PosixPath", "PurePosixPath", "WindowsPath", "PureWindowsPath", "Path"}),
    "collections": frozenset({"OrderedDict"}),
}


class _MetadataUnpickler(pickle.Unpickler):
    """Builds DCP's index classes, torch dtypes and sizes; refuses every other global by name."""

    def find_class(self, module: str, name: str) -> Any:
        if name in _ALLOWED.get(module, ()):
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not part of a DCP index")


def _check_storage(folder: Path, metadata: Metadata) -> None:
    """Every entry must point at a shard file directly inside the folder, at a sane offset."""
    storage = metadata.storage_data
    if not isinstance(storage, dict):
        raise MythosError(f"{folder}: its {DCP_METADATA_FILE} has no storage index; is it a DCP checkpoint?")
    for index, info in storage.items():
        name = getattr(info, "relative_path", None)
        if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
            raise MythosError(
                f"{folder}: its {DCP_METADATA_FILE} points {getattr(index, 'fqn', index)!r} at {name!r}, "
                "outside the checkpoint folder; it is damaged or hostile"
            )
        if min(getattr(info, "offset", -1), getattr(info, "length", -1)) < 0:
            raise MythosError(f"{folder}: its {DCP_METADATA_FILE} gives {name} a negative offset or length")


def read_dcp_metadata(folder: Path) -> Metadata:
    """The folder's DCP index, built by the restricted unpickler and checked to stay in the folder."""
    path = Path(folder) / DCP_METADATA_FILE
    try:
        with path.open("rb") as stream:
            metadata = _MetadataUnpickler(stream).load()
    except FileNotFoundError:
        raise MythosError(
            f"{folder} has no {DCP_METADATA_FILE}: it is not a torch.distributed.checkpoint folder"
        ) from None
    except (pickle.UnpicklingError, EOFError, AttributeError, TypeError, ValueError, ImportError) as exc:
        raise MythosError(f"{path} is not a readable DCP index ({exc}); the checkpoint is damaged or hostile") from exc
    if not isinstance(metadata, Metadata):
        raise MythosError(f"{path} holds a {type(metadata).__name__}, not a DCP index")
    _check_storage(Path(folder), metadata)
    return metadata


class SafeFileSystemReader(FileSystemReader):
    """PyTorch's DCP file reader, with its index read by `read_dcp_metadata` instead of `pickle.load`."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        metadata = read_dcp_metadata(Path(self.path))
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


class SafeLoadPlanner(DefaultLoadPlanner):
    """DCP's default load planner, with non-tensor entries (ints, RNG states) loaded weights-only."""

    def load_bytes(self, read_item: ReadItem, value: io.BytesIO) -> None:
        try:
            loaded = torch.load(value, weights_only=True)
        except pickle.UnpicklingError as exc:
            raise MythosError(f"DCP entry {read_item.dest_index.fqn!r} is not plain data ({exc}); refusing it") from exc
        if self.flatten_state_dict:
            set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], loaded)
        else:
            self.state_dict[read_item.dest_index.fqn] = loaded


def load_dcp(folder: Path, state: dict[str, Any], process_group: Any = None) -> None:
    """Fill `state` in place from a DCP folder (resharding as DCP does), through the safe reader.

    The index is read once first so a hostile or damaged folder is one clean error on every rank,
    not a CheckpointException out of a collective.
    """
    read_dcp_metadata(Path(folder))
    reader, planner = SafeFileSystemReader(str(folder)), SafeLoadPlanner()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*assuming the intent is to load in a single process.*")
            dcp.load(state, storage_reader=reader, planner=planner, process_group=process_group)
    except CheckpointException as exc:
        detail = str(exc).strip().splitlines()[-1]
        raise MythosError(f"{folder}: the distributed checkpoint does not load: {detail}") from exc
