"""Distributed checkpoints (torch.distributed.checkpoint) of a training run: save, check, restore.

Every rank writes its own shards of `{"model": ..., "optimizer": ...}` (from
`torch.distributed.checkpoint.state_dict.get_state_dict`, so FSDP's DTensor shards and plain
tensors alike, under the native names). On GPUs with `dcp.async_save`: the state is copied to host
memory before the call returns, training goes on while a background thread writes it, and the save
is finished (every rank's future waited for, then a barrier) before the next save and before exit.
On CPU that copy (DCP's DefaultStager deep-copies every tensor) would be a second set of this
rank's weights and AdamW state in the memory training uses, so CPU ranks save synchronously,
straight from the live tensors.
The folder is built under a temporary name by rank 0's `atomic_dir`; once every rank's shards and
DCP's `.metadata` are there, rank 0 adds `mythos.json` (config, step, world size and, under
`training`, the data position, each rank's RNG state and the run's facts) and `tokenizer.json`,
and one rename puts it in place. DCP reshards on load, so a folder saved by N ranks resumes on M.
Every load goes through `formats.dcp_safe` (no pickle runs code) after `check_folder`, which
refuses a missing shard or a sidecar that disagrees with the shards, with one error.
"""

from __future__ import annotations

import base64
import contextlib
import re
import warnings
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from mythos_convert.errors import MythosError
from mythos_convert.formats.dcp_meta import DcpMeta, read_sidecar, write_sidecar
from mythos_convert.formats.dcp_safe import load_dcp, read_dcp_metadata
from mythos_convert.model.model import Mythos
from mythos_convert.support.atomic import atomic_dir
from mythos_convert.train import distributed as dist_utils

_SHARD_FILE = re.compile(r"__(\d+)_\d+\.distcp")


def encode_rng(states: list[dict[str, torch.Tensor]]) -> list[dict[str, str]]:
    """Each rank's RNG states as base64 text, so the sidecar stays plain JSON."""
    return [{k: base64.b64encode(v.numpy().tobytes()).decode("ascii") for k, v in s.items()} for s in states]


def decode_rng(states: list[dict[str, str]]) -> list[dict[str, torch.Tensor]]:
    return [
        {k: torch.frombuffer(bytearray(base64.b64decode(v)), dtype=torch.uint8) for k, v in s.items()} for s in states
    ]


@dataclass
class _Pending:
    """A save in flight: every rank's future, and on rank 0 the open temporary folder."""

    future: Any
    tmp: Path
    sidecar: dict[str, Any]
    tokenizer_json: str
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)


class DcpSaver:
    """Saves a run's DCP folder asynchronously; `wait()` finishes the save in flight (all ranks)."""

    def __init__(self, world: dist_utils.World, final: Path) -> None:
        self.world, self.final = world, final
        self.pending: _Pending | None = None
        # a group of its own, so the writer thread's collectives never interleave with training's
        self.group = dist.new_group(backend="gloo") if dist.is_initialized() else None

    def save(self, model: torch.nn.Module, optimizer, sidecar: dict[str, Any], tokenizer_json: str) -> None:
        """Start saving (collective): the state is staged before this returns, written in the background."""
        self.wait()
        stack = contextlib.ExitStack()

        def open_tmp() -> str:
            return str(stack.enter_context(atomic_dir(self.final, force=True)))

        try:
            tmp = Path(dist_utils.run_on_main(open_tmp, self.world))
            model_state, optim_state = get_state_dict(model, optimizer)
            state = {"model": model_state, "optimizer": optim_state}
            future = self._start(state, tmp)
        except BaseException:
            stack.close()
            raise
        self.pending = _Pending(future, tmp, sidecar, tokenizer_json, stack)

    def _start(self, state: dict[str, Any], tmp: Path) -> Future:
        """Async on a GPU (the copy to host memory frees training at once); on CPU written from the live tensors."""
        if self.world.device.type == "cuda" and dist.is_initialized():
            return _upload_future(dcp.async_save(state, checkpoint_id=str(tmp), process_group=self.group))
        done: Future = Future()
        alone = not dist.is_initialized()
        with warnings.catch_warnings():  # DCP warns on every no_dist save; one process without a group means it
            warnings.filterwarnings("ignore", message=".*assuming the intent is to save in a single process")
            done.set_result(dcp.save(state, checkpoint_id=str(tmp), process_group=self.group, no_dist=alone))
        return done

    def wait(self) -> None:
        """Finish the save in flight, if any: every rank's shards written, then rank 0 publishes the folder."""
        pending, self.pending = self.pending, None
        if pending is None:
            return
        with pending.stack:  # rank 0's atomic_dir: renamed into place on success, removed on failure
            pending.future.result()
            if self.world.distributed:
                dist.barrier()
            if self.world.is_main:
                write_sidecar(pending.tmp, **pending.sidecar)
                (pending.tmp / "tokenizer.json").write_text(pending.tokenizer_json, encoding="utf-8")
        if self.world.distributed:
            dist.barrier()  # the folder is in place before any rank goes on


