"""The reference trainer: data preparation, AdamW with warmup + cosine, DDP, exact resume.

A run lives in one folder: `tokenizer.json`, `data/` (memory-mapped token files and their
report) and `ckpt.pt` (native format, written atomically every `save_interval` steps and at the
end). Batches are a pure function of (seed, step, micro-step), never of a stateful generator, so
a resumed run draws exactly the batches the uninterrupted run would have drawn; together with the
restored weights, optimizer and RNG states the loss curve continues bit for bit.

Under `torchrun --nproc_per_node N` each rank takes rows `rank::N` of every global micro-batch,
so N processes compute the same global batch as one process (up to floating-point reduction
order). Only rank 0 writes files and shows progress.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from mythos_convert.data.pipeline import TokenData
from mythos_convert.data.tokenizer import TRAIN_FIX, check_vocab_fits, load_tokenizer, tokenizer_json_text
from mythos_convert.errors import MythosError
from mythos_convert.formats.checkpoint import save_checkpoint
from mythos_convert.model.config import MythosConfig, TrainingConfig, load_preset
from mythos_convert.model.model import Mythos
from mythos_convert.support import ui
from mythos_convert.support.safe_paths import refuse_output_over_inputs
from mythos_convert.train import distributed as dist_utils
from mythos_convert.train.run_folder import (
    CKPT_NAME,
    DATA_DIR,
    PRESET_NAME,
    TOKENIZER_NAME,
    load_resume,
    prepare_run,
)
from mythos_convert.train.schedule import describe, lr_at, make_optimizer

STATE_KEY = "trainer_state"  # extra checkpoint key: RNG states for exact resume (ignored by the reference)


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


# ---------------------------------------------------------------- batches


def batch_offsets(seed: int, step: int, micro: int, rows: int, high: int) -> np.ndarray:
    """Start positions of one global micro-batch: a pure function of (seed, step, micro)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, step, micro]))
    return rng.integers(0, high, size=rows)


def windows(tokens: np.ndarray, offsets: np.ndarray, seq_len: int, device: torch.device):
    """Inputs and next-token targets [rows, seq_len] starting at `offsets`."""
    chunk = np.stack([tokens[o : o + seq_len + 1] for o in offsets]).astype(np.int64)
    chunk = torch.from_numpy(chunk).to(device)
    return chunk[:, :-1], chunk[:, 1:]


def bf16_supported(device: torch.device) -> bool:
    """Whether bf16 autocast is fast here: a bf16 GPU, or a CPU with native bf16 (AVX512-BF16/AMX).

    On other CPUs torch runs bf16 matmuls several times slower than float32, so we train in float32.
    """
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


def _autocast(cfg: TrainingConfig, device: torch.device):
    if not (cfg.bf16 and bf16_supported(device)):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def precision_of(cfg: TrainingConfig, device: torch.device) -> str:
    return "bf16 autocast (float32 weights)" if cfg.bf16 and bf16_supported(device) else "float32"


# ---------------------------------------------------------------- the loop


@dataclass
class _Run:
    """Everything the loop touches."""

    world: dist_utils.World
    config: MythosConfig
    tcfg: TrainingConfig
    model: torch.nn.Module  # maybe DDP-wrapped
    raw_model: Mythos
    optimizer: torch.optim.Optimizer
    tokens: TokenData
    out: Path
    tokenizer_json: str
    step: int = 0
    prior_wall: float = 0.0
    val_loss: float | None = None

    @property
    def tokens_per_step(self) -> int:
        return self.tcfg.batch_size * self.tcfg.gradient_accumulation_steps * self.tcfg.seq_len


def _train_step(run: _Run) -> float:
    """One optimizer step over the global batch; returns its mean loss (same on every rank)."""
    cfg, world = run.tcfg, run.world
    lr = lr_at(run.step, cfg)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    high = run.tokens.train.size - cfg.seq_len - 1
    total = torch.zeros((), device=world.device)
    for micro in range(cfg.gradient_accumulation_steps):
        offsets = batch_offsets(cfg.seed, run.step, micro, cfg.batch_size, high)[world.rank :: world.world_size]
        x, y = windows(run.tokens.train, offsets, cfg.seq_len, world.device)
        last = micro == cfg.gradient_accumulation_steps - 1
        sync = contextlib.nullcontext() if last or not world.distributed else run.model.no_sync()
        with sync:
            with _autocast(cfg, world.device):
                _, loss = run.model(x, y)
            (loss / cfg.gradient_accumulation_steps).backward()
        total += loss.detach() / cfg.gradient_accumulation_steps
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), cfg.grad_clip)
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    run.step += 1
    return float(dist_utils.all_reduce_mean(total, run.world))


