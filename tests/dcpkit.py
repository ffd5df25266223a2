"""DCP checkpoint folders for tests, written by torch.distributed.checkpoint itself.

`save_pair` writes one random model twice: as a reference-layout `ckpt.pt` and as a DCP folder
(`{"model": state_dict, "optimizer": ...}` plus the `mythos.json` sidecar), saved by one process or
by `world_size` gloo processes each holding its row shard of every matrix (a `DTensor` sharded on
dim 0, the layout FSDP2's `fully_shard` saves), so each rank writes its own `__{rank}_0.distcp`.
"""

from __future__ import annotations

import os
import socket
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.multiprocessing as mp
from helpers import make_checkpoint, random_model

from mythos_convert.formats.dcp_meta import write_sidecar
from mythos_convert.model.config import MythosConfig


def model_state(config: MythosConfig, seed: int = 0, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """The state dict `make_checkpoint(..., seed)` saves, cast to `dtype` (the rope buffers too)."""
    state = random_model(config, seed).state_dict()
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, folder: str, state: dict[str, torch.Tensor]) -> None:
    """One gloo rank: shard every tensor by rows over the mesh and let DCP write this rank's part."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        mesh = init_device_mesh("cpu", (world,))
        sharded = {k: distribute_tensor(v, mesh, [Shard(0)]) for k, v in state.items()}
        dcp.save({"model": sharded, "optimizer": {"step": torch.tensor(3.0)}}, checkpoint_id=folder)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def save_dcp(
    folder: Path,
    state: dict[str, torch.Tensor],
    config: MythosConfig,
    *,
    world_size: int = 1,
    step: int = 123,
    dtype: str = "float32",
) -> Path:
    """Write `state` as a DCP folder (one process, or `world_size` spawned gloo ranks) and its sidecar."""
    folder.mkdir(parents=True, exist_ok=True)
    if world_size == 1:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "assuming the intent is to save in a single process"
            dcp.save(
                {"model": state, "optimizer": {"step": torch.tensor(3.0)}}, checkpoint_id=str(folder), no_dist=True
            )
    else:
        mp.spawn(_rank_main, args=(world_size, _free_port(), str(folder), state), nprocs=world_size, join=True)
    write_sidecar(folder, config.to_dict(), step, world_size, dtype)
    return folder


def save_pair(
    root: Path,
    config: MythosConfig,
    tokenizer: Path,
    *,
    world_size: int = 1,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> tuple[Path, Path]:
    """(ckpt.pt, DCP folder) of the same weights, each with the tokenizer in its run folder."""
    state = model_state(config, seed, dtype)
    native_dir, dcp_dir = root / "native", root / "run"
    for d in (native_dir, dcp_dir):
        d.mkdir(parents=True, exist_ok=True)
        (d / "tokenizer.json").write_bytes(tokenizer.read_bytes())
    ckpt = make_checkpoint(native_dir / "ckpt.pt", config, seed=seed, with_optimizer=False)
    if dtype != torch.float32:  # the same bytes the DCP folder holds
        payload = torch.load(ckpt, weights_only=True)
        payload["model"] = state
        torch.save(payload, ckpt)
    name = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}[dtype]
    folder = save_dcp(dcp_dir / "step_123", state, config, world_size=world_size, dtype=name)
    return ckpt, folder
