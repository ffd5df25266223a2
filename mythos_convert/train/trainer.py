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
from torch.nn.parallel import DistributedDataParallel

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
from mythos_convert.train import distributed as dist_utils
from mythos_convert.train.loop import STATE_KEY, Run, bf16_supported, precision_of, train_loop
from mythos_convert.train.run_folder import (
    CKPT_NAME,
    DATA_DIR,
    PRESET_NAME,
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


@dataclass
class _Setup:
    """A run's folder and configs, before anything is built: a new run's, or the one to resume."""

    out: Path
    config: MythosConfig
    tcfg: TrainingConfig
    preset: Preset | None = None  # a new run's: `prepare_run` writes it, its tokenizer and data into `out`
    state: dict[str, Any] | None = None  # a resumed run's checkpoint (None: resume from step 0)
    prior_wall: float = 0.0


def _new_run(preset: str | Path | None, data, out: str | Path | None, tokenizer: str | Path | None) -> _Setup:
    """A new run: the preset's configs, its folder refused if it would overwrite an input."""
    loaded = load_preset(preset or "tiny")
    out = Path(out) if out is not None else Path("runs") / loaded.name
    preset_file = Path(preset) if preset is not None and Path(preset).is_file() else None
    refuse_output_over_inputs(
        out, [("preset", preset_file), ("tokenizer", tokenizer), *(("data", d) for d in data or [])]
    )
    return _Setup(out, loaded.model, loaded.training, preset=loaded)


def _resumed_run(preset: str | Path | None, data, out: str | Path | None, tokenizer: str | Path | None) -> _Setup:
    """The run in `out` to continue: its checkpoint's configs, or its saved preset before the first checkpoint."""
    if out is None:
        raise MythosError("--resume needs --out: the folder of the run to continue")
    out = Path(out)
    state = load_resume(out)
    if preset is not None or data or tokenizer is not None:
        ui.warn(
            "--resume continues the run in --out with its own preset, data and tokenizer; other options are ignored"
        )
    if state is None:
        ui.info(f"{out} has no checkpoint yet: training its prepared data from step 0")
        saved = load_preset(out / PRESET_NAME)
        return _Setup(out, saved.model, saved.training)
    facts = state.get("training") or {}
    config = MythosConfig.from_dict(dict(state["config"]))
    tcfg = TrainingConfig.from_dict(dict(facts.get("train_config") or {}))
    return _Setup(out, config, tcfg, state=state, prior_wall=float(facts.get("wall_seconds", 0.0)))


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


def _build(world, config: MythosConfig, tcfg: TrainingConfig, state: dict[str, Any] | None):
    torch.manual_seed(tcfg.seed)  # identical initial weights on every rank
    model = Mythos(config).to(world.device)
    optimizer = make_optimizer(model, tcfg)
    if state is not None:
        model.load_state_dict(
            {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in state["model"].items()}
        )
        optimizer.load_state_dict(state["optimizer"])
        rngs = (state.get(STATE_KEY) or {}).get("rng") or []
        if len(rngs) == world.world_size:
            torch.set_rng_state(rngs[world.rank]["cpu"])
            if "cuda" in rngs[world.rank] and world.device.type == "cuda":
                torch.cuda.set_rng_state(rngs[world.rank]["cuda"], world.device)
        else:
            torch.manual_seed(tcfg.seed + 1 + world.rank + int(state.get("step", 0)))
    else:
        torch.manual_seed(tcfg.seed + 1 + world.rank)  # dropout streams differ per rank
    model.train()
    wrapped = model
    if world.distributed:
        ids = [world.device.index] if world.device.type == "cuda" else None
        wrapped = DistributedDataParallel(model, device_ids=ids)
    return wrapped, model, optimizer


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
) -> TrainResult:
    """Train a Mythos model; writes OUT/ckpt.pt, OUT/tokenizer.json and OUT/data/.

    Args:
        preset: "tiny", "mythos-172m", "mythos-500m" or a preset YAML (default "tiny"); on resume
            the run's own configs are used.
        data: text/JSONL/Parquet files or folders; none: the embedded default corpus.
        out: the run folder (default `runs/<preset>`); must be empty unless `resume` or `force`.
        tokenizer: a tokenizer.json to use instead of training one on the data.
        max_steps: override the preset's total steps (the cosine schedule spans them).
        resume: continue the run in `out` exactly where its checkpoint stopped.
        force: replace a non-empty `out` (atomically, once the new data is ready).
        normalizer: "none" (default) or "nfkc" for the trained tokenizer.
        device: "cpu", "cuda", ...; default: this rank's GPU if any, else CPU.
        stop_after: stop (and save) after this step, as an interruption would; for tests.

    Raises:
        MythosError: bad preset, unreadable data, no usable text, non-empty `out`, a tokenizer
            larger than the model's vocabulary, nothing to resume.
    """
    world = dist_utils.setup(device)
    quiet_before = ui.is_quiet()
    if not world.is_main:
        ui.set_quiet(True)
    try:
        return _train(world, preset, data, out, tokenizer, max_steps, resume, force, normalizer, stop_after)
    finally:
        ui.set_quiet(quiet_before)
        dist_utils.teardown(world)


