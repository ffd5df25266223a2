"""Builders for test inputs: a reference-style tokenizer and native checkpoints, made here, no downloads.

`make_reference_tokenizer` reproduces the reference implementation's tokenizer exactly (NFKC
normalizer, ByteLevel BPE, `<unk> <bos> <eos> <pad> <sep>` in id order, a post-processor that
wraps every text in `<bos> ... <eos>`), so converters are tested against what users really have.
`make_checkpoint` writes the reference's checkpoint layout (model, optimizer, step, config) with
random weights scaled up so logits are far from uniform and parity tests have teeth.
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from mythos_convert.model.config import MythosConfig
from mythos_convert.model.model import Mythos

SPECIALS = ["<unk>", "<bos>", "<eos>", "<pad>", "<sep>"]
# Written by the reference implementation itself (its README says how); ../shared beside the clone.
REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "reference"
# How far float32 logits computed here may sit from the ones the reference implementation wrote on
# its machine: summation order differs by CPU and BLAS path. Worst seen 1.24e-5 on the reference's
# 100 x 512 logits (AMD EPYC Zen 4, torch 2.13, ATEN_CPU_CAPABILITY=avx2; 1.05e-5 on its default
# AVX-512 path); a wrong RMSNorm eps (1e-5 for the fixture's 1e-6) moves them by 1.5e-2.
REFERENCE_LOGITS_ATOL = 2e-5


def require_reference(relative: str = "ref_small.pt") -> Path:
    """A file of ../shared's reference fixture: a skip where it is absent, a failure under CI.

    The ground-truth tests must never pass in CI by not running: with `CI` set (CI runners set it),
    a missing fixture fails the test, naming the path that should be there.
    """
    import pytest

    path = REFERENCE / relative
    if not path.is_file():
        message = f"the reference fixture is missing: expected {path} (../shared beside the clone)"
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def compat_root() -> Path:
    """Where the compatibility tests build their venvs (transformers 4.x, vLLM): $MYTHOS_COMPAT_DIR, else .compat/."""
    return Path(os.environ.get("MYTHOS_COMPAT_DIR") or Path(__file__).resolve().parents[1] / ".compat")


def sample_corpus(max_chars: int = 200_000) -> list[str]:
    """English docstrings of a few standard-library modules: present on every machine."""
    import argparse
    import collections
    import json as json_mod
    import pathlib
    import textwrap
    import unittest

    texts: list[str] = []
    for module in (collections, json_mod, pathlib, argparse, textwrap, unittest):
        for _, obj in inspect.getmembers(module):
            doc = inspect.getdoc(obj)
            if doc and len(doc) > 40:
                texts.append(doc)
    texts.append("Unicode: café naïve 東京 😀 Ω ﬁle ｆｕｌｌ１２３")
    out, total = [], 0
    for text in dict.fromkeys(texts):
        out.append(text)
        total += len(text)
        if total > max_chars:
            break
    return out


def make_reference_tokenizer(path: Path, vocab_size: int = 512, nfkc: bool = True) -> Path:
    """Train and save a tokenizer shaped exactly like the reference's; returns the file path."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    if nfkc:
        tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(sample_corpus(), trainer=trainer)
    bos, eos = tok.token_to_id("<bos>"), tok.token_to_id("<eos>")
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>",
        pair="<bos> $A <eos> $B:1 <eos>:1",
        special_tokens=[("<bos>", bos), ("<eos>", eos)],
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(path))
    return path


def export_reference(out: Path) -> Path:
    """The reference checkpoint exported to the HF folder `out` with its own tokenizer, unverified and
    without a card: the folder the other runtimes' tests load. Returns the folder."""
    from mythos_convert.api import export_hf

    require_reference()
    tokenizer = REFERENCE / "tokenizer" / "tokenizer.json"
    return export_hf(REFERENCE / "ref_small.pt", out, tokenizer=tokenizer, verify=False, card=False).folder


def tiny_config(vocab_size: int = 512, **overrides) -> MythosConfig:
    """2 layers, GQA 4/2, head_dim 16, SwiGLU width 256: tiny but exercises every code path."""
    fields = dict(vocab_size=vocab_size, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=192, max_seq_len=128)
    fields.update(overrides)
    return MythosConfig(**fields).validate()


def random_model(config: MythosConfig, seed: int = 0, scale: float = 5.0) -> Mythos:
    """A model with random weights scaled by `scale` and randomised norms (logits far from uniform)."""
    torch.manual_seed(seed)
    model = Mythos(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.copy_(1.0 + 0.3 * torch.randn_like(param))
            else:
                param.mul_(scale)
    return model.eval()


def make_checkpoint(
    path: Path,
    config: MythosConfig,
    *,
    seed: int = 0,
    prefix: str = "",
    embed_config: bool = True,
    with_optimizer: bool = True,
    step: int = 123,
    extra: dict | None = None,
) -> Path:
    """Write a checkpoint in the reference's layout (plain torch.save, no extras of ours).

    `prefix` ("_orig_mod." or "module.") mimics compiled / DDP saves; `embed_config=False` mimics
    older files whose config lives in a separate YAML.
    """
    model = random_model(config, seed)
    state = {prefix + k: v for k, v in model.state_dict().items()}
    payload: dict = {"model": state, "step": step}
    if with_optimizer:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        model(torch.zeros(1, 4, dtype=torch.long)).sum().backward()
        opt.step()
        payload["optimizer"] = opt.state_dict()
    if embed_config:
        payload["config"] = config.to_dict()
    if extra:
        payload.update(extra)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path)
    return path


def write_config_yaml(path: Path, config: MythosConfig) -> Path:
    import yaml

    path.write_text(yaml.safe_dump({"model": config.to_dict()}))
    return path


def tokenizer_vocab_size(path: Path) -> int:
    return len(json.loads(Path(path).read_text())["model"]["vocab"])
