"""verify.reference: the native side of a GGUF comparison, from a checkpoint or the HF folder a GGUF sits
in: what it is called, the digest of what it read, and the logits and greedy tokens it ran once."""

from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pytest
import torch
from helpers import make_checkpoint, make_reference_tokenizer, tiny_config, write_config_yaml
from tokenizers import Tokenizer

from mythos_convert.errors import MythosError
from mythos_convert.verify.inputs import greedy_prompts, sequences
from mythos_convert.verify.reference import native_reference


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny checkpoint of 96 positions with its tokenizer beside it, and an HF export of it."""
    from mythos_convert.api import export_hf

    folder = tmp_path_factory.mktemp("ref")
    make_reference_tokenizer(folder / "tokenizer.json", vocab_size=512)
    config = tiny_config(512, max_seq_len=96)
    ckpt = make_checkpoint(folder / "ckpt.pt", config, with_optimizer=False)
    export_hf(ckpt, folder / "hf", verify=False, card=False)
    return folder


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_checkpoint_reference_runs_every_sequence_once(run):
    ckpt = run / "ckpt.pt"
    ref = native_reference(run / "out" / "m-F16.gguf", str(ckpt))
    assert ref.description == "native engine on ckpt.pt" and ref.given == "ckpt.pt"
    assert ref.digest == {"name": "ckpt.pt", "sha256": _sha(ckpt), "size": ckpt.stat().st_size}
    assert ref.config.vocab_size == 512 and ref.config.max_seq_len == 96 and ref.config is ref.source.config
    tok = Tokenizer.from_file(str(run / "tokenizer.json"))
    assert ref.tokenizer.to_str() == tok.to_str()  # the checkpoint's own, found beside it
    assert ref.seqs == sequences(tok, 512, 96)
    assert [tuple(x.shape) for x in ref.logits] == [(len(s), 512) for s in ref.seqs]
    assert all(x.dtype == torch.float32 for x in ref.logits)
    with torch.no_grad():
        again = ref.engine.logits(ref.seqs[1])
    assert torch.equal(again, ref.logits[1])
    assert sorted(ref.greedy) == sorted(greedy_prompts(ref.seqs)) and len(ref.greedy) == 2
    assert all(len(tokens) == 32 for tokens in ref.greedy.values())
    assert ref.greedy[0] == ref.engine.greedy(ref.seqs[0], 32)
    every = np.concatenate([x.numpy().ravel() for x in ref.logits]).astype(np.float64)
    assert ref.logit_std == pytest.approx(float(np.std(every, ddof=1)), rel=1e-5)
    assert ref.engine.kind == "native" and ref.engine.dtype == "float32"
    assert ref.engine.target == "native engine on ckpt.pt"
    assert ref.tensors["token_embd.weight"].shape == (512, 64)
    assert ref.tensors["blk.1.attn_k.weight"].dtype == np.float32


def test_a_given_tokenizer_is_used(run):
    tok = Tokenizer.from_file(str(run / "tokenizer.json"))
    assert native_reference(run / "m.gguf", run / "ckpt.pt", tokenizer_obj=tok).tokenizer is tok


def test_a_checkpoint_without_its_config_reads_the_yaml(run, tmp_path):
    config = tiny_config(512, max_seq_len=80)
    ckpt = make_checkpoint(tmp_path / "bare.pt", config, with_optimizer=False, embed_config=False)
    yaml = write_config_yaml(tmp_path / "c.yaml", config)
    ref = native_reference(tmp_path / "m.gguf", ckpt, config_yaml=yaml, tokenizer=run / "tokenizer.json")
    assert ref.config.max_seq_len == 80 and ref.given == "bare.pt"


def test_the_hf_folder_a_gguf_sits_in_is_the_reference(run):
    hf = run / "hf"
    for ref, given in ((native_reference(hf / "m-Q8_0.gguf"), None), (native_reference(run / "x.gguf", hf), "hf")):
        assert ref.description == "native engine on hf/ weights" and ref.given == given
        shard = hf / "model.safetensors"
        assert ref.digest == {
            "name": "hf/",
            "files": {"model.safetensors": {"sha256": _sha(shard), "size": shard.stat().st_size}},
        }
        assert ref.config.max_seq_len == 96 and len(ref.greedy) == 2


def test_a_gguf_with_no_folder_model_and_no_checkpoint_has_no_reference(run, tmp_path):
    with pytest.raises(MythosError) as caught:
        native_reference(tmp_path / "m-F16.gguf")
    assert str(caught.value) == (
        "no reference for m-F16.gguf (no config.json beside it): pass --ckpt with the native checkpoint"
    )
    shutil.copy(run / "hf" / "config.json", tmp_path / "config.json")  # a config.json alone is a folder model
    with pytest.raises(Exception) as caught:
        native_reference(tmp_path / "m-F16.gguf")
    assert "no reference for" not in str(caught.value)


def test_a_distributed_checkpoint_folder_is_a_checkpoint_without_a_digest(run, tmp_path):
    from dcpkit import save_pair

    _, folder = save_pair(tmp_path, tiny_config(512, max_seq_len=96), run / "tokenizer.json")
    ref = native_reference(tmp_path / "m.gguf", folder, tokenizer=run / "tokenizer.json")
    assert ref.digest is None and ref.given == "step_123"
    assert ref.description == "native engine on step_123" and ref.engine.target == "native engine on step_123"
