"""Scale-out: `torchrun --nproc_per_node 2` (gloo, CPU) matches one process with the same global batch.

Each rank takes half the rows of every global micro-batch and DDP averages the gradients, so the
two runs differ only in floating-point reduction order. Measured on 20 steps: weights agree to
~1e-6 and losses to ~1e-6; the test allows 1e-4 (absolute on weights of magnitude ~0.1-1,
relative on losses) so that thread-count differences never flake it.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from trainkit import write_corpus, write_preset

from mythos_convert.formats.checkpoint import load_checkpoint
from mythos_convert.model.model import Mythos
from mythos_convert.train.trainer import train

WEIGHT_ATOL = 1e-4
LOSS_RTOL = 1e-4


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(tmp_path):
    preset = write_preset(tmp_path / "mini.yaml", max_steps=20, eval_interval=10, save_interval=20)
    corpus = write_corpus(tmp_path / "corpus.jsonl", max_chars=100_000)
    single = train(preset, [corpus], tmp_path / "single", device="cpu")

    env = {**os.environ, "MYTHOS_QUIET": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "mythos_convert", "train", "--preset", str(preset), "--data", str(corpus),
           "--out", str(tmp_path / "ddp"), "--quiet"]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]

    one, two = load_checkpoint(single.checkpoint), load_checkpoint(tmp_path / "ddp" / "ckpt.pt")
    assert two.training["world_size"] == 2 and two.step == one.step == 20
    assert (tmp_path / "ddp" / "tokenizer.json").read_text() == (tmp_path / "single" / "tokenizer.json").read_text()
    assert not any(
        k.startswith("module.") for k in torch.load(tmp_path / "ddp" / "ckpt.pt", weights_only=True)["model"]
    )
    worst = 0.0
    for name, tensor in one.state_dict.items():
        diff = (tensor - two.state_dict[name]).abs().max().item()
        worst = max(worst, diff)
        assert diff <= WEIGHT_ATOL, f"{name}: max |diff| {diff:.2e}"
    print(f"max weight difference single vs 2-process DDP: {worst:.2e}")
    assert two.training["tokens_seen"] == one.training["tokens_seen"]
    assert two.training["val_loss"] == pytest.approx(one.training["val_loss"], rel=LOSS_RTOL)
    torch.manual_seed(7)  # the preset's seed: the weights both runs started from
    start = Mythos(one.config).state_dict()["embedding.weight"]
    assert (one.state_dict["embedding.weight"] - start).abs().max() > 100 * WEIGHT_ATOL  # training moved them
