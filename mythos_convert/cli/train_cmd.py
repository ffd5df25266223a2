"""`mythos-convert train`: prepare data, train a tokenizer if needed, train a Mythos model."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from typer import Option

from mythos_convert.cli.common import CorpusOpt, ForceOpt, QuietOpt

PRESET = "tiny, mythos-172m, mythos-500m, mythos-1b or a preset YAML file (default: tiny)."
STRATEGY = "single (one process), ddp (replicas under torchrun) or fsdp (FSDP2 shards under torchrun)."
FORMAT = "pt (one ckpt.pt) or dcp (a torch.distributed.checkpoint folder, ckpt-dcp/); default: dcp for fsdp."


def train(
    preset: Annotated[str | None, Option(help=PRESET)] = None,
    data: CorpusOpt = None,
    tokenizer: Annotated[
        Path | None, Option(help="Use this tokenizer.json instead of training one on the data.")
    ] = None,
    max_steps: Annotated[int | None, Option(help="Total optimizer steps (overrides the preset).")] = None,
    out: Annotated[Path | None, Option(help="Run folder (default: runs/<preset>).")] = None,
    resume: Annotated[bool, Option("--resume", help="Continue the run in --out exactly where it stopped.")] = False,
    normalizer: Annotated[str, Option(help="Normalizer of a trained tokenizer: none or nfkc.")] = "none",
    strategy: Annotated[str, Option(help=STRATEGY)] = "ddp",
    checkpoint_format: Annotated[str | None, Option(help=FORMAT)] = None,
    activation_checkpointing: Annotated[
        bool, Option("--activation-checkpointing", help="Recompute activations in backward to save memory.")
    ] = False,
    stop_after: Annotated[
        int | None, Option(help="Stop and save after this step, as an interruption would; --resume continues.")
    ] = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Train a model; writes OUT/ckpt.pt (or OUT/ckpt-dcp/) and OUT/tokenizer.json (runs under torchrun too).

    Example: torchrun --nproc_per_node 2 -m mythos_convert train --preset tiny --strategy fsdp --out runs/tiny
    """
    from mythos_convert.support.ui import result
    from mythos_convert.train.trainer import train as run_training

    options = dict(tokenizer=tokenizer, max_steps=max_steps, resume=resume, force=force, normalizer=normalizer)
    options.update(strategy=strategy, checkpoint_format=checkpoint_format, stop_after=stop_after)
    options.update(activation_checkpointing=activation_checkpointing)
    run = run_training(preset, data, out, **options)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 reports
        return
    loss = f"{run.val_loss:.4f} (ppl {run.val_ppl:.2f})" if run.val_loss is not None else "n/a"
    speed = f"{run.tokens_per_second:,.0f} tok/s  {run.wall_seconds:.1f} s"
    result(f"{run.checkpoint}  step {run.step}  val loss {loss}  {speed}")
