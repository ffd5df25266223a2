"""Where an FSDP rank's memory goes: resident set and high-water mark after each phase of two steps.

Run under torchrun; each rank prints its lines. Compare glibc's default malloc with
`MALLOC_MMAP_THRESHOLD_=65536` (freed blocks above 64 KiB go back to the system at once):

    torchrun --standalone --nproc_per_node 2 benchmarks/fsdp_rss_probe.py --preset mythos-172m
    MALLOC_MMAP_THRESHOLD_=65536 torchrun --standalone --nproc_per_node 2 benchmarks/fsdp_rss_probe.py
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path


def rss(tag: str) -> None:
    with open("/proc/self/status", encoding="ascii") as fh:
        fields = dict(line.split(":", 1) for line in fh if line.startswith(("VmRSS", "VmHWM")))
    rss_gib, hwm_gib = (int(fields[k].split()[0]) / 2**20 for k in ("VmRSS", "VmHWM"))
    print(
        f"rank {os.environ.get('RANK', '0')} {tag:<12} RSS {rss_gib:.2f} GiB  high-water {hwm_gib:.2f} GiB", flush=True
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="mythos-172m")
    parser.add_argument("--seq", type=int, default=128)
    args = parser.parse_args()
    import torch

    from mythos_convert.model.config import load_preset
    from mythos_convert.model.model import Mythos
    from mythos_convert.train import distributed, strategy
    from mythos_convert.train.dcp_checkpoint import DcpSaver
    from mythos_convert.train.schedule import make_optimizer

    torch.set_num_threads(1)
    world = distributed.setup("cpu")
    strategy.ensure_group("fsdp")
    rss("imports")
    preset = load_preset(args.preset)
    torch.manual_seed(0)
    model = Mythos(preset.model)
    rss("full model")
    sharded = strategy.wrap(model, world, "fsdp", bf16=False, activation_checkpointing=False)
    rss("sharded")
    optimizer = make_optimizer(model, preset.training)
    tokens = torch.randint(0, preset.model.vocab_size, (1, args.seq + 1))
    for step in range(2):
        loss = sharded(tokens[:, :-1], tokens[:, 1:])[1]
        rss(f"forward {step}")
        loss.backward()
        rss(f"backward {step}")
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        rss(f"step {step}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(distributed.broadcast_object(tmp, world)) / "ckpt-dcp"
        saver = DcpSaver(world, folder)
        sidecar = {"config": preset.model.to_dict(), "step": 2, "world_size": world.world_size}
        saver.save(sharded, optimizer, sidecar, "{}")
        saver.wait()
        rss("saved")
    distributed.teardown(world)


if __name__ == "__main__":
    main()
