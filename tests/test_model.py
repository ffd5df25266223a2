"""The held state-dict contract with the reference implementation, and that the model can learn."""

from __future__ import annotations

import pytest
import torch
from helpers import REFERENCE, REFERENCE_LOGITS_ATOL, make_checkpoint, tiny_config, write_config_yaml

from mythos_convert.errors import MythosError
from mythos_convert.formats.checkpoint import load_checkpoint, load_model, save_checkpoint
from mythos_convert.model.config import MythosConfig
from mythos_convert.model.model import Mythos
from mythos_convert.names import expected_names

pytestmark = pytest.mark.usefixtures("one_thread")


def _reference_names(cfg: MythosConfig) -> set[str]:
    """The reference's state-dict keys: every exported tensor plus the tied head and rope buffers."""
    return set(expected_names("native", cfg.n_layers)) | {"output.weight", "rope_cos", "rope_sin"}


@pytest.mark.parametrize("prefix", ["", "_orig_mod.", "module."])
def test_reference_layout_loads_strict(tmp_path, prefix):
    cfg = tiny_config(vocab_size=300)
    path = make_checkpoint(tmp_path / "ckpt.pt", cfg, prefix=prefix, seed=3)
    raw = torch.load(path, weights_only=True)
    assert all(k.startswith(prefix) for k in raw["model"])
    ckpt = load_checkpoint(path)
    assert set(ckpt.state_dict) == _reference_names(cfg)
    model = load_model(ckpt)  # strict=True inside
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, raw["model"][prefix + name]), name


def test_checkpoint_without_config_loads_with_yaml(tmp_path):
    cfg = tiny_config(vocab_size=300, n_layers=3)
    path = make_checkpoint(tmp_path / "old.pt", cfg, embed_config=False)
    with pytest.raises(MythosError, match="no embedded config"):
        load_checkpoint(path)
    ckpt = load_checkpoint(path, config_yaml=write_config_yaml(tmp_path / "cfg.yaml", cfg))
    assert ckpt.config == cfg
    load_model(ckpt)


def test_ours_load_the_way_the_reference_loads(tmp_path):
    """A checkpoint we save loads as the reference implementation's loader loads one (torch.load,
    build from `config`, load_state_dict(strict=True)) and computes what the saved model did. Both
    sides are this project's `Mythos`: the reference's own numbers are checked below."""
    cfg = tiny_config(vocab_size=300)
    torch.manual_seed(0)
    model = Mythos(cfg)
    path = save_checkpoint(tmp_path / "ours.pt", model.state_dict(), cfg, step=5, tokenizer_json="{}")
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert {"model", "optimizer", "step", "config"} <= set(raw)
    assert set(raw["model"]) == _reference_names(cfg)
    reloaded = Mythos(MythosConfig(**raw["config"]))
    reloaded.load_state_dict(raw["model"], strict=True)
    tokens = torch.randint(0, cfg.vocab_size, (2, 9))
    torch.testing.assert_close(reloaded(tokens), model(tokens), rtol=0, atol=0)


def test_the_native_model_computes_the_reference_implementations_logits(reference):
    """The reference implementation's own checkpoint, loaded here, gives the logits and greedy tokens
    that implementation wrote (../shared): float32 rounding apart, the same numbers."""
    model = load_model(load_checkpoint(REFERENCE / "ref_small.pt")).eval()
    sequence = torch.load(REFERENCE / "ref_small_logits.pt", weights_only=True)
    with torch.no_grad():
        got = model(sequence["ids"])[0]
        assert (got - sequence["logits"]).abs().max().item() <= REFERENCE_LOGITS_ATOL
        for ids, last, greedy in zip(reference["ids"], reference["logits_last"], reference["greedy"], strict=True):
            assert (model(torch.tensor([ids]))[0, -1] - torch.tensor(last)).abs().max().item() <= REFERENCE_LOGITS_ATOL
            seq = list(ids)
            while len(seq) < len(greedy):
                seq.append(int(model(torch.tensor([seq]))[0, -1].argmax()))
            assert seq == greedy


def test_model_overfits_one_batch():
    cfg = tiny_config(vocab_size=64)
    torch.manual_seed(0)
    model = Mythos(cfg)
    batch = torch.randint(0, cfg.vocab_size, (2, 33))
    x, y = batch[:, :-1], batch[:, 1:]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    _, first = model(x, y)
    for _ in range(60):
        _, loss = model(x, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert first.item() == pytest.approx(torch.log(torch.tensor(64.0)).item(), abs=0.3)
    assert loss.item() < 0.05
