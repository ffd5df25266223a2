"""How the model is spread over the ranks: one process, DDP replicas, or FSDP2 shards.

`fsdp` follows PyTorch's FSDP2 recipe (torch.distributed.fsdp.fully_shard, as in torchtitan's
`apply_fsdp`): every transformer block is its own shard group and the root (embedding, tied output
head, final norm) another, so parameters, gradients and AdamW's state are all split over the ranks,
and a block's full weights exist only while it runs. State-dict names never change (fully_shard
and the composable `checkpoint` work by hooks, not wrappers), so checkpoints keep the native names.

Precision: on a GPU with bf16, FSDP's `MixedPrecisionPolicy` gathers bf16 weights and reduces
gradients in float32 (the shards stay float32). On CPU the gloo backend would move bf16 no faster,
so FSDP keeps float32 shards there and bf16 comes, where the CPU has native bf16 (AMX), from the
same autocast the single-process and DDP trainers use. The GPU paths (NCCL, the policy) are written
to PyTorch's documentation but untested on this project's CPU-only machines.
"""

from __future__ import annotations

import contextlib

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from mythos_convert.errors import MythosError
from mythos_convert.model.model import Mythos
from mythos_convert.train.distributed import World

STRATEGIES = ("single", "ddp", "fsdp")


def check_strategy(strategy: str, world: World) -> None:
    """Refuse a strategy name we do not know, or `single` started on several ranks."""
    if strategy not in STRATEGIES:
        raise MythosError(f"unknown --strategy {strategy!r}: use one of {', '.join(STRATEGIES)}")
    if strategy == "single" and world.distributed:
        raise MythosError(
            f"--strategy single runs one process, but torchrun started {world.world_size}: "
            "use --strategy ddp or fsdp, or --nproc_per_node 1"
        )


def ensure_group(strategy: str) -> bool:
    """FSDP needs a process group even on one process: join a private one-rank gloo group.

    Returns True when this call created the group (the caller destroys it at the end).
    """
    if strategy != "fsdp" or dist.is_initialized():
        return False
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    return True


def mixed_precision(device: torch.device, bf16: bool):
    """FSDP's policy: bf16 compute with float32 reduction on a bf16 GPU; None (float32) elsewhere."""
    if not (bf16 and device.type == "cuda" and torch.cuda.is_bf16_supported()):
        return None
    from torch.distributed.fsdp import MixedPrecisionPolicy

    return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)


def uses_autocast(strategy: str, device: torch.device) -> bool:
    """Whether the loop's bf16 autocast applies (FSDP on a GPU casts through its policy instead)."""
    return not (strategy == "fsdp" and device.type == "cuda")


def wrap(model: Mythos, world: World, strategy: str, *, bf16: bool, activation_checkpointing: bool) -> nn.Module:
    """The model as the loop calls it: itself, a DDP replica, or sharded in place by FSDP2."""
    if activation_checkpointing:
        from torch.distributed._composable import checkpoint

        for block in model.layers:
            checkpoint(block)  # recompute each block's activations in backward; names unchanged
    if strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        policy = mixed_precision(world.device, bf16)
        extra = {"mp_policy": policy} if policy is not None else {}
        for block in model.layers:
            fully_shard(block, **extra)
        fully_shard(model, **extra)  # the root: embedding, the tied output head, the final norm
        return model
    if strategy == "ddp" and world.distributed:
        ids = [world.device.index] if world.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)
    return model


def grad_sync(model: nn.Module, strategy: str, last: bool):
    """Skip the gradient all-reduce / reduce-scatter on all but the last micro-batch of a step."""
    if last:
        if strategy == "fsdp":
            model.set_requires_gradient_sync(True)
        return contextlib.nullcontext()
    if strategy == "fsdp":
        model.set_requires_gradient_sync(False)
        return contextlib.nullcontext()
    if isinstance(model, DistributedDataParallel):
        return model.no_sync()
    return contextlib.nullcontext()


def describe(strategy: str, world: World, activation_checkpointing: bool) -> str:
    """One phrase for the log and the checkpoint's training facts."""
    text = {
        "single": "one process",
        "ddp": f"DDP over {world.world_size} process(es)",
        "fsdp": f"FSDP2 (fully_shard per block) over {world.world_size} process(es)",
    }[strategy]
    return text + (", activation checkpointing" if activation_checkpointing else "")