@torch.no_grad()
def evaluate(run: _Run) -> float:
    """Mean validation loss over evenly spaced windows (the same windows every time)."""
    cfg, world = run.tcfg, run.world
    val = run.tokens.val
    seq_len = min(cfg.seq_len, val.size - 1)
    n_windows = max(1, cfg.eval_steps * cfg.batch_size)
    offsets = np.unique(np.linspace(0, val.size - seq_len - 1, n_windows).astype(np.int64))
    run.model.eval()
    sums = torch.zeros(2, dtype=torch.float64, device=world.device)  # loss sum, token count
    mine = offsets[world.rank :: world.world_size]
    for start in range(0, mine.size, cfg.batch_size):
        x, y = windows(val, mine[start : start + cfg.batch_size], seq_len, world.device)
        with _autocast(cfg, world.device):
            _, loss = run.raw_model(x, y)
        sums += torch.tensor([float(loss) * y.numel(), y.numel()], dtype=torch.float64, device=world.device)
    run.model.train()
    sums = dist_utils.all_reduce_sum(sums, world)
    return float(sums[0] / sums[1])


def _rng_states(world: dist_utils.World) -> list[dict[str, torch.Tensor]]:
    """Every rank's torch RNG states (dropout draws from them), gathered on all ranks."""
    state = {"cpu": torch.get_rng_state()}
    if world.device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(world.device)
    if not world.distributed:
        return [state]
    gathered: list[Any] = [None] * world.world_size
    torch.distributed.all_gather_object(gathered, state)
    return gathered


def _save(run: _Run, wall: float) -> None:
    states = _rng_states(run.world)  # collective: every rank takes part
    if not run.world.is_main:
        return
    tcfg = run.tcfg
    optimizer_desc, schedule_desc = describe(tcfg)
    val_loss = run.val_loss
    facts = {
        "tokens_seen": run.step * run.tokens_per_step,
        "train_config": tcfg.to_dict(),
        "data": run.tokens.facts,
        "val_loss": val_loss,
        "val_ppl": math.exp(val_loss) if val_loss is not None else None,
        "optimizer": optimizer_desc,
        "schedule": schedule_desc,
        "precision": precision_of(tcfg, run.world.device),
        "hardware": dist_utils.hardware_description(run.world),
        "world_size": run.world.world_size,
        "wall_seconds": round(run.prior_wall + wall, 2),
    }
    facts = {k: v for k, v in facts.items() if v is not None}
    extra = {STATE_KEY: {"rng": states, "world_size": run.world.world_size, "data_position": run.step}}
    save_checkpoint(
        run.out / CKPT_NAME,
        run.raw_model.state_dict(),
        run.config,
        step=run.step,
        optimizer_state=run.optimizer.state_dict(),
        tokenizer_json=run.tokenizer_json,
        training=facts,
        extra=extra,
    )


