"""The training loop: batches, one optimizer step, validation, checkpoints.

Batches are a pure function of (seed, step, micro-step), never of a stateful generator, so a
resumed run draws exactly the batches the uninterrupted run would have drawn. Under DDP each rank
takes rows `rank::N` of every global micro-batch; only rank 0 writes the checkpoint (with every
rank's RNG states, under `STATE_KEY`, for an exact resume) and shows progress.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mythos_convert.data.pipeline import TokenData
from mythos_convert.formats.checkpoint import save_checkpoint
from mythos_convert.model.config import MythosConfig, TrainingConfig
from mythos_convert.model.model import Mythos
from mythos_convert.support import ui
from mythos_convert.train import distributed as dist_utils
from mythos_convert.train import strategy as strategies
from mythos_convert.train.dcp_checkpoint import DcpSaver, encode_rng
from mythos_convert.train.run_folder import CKPT_NAME, STATE_KEY
from mythos_convert.train.schedule import describe, lr_at

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


def autocast(cfg: TrainingConfig, device: torch.device):
    if not (cfg.bf16 and bf16_supported(device)):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def precision_of(cfg: TrainingConfig, device: torch.device, strategy: str = "ddp") -> str:
    if strategies.mixed_precision(device, cfg.bf16) is not None and strategy == "fsdp":
        return "bf16 FSDP mixed precision (float32 shards and reduction)"
    return "bf16 autocast (float32 weights)" if cfg.bf16 and bf16_supported(device) else "float32"


def _autocast(run: Run):
    if not strategies.uses_autocast(run.strategy, run.world.device):
        return contextlib.nullcontext()
    return autocast(run.tcfg, run.world.device)


# ---------------------------------------------------------------- the loop


@dataclass
class Run:
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
    strategy: str = "ddp"
    activation_checkpointing: bool = False
    saver: DcpSaver | None = None  # set: checkpoints are DCP folders; None: ckpt.pt

    @property
    def tokens_per_step(self) -> int:
        return self.tcfg.batch_size * self.tcfg.gradient_accumulation_steps * self.tcfg.seq_len


def train_step(run: Run) -> float:
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
        with strategies.grad_sync(run.model, run.strategy, last):
            with _autocast(run):
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
def evaluate(run: Run) -> float:
    """Mean validation loss over evenly spaced windows (the same windows every time)."""
    cfg, world = run.tcfg, run.world
    val = run.tokens.val
    seq_len = min(cfg.seq_len, val.size - 1)
    n_windows = max(1, cfg.eval_steps * cfg.batch_size)
    offsets = np.unique(np.linspace(0, val.size - seq_len - 1, n_windows).astype(np.int64))
    run.model.eval()
    sums = torch.zeros(2, dtype=torch.float64, device=world.device)  # loss sum, token count
    mine = offsets[world.rank :: world.world_size]
    per_rank = -(-offsets.size // world.world_size)
    for start in range(0, per_rank, cfg.batch_size):  # the same number of batches on every rank (FSDP)
        chunk, weight = mine[start : start + cfg.batch_size], 1.0
        if chunk.size == 0:  # this rank has run out: a forward all the same, counted as nothing
            chunk, weight = offsets[:1], 0.0
        x, y = windows(val, chunk, seq_len, world.device)
        with _autocast(run):
            _, loss = run.raw_model(x, y)
        count = y.numel() * weight
        sums += torch.tensor([float(loss) * count, count], dtype=torch.float64, device=world.device)
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


def _facts(run: Run, wall: float) -> dict[str, Any]:
    """The run's facts as the checkpoint records them (the card reads them)."""
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
        "precision": precision_of(tcfg, run.world.device, run.strategy),
        "hardware": dist_utils.hardware_description(run.world),
        "world_size": run.world.world_size,
        "strategy": strategies.describe(run.strategy, run.world, run.activation_checkpointing),
        "wall_seconds": round(run.prior_wall + wall, 2),
    }
    return {k: v for k, v in facts.items() if v is not None}


def save(run: Run, wall: float) -> None:
    """Write the checkpoint: ckpt.pt by rank 0, or a DCP folder (every rank its shards, in the background)."""
    states = _rng_states(run.world)  # collective: every rank takes part
    facts = _facts(run, wall)
    if run.saver is not None:
        sidecar = {
            "config": run.config.to_dict(),
            "step": run.step,
            "world_size": run.world.world_size,
            "training": {"data_position": run.step, "rng": encode_rng(states), "facts": facts},
        }
        run.saver.save(run.model, run.optimizer, sidecar, run.tokenizer_json)
        return
    if not run.world.is_main:
        return
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


def train_loop(
    run: Run, stop_after: int | None, val_history: list[tuple[int, float]]
) -> tuple[list[float], float, float]:
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
            losses.append(train_step(run))
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
                save(run, time.perf_counter() - started)
    if run.saver is not None:
        run.saver.wait()  # the last save finished and in place before the run returns
    wall = time.perf_counter() - started
    overall = len(losses) * run.tokens_per_step / max(wall, 1e-9)
    return losses, overall, wall
