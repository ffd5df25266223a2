"""torchrun / DistributedDataParallel plumbing, so the same `train` runs on one process or N.

Under `torchrun --nproc_per_node N` the environment carries RANK, WORLD_SIZE and LOCAL_RANK; we
join a process group (NCCL on GPUs, gloo on CPU). Without it everything is a no-op and the world
is one process. Only rank 0 writes files and shows progress.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from mythos_convert.errors import MythosError


@dataclass(frozen=True)
class World:
    """Who we are in the run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _pick_device(local_rank: int, device: str | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def setup(device: str | None = None) -> World:
    """Join the torchrun process group if there is one; pick this process's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = _pick_device(local_rank, device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        try:
            dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
        except (RuntimeError, ValueError) as exc:
            raise MythosError(
                f"cannot join the torchrun process group ({backend}): {exc}; check MASTER_ADDR/MASTER_PORT "
                "and that every rank was started"
            ) from exc
    return World(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def teardown(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_mean(value: torch.Tensor, world: World) -> torch.Tensor:
    """Average a tensor over ranks (a copy; identity on one process)."""
    value = value.detach().clone()
    if world.distributed:
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value /= world.world_size
    return value


def all_reduce_sum(value: torch.Tensor, world: World) -> torch.Tensor:
    value = value.detach().clone()
    if world.distributed:
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def broadcast_object(obj: Any, world: World) -> Any:
    """Rank 0's object on every rank (used to share an error so no rank waits forever)."""
    if not world.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def run_on_main(fn, world: World):
    """Run `fn` on rank 0 only; every rank gets its result, or raises the same MythosError."""
    result, error, failure = None, None, None
    if world.is_main:
        try:
            result = fn()
        except Exception as exc:  # share any failure, or the other ranks would wait forever
            error, failure = str(exc) or type(exc).__name__, exc
    error = broadcast_object(error, world)
    if failure is not None:
        raise failure
    if error is not None:
        raise MythosError(f"rank 0 failed: {error} (rank 0's own error line says what to fix)")
    return broadcast_object(result, world)


def hardware_description(world: World) -> str:
    import platform

    if world.device.type == "cuda":
        name = torch.cuda.get_device_name(world.device)
        return f"{world.world_size}x {name}"  # the card adds the process count
    cores = os.cpu_count() or 1
    return f"CPU ({platform.machine()}, {cores} cores, {torch.get_num_threads()} threads per process)"
