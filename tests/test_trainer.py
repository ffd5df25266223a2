"""The trainer: it learns, its checkpoint is complete, resume is exact, and bad input fails cleanly."""

from __future__ import annotations

import math
import sys

import pytest
import torch
from trainkit import MODEL, write_corpus, write_preset

from mythos_convert.data.tokenizer import load_tokenizer, special_tokens
from mythos_convert.formats.checkpoint import load_checkpoint, load_model
from mythos_convert.train.schedule import lr_at, make_optimizer
from mythos_convert.train.trainer import train

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inputs")
    return write_preset(folder / "mini.yaml"), write_corpus(folder / "corpus.jsonl")


@pytest.fixture(scope="module")
def full_run(inputs, tmp_path_factory):
    preset, corpus = inputs
    out = tmp_path_factory.mktemp("runs") / "full"
    return train(preset, [corpus], out, device="cpu")


def test_short_run_lowers_validation_loss(full_run):
    history = full_run.val_history
    assert [step for step, _ in history] == [0, 10, 20, 30]
    uniform = math.log(MODEL["vocab_size"])
    assert history[0][1] == pytest.approx(uniform, abs=0.3)  # untrained: about uniform
    assert history[-1][1] < history[0][1] - 0.8
    assert full_run.losses[-1] < full_run.losses[0] - 0.6
    assert full_run.val_ppl == pytest.approx(math.exp(full_run.val_loss))


def test_checkpoint_carries_weights_tokenizer_and_facts(full_run):
    ckpt = load_checkpoint(full_run.checkpoint)
    assert ckpt.step == 30
    model = load_model(ckpt)  # strict load of what we wrote
    assert model.config.vocab_size == MODEL["vocab_size"]
    assert (
        ckpt.tokenizer_json
        and load_tokenizer(full_run.tokenizer).to_str() == load_tokenizer(full_run.tokenizer).to_str()
    )
    assert special_tokens(load_tokenizer(full_run.tokenizer)).id("eos") == 2
    facts = ckpt.training
    assert facts["tokens_seen"] == 30 * 8 * 2 * 64 == full_run.tokens_seen
    assert facts["val_loss"] == pytest.approx(full_run.val_loss)
    assert facts["train_config"]["max_steps"] == 30 and facts["world_size"] == 1
    assert facts["data"]["train_tokens"] > 0 and facts["data"]["documents_read"] > 0
    for key in ("optimizer", "schedule", "precision", "hardware", "wall_seconds", "val_ppl"):
        assert key in facts
    optimizer = ckpt.raw["optimizer"]
    assert len(optimizer["state"]) == len(list(model.parameters()))


def test_resume_continues_bit_for_bit(full_run, inputs, tmp_path):
    preset, corpus = inputs
    out = tmp_path / "resumed"
    first = train(preset, [corpus], out, device="cpu", stop_after=15)
    assert first.step == 15 and load_checkpoint(out / "ckpt.pt").step == 15
    second = train(out=out, resume=True, device="cpu")
    assert second.step == 30
    assert first.losses + second.losses == full_run.losses  # exact equality, not approximate
    straight = load_checkpoint(full_run.checkpoint)
    resumed = load_checkpoint(out / "ckpt.pt")
    for name, tensor in straight.state_dict.items():
        assert torch.equal(tensor, resumed.state_dict[name]), name
    assert resumed.training["val_loss"] == straight.training["val_loss"]
    assert resumed.training["tokens_seen"] == straight.training["tokens_seen"]


def test_schedule_and_weight_decay_groups(inputs):
    from mythos_convert.model.config import load_preset
    from mythos_convert.model.model import Mythos

    cfg = load_preset(inputs[0]).training
    lrs = [lr_at(s, cfg) for s in range(cfg.max_steps + 1)]
    assert lrs[0] == pytest.approx(cfg.learning_rate / cfg.warmup_steps)
    assert max(lrs) == pytest.approx(cfg.learning_rate) == lrs[cfg.warmup_steps - 1]
    assert lrs[-1] == pytest.approx(cfg.min_lr) and min(lrs[cfg.warmup_steps :]) >= cfg.min_lr
    groups = make_optimizer(Mythos(load_preset(inputs[0]).model), cfg).param_groups
    assert groups[0]["weight_decay"] == 0.1 and all(p.dim() == 2 for p in groups[0]["params"])
    assert groups[1]["weight_decay"] == 0.0 and all(p.dim() == 1 for p in groups[1]["params"])
    assert groups[0]["betas"] == (0.9, 0.95)


