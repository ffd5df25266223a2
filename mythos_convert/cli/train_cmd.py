"""`mythos-convert train`: prepare data, train a tokenizer if needed, train a Mythos model."""

from __future__ import annotations

from mythos_convert.cli import options as o


def train(
    preset: o.PresetOpt = None,
    data: o.CorpusOpt = None,
    tokenizer: o.TrainTokenizerOpt = None,
    max_steps: o.MaxStepsOpt = None,
    out: o.RunOutOpt = None,
    resume: o.ResumeOpt = False,
    normalizer: o.TrainNormalizerOpt = "none",
    strategy: o.StrategyOpt = "ddp",
    checkpoint_format: o.CheckpointFormatOpt = None,
    activation_checkpointing: o.ActivationCheckpointingOpt = False,
    stop_after: o.StopAfterOpt = None,
    force: o.ForceOpt = False,
    quiet: o.QuietOpt = False,
) -> None:
    """Train a model; writes OUT/ckpt.pt (or OUT/ckpt-dcp/) and OUT/tokenizer.json (runs under torchrun too).

    Example: torchrun --nproc_per_node 2 -m mythos_convert train --preset tiny --strategy fsdp --out runs/tiny
    """
    from mythos_convert.support.ui import result
    from mythos_convert.train.trainer import train as run_training

    options = dict(tokenizer=tokenizer, max_steps=max_steps, resume=resume, force=force, normalizer=normalizer)
    options |= dict(strategy=strategy, checkpoint_format=checkpoint_format, stop_after=stop_after)
    run = run_training(preset, data, out, activation_checkpointing=activation_checkpointing, **options)
    if run.main:  # under torchrun only rank 0 reports
        result(run.summary())
