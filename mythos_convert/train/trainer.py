"""The reference trainer: data preparation, AdamW with warmup + cosine, DDP, exact resume.

A run lives in one folder: `tokenizer.json`, `data/` (memory-mapped token files and their
report) and `ckpt.pt` (native format, written atomically every `save_interval` steps and at the
end). A resumed run restores the weights, optimizer and RNG states and draws the batches the
uninterrupted run would have drawn (`train.loop`), so the loss curve continues bit for bit.

Under `torchrun --nproc_per_node N` each rank takes rows `rank::N` of every global micro-batch,
so N processes compute the same global batch as one process (up to floating-point reduction
order). Only rank 0 writes files and shows progress.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mythos_convert.data.pipeline import TokenData
from mythos_convert.data.tokenizer import (
    TOKENIZER_FILE,
    TRAIN_FIX,
    check_vocab_fits,
    load_tokenizer,
    tokenizer_json_text,
)
from mythos_convert.errors import MythosError
from mythos_convert.model.config import MythosConfig, Preset, TrainingConfig, load_preset
from mythos_convert.model.model import Mythos
from mythos_convert.support import ui
from mythos_convert.support.safe_paths import refuse_output_over_inputs
from mythos_convert.train import dcp_checkpoint
from mythos_convert.train import distributed as dist_utils
from mythos_convert.train import strategy as strategies
from mythos_convert.train.loop import Run, bf16_supported, precision_of, train_loop
from mythos_convert.train.run_folder import (
    CKPT_NAME,
    DATA_DIR,
    DCP_DIR,
    FORMATS,
    PRESET_NAME,
    Resume,
    load_resume,
    prepare_run,
)
from mythos_convert.train.schedule import make_optimizer


@dataclass
class TrainResult:
    """What a run produced; `losses` holds the training loss of every step run in this call."""

    checkpoint: Path
    tokenizer: Path
    step: int
    losses: list[float] = field(default_factory=list)
    val_history: list[tuple[int, float]] = field(default_factory=list)  # (step, val loss) of this call
    val_loss: float | None = None
    val_ppl: float | None = None
    tokens_per_second: float = 0.0
    wall_seconds: float = 0.0
    tokens_seen: int = 0
    main: bool = True  # this process reports the run (under torchrun only rank 0 does)

    def summary(self) -> str:
        """One line: the checkpoint, its step, the validation loss and perplexity, the speed."""
        loss = f"{self.val_loss:.4f} (ppl {self.val_ppl:.2f})" if self.val_loss is not None else "n/a"
        speed = f"{self.tokens_per_second:,.0f} tok/s  {self.wall_seconds:.1f} s"
        return f"{self.checkpoint}  step {self.step}  val loss {loss}  {speed}"


@dataclass
class _Setup:
    """A run's folder and configs, before anything is built: a new run's, or the one to resume."""

    out: Path
    config: MythosConfig
    tcfg: TrainingConfig
    preset: Preset | None = None  # a new run's: `prepare_run` writes it, its tokenizer and data into `out`
    state: dict[str, Any] | None = None  # a resumed run's ckpt.pt (None: no ckpt.pt to resume from)
    dcp: Path | None = None  # a resumed run's DCP folder
    step: int = 0
    facts: dict[str, Any] = field(default_factory=dict)
    rng: list[dict[str, torch.Tensor]] | None = None
    prior_wall: float = 0.0
    checkpoint_format: str | None = None  # None: chosen by the strategy (dcp for fsdp, else pt)


def _new_run(preset: str | Path | None, data, out: str | Path | None, tokenizer: str | Path | None) -> _Setup:
    """A new run: the preset's configs, its folder refused if it would overwrite an input."""
    loaded = load_preset(preset or "tiny")
    out = Path(out) if out is not None else Path("runs") / loaded.name
    preset_file = Path(preset) if preset is not None and Path(preset).is_file() else None
    refuse_output_over_inputs(
        out, [("preset", preset_file), ("tokenizer", tokenizer), *(("data", d) for d in data or [])]
    )
    return _Setup(out, loaded.model, loaded.training, preset=loaded)


def _resumed_run(
    preset: str | Path | None, data, out: str | Path | None, tokenizer: str | Path | None, fmt: str | None
) -> _Setup:
    """The run in `out` to continue: its checkpoint's configs, or its saved preset before the first checkpoint."""
    if out is None:
        raise MythosError("--resume needs --out: the folder of the run to continue")
    out = Path(out)
    found: Resume | None = load_resume(out, fmt)
    if preset is not None or data or tokenizer is not None:
        ui.warn(
            "--resume continues the run in --out with its own preset, data and tokenizer; other options are ignored"
        )
    if found is None:
        ui.info(f"{out} has no checkpoint yet: training its prepared data from step 0")
        saved = load_preset(out / PRESET_NAME)
        return _Setup(out, saved.model, saved.training, checkpoint_format=fmt)
    tcfg = TrainingConfig.from_dict(dict(found.facts.get("train_config") or {}))
    return _Setup(
        out,
        found.config,
        tcfg,
        state=found.state,
        dcp=found.dcp,
        step=found.step,
        facts=found.facts,
        rng=found.rng,
        prior_wall=float(found.facts.get("wall_seconds", 0.0)),
        checkpoint_format=fmt or found.format,
    )


