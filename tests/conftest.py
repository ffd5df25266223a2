"""Shared fixtures: a reference-style tokenizer and tiny native checkpoints, built once per session."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from helpers import make_checkpoint, make_reference_tokenizer, require_reference, tiny_config

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def ref_tokenizer_path(tmp_path_factory) -> Path:
    """tokenizer.json shaped like the reference's (NFKC, `<bos> $A <eos>` post-processor), vocab 512."""
    return make_reference_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer.json", vocab_size=512)


@pytest.fixture(scope="session")
def tiny_cfg():
    return tiny_config(vocab_size=512)


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory, ref_tokenizer_path, tiny_cfg) -> Path:
    """A reference-layout checkpoint (optimizer state included) with tokenizer.json beside it."""
    folder = tmp_path_factory.mktemp("ckpt")
    (folder / "tokenizer.json").write_bytes(ref_tokenizer_path.read_bytes())
    return make_checkpoint(folder / "ckpt.pt", tiny_cfg)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from threads, and on a shared CI machine threads oversubscribe."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def reference() -> dict:
    """The reference implementation's expected ids, logits and greedy tokens (../shared; CI fails without it)."""
    require_reference()
    return json.loads(require_reference("ref_small_expected.json").read_text())
