"""`mythos-convert train`: prepare data, train a tokenizer if needed, train a Mythos model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from typer import Option

from mythos_convert.cli import options as o


def train(
    preset: Annotated[str | None, Option(help=o.PRESET)] = None,
    data: o.CorpusOpt = None,
    tokenizer: Annotated[Path | None, Option(help=o.TRAIN_TOKENIZER)] = None,
    max_steps: Annotated[int | None, Option(help="Total optimizer steps (overrides the preset).")] = None,
    out: Annotated[Path | None, Option(help="Run folder (default: runs/<preset>).")] = None,
    resume: Annotated[bool, Option("--resume", help="Continue the run in --out exactly where it stopped.")] = False,
    normalizer: Annotated[str, Option(help="Normalizer of a trained tokenizer: none or nfkc.")] = "none",
    strategy: Annotated[str, Option(help=o.STRATEGY)] = "ddp",
    checkpoint_format: Annotated[str | None, Option(help=o.FORMAT)] = None,
    activation_checkpointing: Annotated[
        bool, Option("--activation-checkpointing", help="Recompute activations in backward to save memory.")
    ] = False,
    stop_after: Annotated[int | None, Option(help=o.STOP_AFTER)] = None,
    force: o.ForceOpt = False,
    quiet: o.QuietOpt = False,
) -> None:
    """Train a model; writes OUT/ckpt.pt (or OUT/ckpt-dcp/) and OUT/tokenizer.json (runs under torchrun too).

    Example: torchrun --nproc_per_node 2 -m mythos_convert train --preset tiny --strategy fsdp --out runs/tiny
    """
    from mythos_convert.support.ui import result
    from mythos_convert.train import trainer

    options = dict(tokenizer=tokenizer, max_steps=max_steps, resume=resume, force=force, normalizer=normalizer)
    options |= dict(strategy=strategy, checkpoint_format=checkpoint_format, stop_after=stop_after)
    run = trainer.train(preset, data, out, activation_checkpointing=activation_checkpointing, **options)
    if run.main:  # under torchrun only rank 0 reports
        result(run.summary())