def _train(world, preset, data, out, tokenizer, max_steps, resume, force, normalizer, stop_after) -> TrainResult:
    setup = _resumed_run(preset, data, out, tokenizer) if resume else _new_run(preset, data, out, tokenizer)
    out, tcfg = setup.out, setup.tcfg
    if max_steps is not None:
        tcfg.max_steps = int(max_steps)
    _check_settings(tcfg, setup.config, world)
    if setup.preset is not None:
        dist_utils.run_on_main(lambda: prepare_run(out, setup.preset, data, tokenizer, normalizer, force), world)
        if world.distributed:
            torch.distributed.barrier()
    run = _start(world, setup)
    val_history: list[tuple[int, float]] = []
    if run.step >= tcfg.max_steps:
        ui.info(f"the run is already at step {run.step} of {tcfg.max_steps}: pass --max-steps to train further")
        losses, tok_s, wall = [], 0.0, 0.0
    else:
        losses, tok_s, wall = train_loop(run, stop_after, val_history)
    return TrainResult(
        checkpoint=out / CKPT_NAME,
        tokenizer=out / TOKENIZER_FILE,
        step=run.step,
        losses=losses,
        val_history=val_history,
        val_loss=run.val_loss,
        val_ppl=math.exp(run.val_loss) if run.val_loss is not None else None,
        tokens_per_second=tok_s,
        wall_seconds=wall,
        tokens_seen=run.step * run.tokens_per_step,
    )


def _start(world: dist_utils.World, setup: _Setup) -> Run:
    """The run's tokenizer, token files, model and optimizer (restored when resuming), said in one line."""
    out, config, tcfg, state = setup.out, setup.config, setup.tcfg, setup.state
    tok = load_tokenizer(out / TOKENIZER_FILE)
    check_vocab_fits(tok, config.vocab_size, where=str(out / TOKENIZER_FILE), fix=TRAIN_FIX)
    tokens = TokenData.open(out / DATA_DIR)
    model, raw_model, optimizer = _build(world, config, tcfg, state)
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
        step=int(state["step"]) if state else 0,
        prior_wall=setup.prior_wall,
        val_loss=(state.get("training") or {}).get("val_loss") if state else None,
    )
    ui.info(
        f"model: {raw_model.num_parameters() / 1e6:.2f} M parameters; {tokens.train.size:,} train / "
        f"{tokens.val.size:,} val tokens; {run.tokens_per_step:,} tokens per step on {world.world_size} process(es), "
        f"{precision_of(tcfg, world.device)}"
    )
    if tcfg.bf16 and not bf16_supported(world.device):
        ui.info(f"bf16 requested, but {world.device.type} here has no fast bf16 matmul: training in float32")
    return run