def _check_settings(tcfg: TrainingConfig, config: MythosConfig, world: dist_utils.World) -> None:
    """Refuse settings no run can train with, before any data is prepared."""
    if tcfg.batch_size % world.world_size:
        raise MythosError(
            f"batch_size {tcfg.batch_size} is not divisible by the {world.world_size} processes: "
            "choose a batch_size that is a multiple of --nproc_per_node"
        )
    for name in ("max_steps", "eval_interval", "save_interval", "log_interval", "batch_size", "seq_len"):
        if getattr(tcfg, name) <= 0:
            raise MythosError(
                f"training field {name} must be positive, got {getattr(tcfg, name)}: set {name} under `training:` "
                "(or its command-line option) to a positive number"
            )
    if tcfg.seq_len > config.max_seq_len:
        raise MythosError(
            f"training seq_len {tcfg.seq_len} exceeds the model's max_seq_len {config.max_seq_len}: lower seq_len "
            "under `training:` or raise max_seq_len under `model:`"
        )


def _build(world, setup: _Setup, strategy: str, activation_checkpointing: bool):
    """The model (restored, then wrapped or sharded by the strategy), its optimizer, the RNG streams."""
    config, tcfg, state = setup.config, setup.tcfg, setup.state
    torch.manual_seed(tcfg.seed)  # identical initial weights on every rank
    model = Mythos(config).to(world.device)
    if state is not None:
        model.load_state_dict(
            {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in state["model"].items()}
        )
    model.train()
    wrapped = strategies.wrap(model, world, strategy, bf16=tcfg.bf16, activation_checkpointing=activation_checkpointing)
    optimizer = make_optimizer(model, tcfg)  # after sharding: FSDP's optimizer holds only this rank's shards
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
    if setup.dcp is not None:
        dcp_checkpoint.restore(setup.dcp, wrapped, optimizer)
    _seed_streams(world, tcfg.seed, setup)
    return wrapped, model, optimizer


def _seed_streams(world, seed: int, setup: _Setup) -> None:
    """Restore each rank's RNG state when the world size is unchanged; else seed fresh per-rank streams."""
    if setup.state is None and setup.dcp is None:
        torch.manual_seed(seed + 1 + world.rank)  # dropout streams differ per rank
        return
    rngs = setup.rng or []
    if len(rngs) == world.world_size:
        torch.set_rng_state(rngs[world.rank]["cpu"])
        if "cuda" in rngs[world.rank] and world.device.type == "cuda":
            torch.cuda.set_rng_state(rngs[world.rank]["cuda"], world.device)
    else:
        torch.manual_seed(seed + 1 + world.rank + setup.step)


@dataclass(frozen=True)
class Parallel:
    """How the run is spread over processes and how it checkpoints."""

    strategy: str = "ddp"
    checkpoint_format: str | None = None  # None: the resumed checkpoint's, else dcp for fsdp and pt otherwise
    activation_checkpointing: bool = False


def train(
    preset: str | Path | None = None,
    data: list[str | Path] | None = None,
    out: str | Path | None = None,
    *,
    tokenizer: str | Path | None = None,
    max_steps: int | None = None,
    resume: bool = False,
    force: bool = False,
    normalizer: str = "none",
    device: str | None = None,
    stop_after: int | None = None,
    strategy: str = "ddp",
    checkpoint_format: str | None = None,
    activation_checkpointing: bool = False,
) -> TrainResult:
    """Train a Mythos model; writes OUT/ckpt.pt (or the DCP folder OUT/ckpt-dcp), OUT/tokenizer.json, OUT/data/.

    Args:
        preset: "tiny", "mythos-172m", "mythos-500m", "mythos-1b" or a preset YAML (default "tiny");
            on resume the run's own configs are used.
        data: text/JSONL/Parquet files or folders; none: the embedded default corpus.
        out: the run folder (default `runs/<preset>`); must be empty unless `resume` or `force`.
        tokenizer: a tokenizer.json to use instead of training one on the data.
        max_steps: override the preset's total steps (the cosine schedule spans them).
        resume: continue the run in `out` exactly where its checkpoint stopped (on any number of ranks
            from a DCP folder).
        force: replace a non-empty `out` (atomically, once the new data is ready).
        normalizer: "none" (default) or "nfkc" for the trained tokenizer.
        device: "cpu", "cuda", ...; default: this rank's GPU if any, else CPU.
        stop_after: stop (and save) after this step, as an interruption would; for tests.
        strategy: "single", "ddp" (replicas; one process without torchrun) or "fsdp" (FSDP2 shards).
        checkpoint_format: "pt" (one ckpt.pt from rank 0) or "dcp" (every rank its shards); default:
            the resumed checkpoint's format, else dcp for fsdp and pt otherwise.
        activation_checkpointing: recompute each block's activations in backward (less memory, ~1/3 more compute).

    Raises:
        MythosError: bad preset, unreadable data, no usable text, non-empty `out`, a tokenizer
            larger than the model's vocabulary, nothing to resume, a damaged or lying DCP folder.
    """
    parallel = Parallel(strategy, checkpoint_format, activation_checkpointing)
    world = dist_utils.setup(device)
    owns_group = False
    quiet_before = ui.is_quiet()
    if not world.is_main:
        ui.set_quiet(True)
    try:
        strategies.check_strategy(strategy, world)
        if checkpoint_format not in (None, *FORMATS):
            raise MythosError(f"unknown --checkpoint-format {checkpoint_format!r}: use {' or '.join(FORMATS)}")
        owns_group = strategies.ensure_group(strategy)
        args = (preset, data, out, tokenizer, max_steps, resume, force, normalizer, stop_after)
        return _train(world, parallel, *args)
    finally:
        ui.set_quiet(quiet_before)
        if owns_group:
            torch.distributed.destroy_process_group()
        dist_utils.teardown(world)


