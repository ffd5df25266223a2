"""The shared fixtures build what they promise (a failing fixture would fail every other test)."""

import helpers
import pytest

from mythos_convert.data.tokenizer import load_tokenizer, special_tokens
from mythos_convert.formats.checkpoint import load_checkpoint, load_model


def test_reference_tokenizer_has_reference_specials(ref_tokenizer_path):
    tok = load_tokenizer(ref_tokenizer_path)
    roles = special_tokens(tok)
    assert [roles.id(r) for r in ("unk", "bos", "eos", "pad", "sep")] == [0, 1, 2, 3, 4]
    ids = tok.encode("hello world").ids
    assert ids[0] == 1 and ids[-1] == 2  # the reference wraps every text in <bos> ... <eos>


def test_tiny_checkpoint_loads_strict(tiny_ckpt, tiny_cfg):
    ckpt = load_checkpoint(tiny_ckpt)
    assert ckpt.config == tiny_cfg and ckpt.step == 123
    model = load_model(ckpt)
    assert model.num_parameters() == tiny_cfg.num_parameters()


@pytest.mark.parametrize(("ci", "outcome"), [("true", pytest.fail.Exception), ("", pytest.skip.Exception)])
def test_missing_reference_fails_under_ci(monkeypatch, tmp_path, ci, outcome):
    """Without ../shared a ground-truth test fails in CI (naming the path) and skips elsewhere."""
    monkeypatch.setattr(helpers, "REFERENCE", tmp_path / "nowhere")
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match=r"nowhere/ref_small\.pt"):
        helpers.require_reference("ref_small.pt")


def test_present_reference_is_returned():
    assert helpers.require_reference("ref_small.pt") == helpers.REFERENCE / "ref_small.pt"
