"""`mythos-convert train`: prepare data, train a tokenizer if needed, train a Mythos model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mythos_convert.cli.common import ForceOpt, QuietOpt, apply_quiet


def train(
    preset: Annotated[
        str | None, typer.Option(help="tiny, mythos-172m, mythos-500m or a preset YAML file (default: tiny).")
    ] = None,
    data: Annotated[
        list[Path] | None,
        typer.Option(
            "--data", help="Text, JSONL (`text`) or Parquet files or folders; repeat. Default: embedded corpus."
        ),
    ] = None,
    tokenizer: Annotated[
        Path | None, typer.Option(help="Use this tokenizer.json instead of training one on the data.")
    ] = None,
    max_steps: Annotated[int | None, typer.Option(help="Total optimizer steps (overrides the preset).")] = None,
    out: Annotated[Path | None, typer.Option(help="Run folder (default: runs/<preset>).")] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run in --out exactly where it stopped.")
    ] = False,
    normalizer: Annotated[str, typer.Option(help="Normalizer of a trained tokenizer: none or nfkc.")] = "none",
    force: ForceOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Train a model; writes OUT/ckpt.pt and OUT/tokenizer.json (runs under torchrun too).

    Example: mythos-convert train --preset tiny --out runs/tiny
    """
    apply_quiet(quiet)
    from mythos_convert.support import ui
    from mythos_convert.train.trainer import train as run_training

    result = run_training(
        preset,
        data,
        out,
        tokenizer=tokenizer,
        max_steps=max_steps,
        resume=resume,
        force=force,
        normalizer=normalizer,
    )
    if _rank() != 0:  # under torchrun only rank 0 reports
        return
    loss = f"{result.val_loss:.4f} (ppl {result.val_ppl:.2f})" if result.val_loss is not None else "n/a"
    ui.result(
        f"{result.checkpoint}  step {result.step}  val loss {loss}  "
        f"{result.tokens_per_second:,.0f} tok/s  {result.wall_seconds:.1f} s"
    )


def _rank() -> int:
    import os

    return int(os.environ.get("RANK", "0"))