def _loop(run: _Run, stop_after: int | None, val_history: list[tuple[int, float]]) -> tuple[list[float], float, float]:
    """Train to max_steps (or stop_after); returns losses, tokens/s and wall seconds."""
    tcfg = run.tcfg
    end = tcfg.max_steps if stop_after is None else min(stop_after, tcfg.max_steps)
    losses: list[float] = []
    started = time.perf_counter()
    window_start, window_steps, tok_s = started, 0, 0.0
    with ui.progress_task("training", total=tcfg.max_steps) as advance:
        advance(run.step)
        if run.step == 0:  # the untrained model's loss: the baseline the run is measured against
            val_history.append((0, evaluate(run)))
            ui.info(f"step 0  val loss {val_history[-1][1]:.4f} (uniform: {math.log(run.config.vocab_size):.4f})")
        while run.step < end:
            losses.append(_train_step(run))
            advance(1)
            window_steps += 1
            if run.step % tcfg.log_interval == 0 or run.step == end:
                now = time.perf_counter()
                tok_s = window_steps * run.tokens_per_step / max(now - window_start, 1e-9)
                window_start, window_steps = now, 0
                lr = lr_at(run.step - 1, tcfg)
                ui.info(f"step {run.step}/{tcfg.max_steps}  loss {losses[-1]:.4f}  lr {lr:.2e}  {tok_s:,.0f} tok/s")
            if run.step % tcfg.eval_interval == 0 or run.step == end:
                run.val_loss = evaluate(run)
                val_history.append((run.step, run.val_loss))
                ui.info(f"step {run.step}  val loss {run.val_loss:.4f}  val ppl {math.exp(run.val_loss):.2f}")
            if run.step % tcfg.save_interval == 0 or run.step == end:
                _save(run, time.perf_counter() - started)
    wall = time.perf_counter() - started
    overall = len(losses) * run.tokens_per_step / max(wall, 1e-9)
    return losses, overall, wall


# ---------------------------------------------------------------- entry point


def _check_batch(tcfg: TrainingConfig, world: dist_utils.World) -> None:
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
    state = None
    if resume:
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
            config, tcfg, prior_wall = saved.model, saved.training, 0.0
        else:
            facts = state.get("training") or {}
            config = MythosConfig.from_dict(dict(state["config"]))
            tcfg = TrainingConfig.from_dict(dict(facts.get("train_config") or {}))
            prior_wall = float(facts.get("wall_seconds", 0.0))
    else:
        loaded = load_preset(preset or "tiny")
        out = Path(out) if out is not None else Path("runs") / loaded.name
        preset_file = Path(preset) if preset is not None and Path(preset).is_file() else None
        refuse_output_over_inputs(
            out, [("preset", preset_file), ("tokenizer", tokenizer), *(("data", d) for d in data or [])]
        )
        config, tcfg, prior_wall = loaded.model, loaded.training, 0.0
    if max_steps is not None:
        tcfg.max_steps = int(max_steps)
    _check_batch(tcfg, world)
    if tcfg.seq_len > config.max_seq_len:
        raise MythosError(
            f"training seq_len {tcfg.seq_len} exceeds the model's max_seq_len {config.max_seq_len}: lower seq_len "
            "under `training:` or raise max_seq_len under `model:`"
        )
    if not resume:
        dist_utils.run_on_main(lambda: prepare_run(out, loaded, data, tokenizer, normalizer, force), world)
        if world.distributed:
            torch.distributed.barrier()
    tok = load_tokenizer(out / TOKENIZER_NAME)
    check_vocab_fits(tok, config.vocab_size, where=str(out / TOKENIZER_NAME), fix=TRAIN_FIX)
    tokens = TokenData.open(out / DATA_DIR)
    model, raw_model, optimizer = _build(world, config, tcfg, state)
    run = _Run(
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
        prior_wall=prior_wall,
        val_loss=(state.get("training") or {}).get("val_loss") if state else None,
    )
    ui.info(
        f"model: {raw_model.num_parameters() / 1e6:.2f} M parameters; {tokens.train.size:,} train / "
        f"{tokens.val.size:,} val tokens; {run.tokens_per_step:,} tokens per step on {world.world_size} process(es), "
        f"{precision_of(tcfg, world.device)}"
    )
    if tcfg.bf16 and not bf16_supported(world.device):
        ui.info(f"bf16 requested, but {world.device.type} here has no fast bf16 matmul: training in float32")
    val_history: list[tuple[int, float]] = []
    if run.step >= tcfg.max_steps:
        ui.info(f"the run is already at step {run.step} of {tcfg.max_steps}: pass --max-steps to train further")
        losses, tok_s, wall = [], 0.0, 0.0
    else:
        losses, tok_s, wall = _loop(run, stop_after, val_history)
    return TrainResult(
        checkpoint=out / CKPT_NAME,
        tokenizer=out / TOKENIZER_NAME,
        step=run.step,
        losses=losses,
        val_history=val_history,
        val_loss=run.val_loss,
        val_ppl=math.exp(run.val_loss) if run.val_loss is not None else None,
        tokens_per_second=tok_s,
        wall_seconds=wall,
        tokens_seen=run.step * run.tokens_per_step,
    )