# ---------------------------------------------------------------- the command line


def _cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    from mythos_convert.cli import main

    monkeypatch.setattr(sys, "argv", ["mythos-convert", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    captured = capsys.readouterr()
    return int(exc.value.code or 0), captured.out, captured.err


def test_cli_train_writes_checkpoint_and_tokenizer(monkeypatch, capsys, inputs, tmp_path):
    preset, corpus = inputs
    out = tmp_path / "cli"
    code, stdout, err = _cli(
        monkeypatch, capsys, "train", "--preset", str(preset), "--data", str(corpus), "--out", str(out),
        "--max-steps", "3", "--quiet",
    )  # fmt: skip
    assert code == 0, err
    assert (out / "ckpt.pt").is_file() and (out / "tokenizer.json").is_file()
    assert "step 3" in stdout and load_checkpoint(out / "ckpt.pt").step == 3


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing data", "does not exist"),
        ("no usable text", "no usable text"),
        ("heads do not divide", "not divisible by n_heads"),
        ("tokenizer too large", "but the model's vocab_size is 512"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2_nothing_written(monkeypatch, capsys, inputs, tmp_path, case, message):
    preset, corpus = inputs
    data = corpus
    tokenizer = []
    if case == "missing data":
        data = tmp_path / "missing.jsonl"
    elif case == "no usable text":
        data = tmp_path / "empty.txt"
        data.write_text("\n\n  \x00\n")
    elif case == "heads do not divide":
        preset = write_preset(tmp_path / "bad.yaml", model={"n_heads": 3})
    else:
        from helpers import make_reference_tokenizer

        tokenizer = ["--tokenizer", str(make_reference_tokenizer(tmp_path / "big.json", vocab_size=600))]
    out = tmp_path / "run"
    args = ["train", "--preset", str(preset), "--data", str(data), "--out", str(out), "--quiet", *tokenizer]
    code, _, err = _cli(monkeypatch, capsys, *args)
    assert code == 2
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".run")]  # no temporary leftovers


def test_cli_refuses_non_empty_output_and_resume_without_checkpoint(monkeypatch, capsys, inputs, tmp_path):
    preset, corpus = inputs
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    code, _, err = _cli(monkeypatch, capsys, "train", "--preset", str(preset), "--data", str(corpus), "--out", str(out))
    assert code == 2 and "--resume" in err and "--force" in err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    code, _, err = _cli(monkeypatch, capsys, "train", "--out", str(out), "--resume")
    assert code == 2 and "nothing to resume" in err


def test_cli_tokenizer_train(monkeypatch, capsys, inputs, tmp_path):
    out = tmp_path / "tok.json"
    args = ["tokenizer", "train", "--data", str(inputs[1]), "--vocab-size", "400", "--out", str(out), "-q"]
    code, stdout, err = _cli(monkeypatch, capsys, *args)
    assert code == 0, err
    assert load_tokenizer(out).get_vocab_size() == 400 and "400 tokens" in stdout
    code, _, err = _cli(monkeypatch, capsys, *args)
    assert code == 2 and "already exists" in err


def test_resume_before_the_first_checkpoint_starts_the_prepared_run(inputs, tmp_path):
    preset, corpus = inputs
    out = tmp_path / "early"
    first = train(preset, [corpus], out, max_steps=4, stop_after=0, device="cpu")
    assert first.step == 0 and not (out / "ckpt.pt").exists() and (out / "preset.yaml").is_file()
    second = train(out=out, resume=True, device="cpu")
    assert second.step == 4 and load_checkpoint(out / "ckpt.pt").training["train_config"]["max_steps"] == 4
