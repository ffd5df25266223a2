"""Small inputs for trainer tests: a preset YAML tiny enough for tens of CPU steps, and a JSONL corpus."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from helpers import sample_corpus

MODEL = dict(vocab_size=512, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=192, max_seq_len=128)
TRAINING = dict(
    batch_size=8,
    gradient_accumulation_steps=2,
    seq_len=64,
    learning_rate=3e-3,
    min_lr=3e-4,
    warmup_steps=5,
    max_steps=30,
    weight_decay=0.1,
    grad_clip=1.0,
    bf16=False,
    eval_interval=10,
    eval_steps=2,
    save_interval=10,
    log_interval=5,
    seed=7,
)


def write_preset(path: Path, model: dict | None = None, **training) -> Path:
    path.write_text(yaml.safe_dump({"model": {**MODEL, **(model or {})}, "training": {**TRAINING, **training}}))
    return path


def write_corpus(path: Path, max_chars: int = 150_000) -> Path:
    path.write_text("\n".join(json.dumps({"text": t}) for t in sample_corpus(max_chars)), encoding="utf-8")
    return path
