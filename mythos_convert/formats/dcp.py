"""A distributed checkpoint (DCP) folder opened as a native model, one tensor at a time.

The folder is what `torch.distributed.checkpoint.save` wrote for `{"model": state_dict, ...}`
(`.metadata` plus one `__{rank}_{n}.distcp` file per rank and writer thread), with the `mythos.json`
sidecar (`dcp_meta`) for the config, step and world size. Nothing is consolidated first: each
tensor is read by PyTorch's own machinery, `dcp.load` with its `FileSystemReader` and
`DefaultLoadPlanner` (made safe in `dcp_safe`), into one tensor of the global shape, which stitches
the rank's chunks together exactly as resuming on one process would (torch/distributed/checkpoint/
default_planner.py `create_default_local_load_plan`, filesystem.py `FileSystemReader.read_data`).
The index is read once and checked before any tensor: every shard file present and large enough,
ranks within the sidecar's world size, chunks covering each tensor, names and shapes through
`names.check_tensors` like every source.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mythos_convert.errors import MythosError
from mythos_convert.formats.checkpoint import MODEL_KEY, NativeCheckpoint
from mythos_convert.formats.dcp_meta import DCP_METADATA_FILE, SIDECAR_FILE, DcpMeta, read_sidecar
from mythos_convert.formats.dtypes import NATIVE_DTYPES, dtype_text
from mythos_convert.names import strip_native_prefixes

if TYPE_CHECKING:
    import torch
    from torch.distributed.checkpoint.metadata import Metadata, TensorStorageMetadata

SHARD_FILE = re.compile(r"__(\d+)_(\d+)\.distcp")  # FileSystemWriter's `__{rank}_{n}` names
TOKENIZER_FILE = "tokenizer.json"


def is_dcp_checkpoint(path: str | Path) -> bool:
    """A folder holding DCP's index or shard files (an HF folder also has a mythos.json: not enough)."""
    path = Path(path)
    if not path.is_dir():
        return False
    return (path / DCP_METADATA_FILE).exists() or any(SHARD_FILE.fullmatch(p.name) for p in path.iterdir())


class DcpTensors(Mapping[str, "torch.Tensor"]):
    """Native name -> tensor, each read from the shards when asked for (the last one kept).

    Shapes and dtypes come from the index without reading anything (`shapes`, `dtypes`).
    """

    def __init__(self, folder: Path, metadata: Metadata, fqns: dict[str, str]):
        from mythos_convert.formats.dcp_safe import SafeFileSystemReader

        self.folder, self.metadata, self.fqns = folder, metadata, fqns
        entries = {native: metadata.state_dict_metadata[fqn] for native, fqn in fqns.items()}
        self.shapes = {native: tuple(int(d) for d in md.size) for native, md in entries.items()}
        self.dtypes = {native: md.properties.dtype for native, md in entries.items()}
        self._reader_class = SafeFileSystemReader
        self._last: tuple[str, torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.fqns)

    def __iter__(self) -> Iterator[str]:
        return iter(self.fqns)

    def only(self, names: list[str]) -> Mapping[str, torch.Tensor]:
        """The same tensors restricted to `names`, in that order (what a writer exports)."""
        return _Only(self, names)

    def __getitem__(self, native: str) -> torch.Tensor:
        if self._last is not None and self._last[0] == native:
            return self._last[1]
        tensor = self._read(native)
        self._last = (native, tensor)
        return tensor

    def _read(self, native: str) -> torch.Tensor:
        """One tensor through `dcp.load` (DCP's reader and planner): a fresh tensor of the global shape."""
        import torch
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.api import CheckpointException

        from mythos_convert.formats.dcp_safe import SafeLoadPlanner

        fqn = self.fqns[native]  # KeyError for a name the checkpoint lacks, as a dict
        tensor = torch.empty(self.shapes[native], dtype=self.dtypes[native])
        reader = self._reader_class(str(self.folder))
        reader.read_metadata = lambda *a, **k: self.metadata  # read once, checked (see open_dcp)
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*assuming the intent is to load in a single process.*")
                dcp.load({fqn: tensor}, storage_reader=reader, planner=SafeLoadPlanner(), no_dist=True)
        except (CheckpointException, RuntimeError, OSError, EOFError) as exc:
            detail = str(exc).strip().splitlines()[-1][:200] if str(exc).strip() else type(exc).__name__
            raise MythosError(
                f"{self.folder}: tensor {fqn} does not read from its shards ({detail}): "
                "the checkpoint is damaged; save it again from training"
            ) from exc
        return tensor


class _Only(Mapping[str, "torch.Tensor"]):
    """A read-on-demand view of some of a `DcpTensors`' names."""

    def __init__(self, tensors: DcpTensors, names: list[str]):
        self.tensors, self.names = tensors, names

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __getitem__(self, native: str) -> torch.Tensor:
        if native not in self.names:
            raise KeyError(native)
        return self.tensors[native]