def _upload_future(result: Any) -> Any:
    """`async_save` returns a Future, or (newer PyTorch) an AsyncSaveResponse: staging first, then upload."""
    if hasattr(result, "upload_completion"):
        result.staging_completion.result()
        return result.upload_completion
    return result


# ---------------------------------------------------------------- resume


def writer_ranks(folder: Path, metadata: Any) -> set[int]:
    """The ranks whose shard files the DCP index names; each file must be in the folder."""
    ranks = set()
    for info in metadata.storage_data.values():
        name = info.relative_path
        if not (folder / name).is_file():
            raise MythosError(
                f"{folder}: shard file {name} named by its .metadata is missing (a rank's save was lost): "
                "restore the file, or resume from another checkpoint"
            )
        match = _SHARD_FILE.fullmatch(name)
        if match:
            ranks.add(int(match.group(1)))
    return ranks


def _check_config(folder: Path, meta: DcpMeta, metadata: Any) -> None:
    """The sidecar's config must describe exactly the model tensors the shards hold."""
    with torch.device("meta"):
        expected = {f"model.{k}": tuple(v.shape) for k, v in Mythos(meta.config).state_dict().items()}
    held = {k: tuple(v.size) for k, v in metadata.state_dict_metadata.items() if k.startswith("model.")}
    for name in sorted(set(expected) | set(held)):
        if expected.get(name) != held.get(name):
            raise MythosError(
                f"{folder}: mythos.json's config does not match the shards ({name}: config says "
                f"{expected.get(name)}, shards hold {held.get(name)}): restore the sidecar the run wrote"
            )


def check_folder(folder: Path) -> DcpMeta:
    """Read a run's DCP folder's sidecar and index; refuse missing shards or a sidecar that lies."""
    if not folder.is_dir():
        raise MythosError(f"{folder} is not a folder: nothing to resume")
    meta = read_sidecar(folder)
    metadata = read_dcp_metadata(folder)
    ranks = writer_ranks(folder, metadata)
    if ranks and max(ranks) >= meta.world_size:
        raise MythosError(
            f"{folder}: mythos.json says world size {meta.world_size}, but the shards were written by ranks "
            f"{sorted(ranks)}: the sidecar does not belong to these shards; restore it"
        )
    rngs = (meta.training or {}).get("rng")
    if rngs is not None and len(rngs) != meta.world_size:
        raise MythosError(
            f"{folder}: mythos.json says world size {meta.world_size} but holds {len(rngs)} RNG states: "
            "the sidecar is damaged; restore it"
        )
    _check_config(folder, meta, metadata)
    return meta


def restore(folder: Path, model: torch.nn.Module, optimizer) -> None:
    """Load the folder's model and optimizer state into this rank's (maybe sharded) model, resharding as needed."""
    model_state, optim_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optimizer": optim_state}
    load_dcp(folder, state)
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
