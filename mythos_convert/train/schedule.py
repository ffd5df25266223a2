"""Learning-rate schedule and optimizer construction, the reference's recipe."""

from __future__ import annotations

import math

import torch
from torch import nn

from mythos_convert.model.config import TrainingConfig

BETAS = (0.9, 0.95)


def lr_at(step: int, cfg: TrainingConfig) -> float:
    """Linear warmup over `warmup_steps`, then cosine decay to the `min_lr` floor at `max_steps`."""
    warmup = min(cfg.warmup_steps, cfg.max_steps)
    if step < warmup:
        return cfg.learning_rate * (step + 1) / warmup
    if step >= cfg.max_steps:
        return cfg.min_lr
    progress = (step - warmup) / max(1, cfg.max_steps - warmup)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.learning_rate - cfg.min_lr)


def make_optimizer(model: nn.Module, cfg: TrainingConfig) -> torch.optim.AdamW:
    """AdamW(0.9, 0.95); weight decay on matrices (2-D: linears, the tied embedding), none on norms."""
    params = [p for p in model.parameters() if p.requires_grad]  # tied weights appear once
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=BETAS, foreach=True)


def describe(cfg: TrainingConfig) -> tuple[str, str]:
    """(optimizer, schedule) in words, for the model card."""
    optimizer = f"AdamW(betas={BETAS}, weight_decay={cfg.weight_decay} on matrices, none on norms)"
    warmup = min(cfg.warmup_steps, cfg.max_steps)
    schedule = (
        f"linear warmup {warmup} steps to {cfg.learning_rate:g}, cosine to {cfg.min_lr:g} at step "
        f"{cfg.max_steps}; gradient clipping {cfg.grad_clip:g}"
    )
    return optimizer, schedule