def model_entries(folder: Path, metadata: Metadata) -> dict[str, str]:
    """Native name -> DCP key of the model's tensors: those under `model.` (prefixes stripped)."""
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    prefix = MODEL_KEY + "."
    found: dict[str, str] = {}
    for fqn, md in metadata.state_dict_metadata.items():
        if isinstance(fqn, str) and fqn.startswith(prefix) and isinstance(md, TensorStorageMetadata):
            found[strip_native_prefixes(fqn[len(prefix) :])] = fqn
    if not found:
        raise MythosError(
            f"{folder}: its {DCP_METADATA_FILE} holds no tensor under {prefix!r}: it is not a Mythos model "
            "checkpoint (save `{'model': model.state_dict(), ...}` with torch.distributed.checkpoint)"
        )
    return found


def check_shards(folder: Path, metadata: Metadata, world_size: int, fqns: Mapping[str, str]) -> list[Path]:
    """The shard files the model's tensors are read from, after checking that each is there, long
    enough for every chunk it holds, written by a rank within the world size, and that the chunks
    of each tensor cover it. Returns the files."""
    needed = set(fqns.values())
    files: dict[str, int] = {}
    for index, info in metadata.storage_data.items():
        name, end = info.relative_path, info.offset + info.length
        match = SHARD_FILE.fullmatch(name)
        if match and int(match.group(1)) >= world_size:
            raise MythosError(
                f"{folder}: shard {name} was written by rank {match.group(1)}, but {SIDECAR_FILE} says the "
                f"checkpoint was saved by {world_size} process(es): the folder mixes two saves; save it again"
            )
        if index.fqn in needed:
            files[name] = max(files.get(name, 0), end)
    for name, end in sorted(files.items()):
        path = folder / name
        if not path.is_file():
            match = SHARD_FILE.fullmatch(name)
            rank = f"rank {match.group(1)}'s " if match else ""
            raise MythosError(
                f"{folder} lacks {rank}shard file {name}, which its {DCP_METADATA_FILE} reads tensors from: "
                "copy every __*.distcp file of the checkpoint, or save it again"
            )
        if path.stat().st_size < end:
            raise MythosError(
                f"{path} is {path.stat().st_size} bytes but its {DCP_METADATA_FILE} reads up to byte {end}: "
                "the shard is truncated (or the index lies); copy it again"
            )
    for fqn in needed:
        _check_chunks(folder, fqn, metadata.state_dict_metadata[fqn])
    return [folder / name for name in sorted(files)]


def _check_chunks(folder: Path, fqn: str, md: TensorStorageMetadata) -> None:
    """The chunks of a tensor lie inside it and add up to it (DCP would leave a gap uninitialised)."""
    size = tuple(int(d) for d in md.size)
    covered = 0
    for chunk in md.chunks:
        if len(chunk.offsets) != len(size) or any(
            o < 0 or o + s > d for o, s, d in zip(chunk.offsets, chunk.sizes, size, strict=True)
        ):
            raise MythosError(
                f"{folder}: its {DCP_METADATA_FILE} places a chunk of {fqn} at {tuple(chunk.offsets)} size "
                f"{tuple(chunk.sizes)}, outside its shape {size}: the index is damaged or hostile"
            )
        covered += math.prod(chunk.sizes)
    if covered != math.prod(size):
        raise MythosError(
            f"{folder}: the chunks of {fqn} in its {DCP_METADATA_FILE} hold {covered} values, its shape {size} "
            f"needs {math.prod(size)}: the index is damaged or hostile"
        )


def _check_dtypes(folder: Path, tensors: DcpTensors) -> None:
    for native, dtype in tensors.dtypes.items():
        if dtype_text(dtype) not in NATIVE_DTYPES:
            raise MythosError(
                f"{folder} stores {native} as {dtype_text(dtype)}: weights must be floating point "
                f"({', '.join(NATIVE_DTYPES)}); save the model's state_dict() again"
            )


def read_dcp(folder: str | Path, config: Any = None) -> tuple[NativeCheckpoint, DcpTensors, DcpMeta, list[Path]]:
    """Open and check a DCP folder: (checkpoint with lazy tensors, the tensors, the sidecar, files read).

    `config` overrides the sidecar's (a `MythosConfig`, from --config). Nothing but the index and
    the sidecar is read here.

    Raises:
        MythosError: no or bad sidecar or index, a shard missing or short, ranks beyond the world size,
            chunks that do not cover a tensor, non-float tensors (names and shapes: `source`).
    """
    from mythos_convert.formats.dcp_safe import read_dcp_metadata

    folder = Path(folder)
    meta = read_sidecar(folder)
    metadata = read_dcp_metadata(folder)
    fqns = model_entries(folder, metadata)
    shards = check_shards(folder, metadata, meta.world_size, fqns)
    tensors = DcpTensors(folder, metadata, fqns)
    _check_dtypes(folder, tensors)
    beside = folder / TOKENIZER_FILE
    tokenizer = beside.read_text(encoding="utf-8") if beside.is_file() else None
    ckpt = NativeCheckpoint(
        config=config if config is not None else meta.config,
        state_dict=tensors,  # type: ignore[arg-type]  # a Mapping read on demand
        step=meta.step,
        tokenizer_json=tokenizer,
        raw={},
        path=folder,
    )
    inputs = [folder / SIDECAR_FILE, folder / DCP_METADATA_FILE, *shards]
    return ckpt, tensors, meta, inputs