def _train(
    world, parallel: Parallel, preset, data, out, tokenizer, max_steps, resume, force, normalizer, stop_after
) -> TrainResult:
    fmt = parallel.checkpoint_format
    setup = _resumed_run(preset, data, out, tokenizer, fmt) if resume else _new_run(preset, data, out, tokenizer)
    setup.checkpoint_format = setup.checkpoint_format or fmt or ("dcp" if parallel.strategy == "fsdp" else "pt")
    out, tcfg = setup.out, setup.tcfg
    if max_steps is not None:
        tcfg.max_steps = int(max_steps)
    _check_settings(tcfg, setup.config, world)
    _check_combination(parallel, setup)
    if setup.preset is not None:
        dist_utils.run_on_main(lambda: prepare_run(out, setup.preset, data, tokenizer, normalizer, force), world)
        if world.distributed:
            torch.distributed.barrier()
    run = _start(world, setup, parallel)
    val_history: list[tuple[int, float]] = []
    if run.step >= tcfg.max_steps:
        ui.info(f"the run is already at step {run.step} of {tcfg.max_steps}: pass --max-steps to train further")
        losses, tok_s, wall = [], 0.0, 0.0
    else:
        losses, tok_s, wall = train_loop(run, stop_after, val_history)
    return TrainResult(
        checkpoint=out / (DCP_DIR if run.saver is not None else CKPT_NAME),
        tokenizer=out / TOKENIZER_FILE,
        step=run.step,
        losses=losses,
        val_history=val_history,
        val_loss=run.val_loss,
        val_ppl=math.exp(run.val_loss) if run.val_loss is not None else None,
        tokens_per_second=tok_s,
        wall_seconds=wall,
        tokens_seen=run.step * run.tokens_per_step,
        main=world.is_main,
    )


def _check_combination(parallel: Parallel, setup: _Setup) -> None:
    """FSDP keeps no whole model on any rank: it saves and resumes DCP folders only."""
    if parallel.strategy != "fsdp":
        return
    if setup.checkpoint_format == "pt" or setup.state is not None:
        raise MythosError(
            "--strategy fsdp saves and resumes DCP checkpoints (no rank holds the whole model for a ckpt.pt): "
            "use --checkpoint-format dcp, or --strategy ddp to continue a ckpt.pt run"
        )


def _start(world: dist_utils.World, setup: _Setup, parallel: Parallel) -> Run:
    """The run's tokenizer, token files, model and optimizer (restored when resuming), said in one line."""
    out, config, tcfg = setup.out, setup.config, setup.tcfg
    tok = load_tokenizer(out / TOKENIZER_FILE)
    check_vocab_fits(tok, config.vocab_size, where=str(out / TOKENIZER_FILE), fix=TRAIN_FIX)
    tokens = TokenData.open(out / DATA_DIR)
    model, raw_model, optimizer = _build(world, setup, parallel.strategy, parallel.activation_checkpointing)
    saver = dcp_checkpoint.DcpSaver(world, out / DCP_DIR) if setup.checkpoint_format == "dcp" else None
    run = Run(
        world=world,
        config=config,
        tcfg=tcfg,
        model=model,
        raw_model=raw_model,
        optimizer=optimizer,
        tokens=tokens,
        out=out,
        tokenizer_json=tokenizer_json_text(tok),
        step=setup.step,
        prior_wall=setup.prior_wall,
        val_loss=setup.facts.get("val_loss"),
        strategy=parallel.strategy,
        activation_checkpointing=parallel.activation_checkpointing,
        saver=saver,
    )
    ui.info(
        f"model: {raw_model.num_parameters() / 1e6:.2f} M parameters; {tokens.train.size:,} train / "
        f"{tokens.val.size:,} val tokens; {run.tokens_per_step:,} tokens per step, "
        f"{strategies.describe(parallel.strategy, world, parallel.activation_checkpointing)}, "
        f"{precision_of(tcfg, world.device, parallel.strategy)}"
    )
    if tcfg.bf16 and not bf16_supported(world.device):
        ui.info(f"bf16 requested, but {world.device.type} here has no fast bf16 matmul: training in float32")
    return run
