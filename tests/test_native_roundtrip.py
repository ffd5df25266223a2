"""`mythos-convert native`: HF folder -> native checkpoint; native -> HF -> native is bit-exact."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from mythos_convert.api import export_hf
from mythos_convert.cli import app
from mythos_convert.errors import MythosError
from mythos_convert.export.native import export_native
from mythos_convert.formats.checkpoint import load_checkpoint, load_model
from mythos_convert.model.model import Mythos


@pytest.fixture(scope="module")
def hf_folder(tiny_ckpt, tmp_path_factory) -> Path:
    return export_hf(tiny_ckpt, tmp_path_factory.mktemp("rt") / "hf", verify=False).folder


def test_round_trip_bit_exact(tiny_ckpt, hf_folder, tmp_path):
    res = CliRunner().invoke(app, ["native", str(hf_folder), str(tmp_path / "back.pt"), "-q"])
    assert res.exit_code == 0, res.output
    original = torch.load(tiny_ckpt, weights_only=True)
    back = torch.load(tmp_path / "back.pt", weights_only=True)
    assert set(back["model"]) == set(original["model"])  # same names, buffers included
    for name, tensor in original["model"].items():
        assert back["model"][name].dtype == tensor.dtype and torch.equal(back["model"][name], tensor), name
    assert back["model"]["output.weight"].data_ptr() == back["model"]["embedding.weight"].data_ptr()  # tied
    assert back["config"] == original["config"] and back["step"] == original["step"] and back["optimizer"] == {}
    original_tok = json.loads((tiny_ckpt.parent / "tokenizer.json").read_text())
    assert json.loads(back["tokenizer_json"]) == original_tok  # training post-processor restored


def test_round_trip_loads_strict_in_native_model(hf_folder, tmp_path, tiny_cfg, tiny_ckpt):
    path = export_native(hf_folder, tmp_path / "back.pt")
    data = torch.load(path, weights_only=True)
    model = Mythos(tiny_cfg)
    model.load_state_dict(data["model"], strict=True)  # what the reference does
    tokens = torch.randint(0, tiny_cfg.vocab_size, (1, 40))
    with torch.no_grad():
        assert torch.equal(model.eval()(tokens), load_model(load_checkpoint(tiny_ckpt))(tokens))
    assert load_checkpoint(path).tokenizer_json is not None
    with pytest.raises(MythosError, match="already exists"):
        export_native(hf_folder, path)
    export_native(hf_folder, path, force=True)


def test_bf16_folder_gives_bf16_native(tiny_ckpt, tmp_path):
    folder = export_hf(tiny_ckpt, tmp_path / "bf16", dtype="bfloat16", verify=False, card=False).folder
    back = torch.load(export_native(folder, tmp_path / "back.pt"), weights_only=True)["model"]
    original = torch.load(tiny_ckpt, weights_only=True)["model"]
    assert back["layers.0.attention.wq.weight"].dtype == torch.bfloat16
    assert torch.equal(back["norm.weight"], original["norm.weight"].bfloat16())


def test_transformers_saved_llama_converts(tmp_path):
    """A folder saved by transformers itself (no mythos.json) maps; logits agree with LlamaForCausalLM."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=300, hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-5, rope_theta=50000.0,
        tie_word_embeddings=True,
    )  # fmt: skip
    hf = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.mul_(5)
    hf.save_pretrained(tmp_path / "hf")
    ckpt = load_checkpoint(export_native(tmp_path / "hf", tmp_path / "n.pt"))
    assert ckpt.config.rope_theta == 50000.0 and ckpt.config.ffn_dim == 256 and ckpt.config.n_kv_heads == 2
    tokens = torch.randint(0, 300, (1, 48))
    with torch.no_grad():
        diff = (load_model(ckpt)(tokens) - hf(tokens).logits).abs().max().item()
    assert diff <= 1e-4


def _edited(hf_folder: Path, tmp_path: Path, **changes) -> Path:
    folder = tmp_path / "edited"
    shutil.copytree(hf_folder, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"attention_bias": True}, "attention_bias"),
        ({"mlp_bias": True}, "mlp_bias"),
        ({"hidden_act": "gelu"}, "hidden_act"),
        ({"rope_scaling": {"rope_type": "linear", "factor": 2.0}}, "rope_scaling"),
        ({"rope_parameters": {"rope_type": "llama3", "rope_theta": 1e4, "factor": 8.0}}, "rope_parameters"),
        ({"head_dim": 32}, "head_dim"),
        ({"intermediate_size": 300}, "intermediate_size"),
        ({"model_type": "mistral"}, "model_type"),
    ],
)
def test_unmappable_config_names_the_field(hf_folder, tmp_path, changes, field):
    with pytest.raises(MythosError, match=field):
        export_native(_edited(hf_folder, tmp_path, **changes), tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()


def test_untied_head_refused_and_equal_head_accepted(hf_folder, tmp_path):
    folder = _edited(hf_folder, tmp_path, tie_word_embeddings=False)
    tensors = load_file(folder / "model.safetensors")
    tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"].clone()
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    export_native(folder, tmp_path / "ok.pt")  # an untied head equal to the embedding maps
    tensors["lm_head.weight"] = tensors["lm_head.weight"] + 0.5
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(MythosError, match="untied lm_head"):
        export_native(folder, tmp_path / "bad.pt")


def test_missing_and_misshapen_tensors(hf_folder, tmp_path):
    folder = _edited(hf_folder, tmp_path)
    tensors = load_file(folder / "model.safetensors")
    del tensors["model.layers.1.mlp.up_proj.weight"]
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(MythosError, match=r"model\.layers\.1\.mlp\.up_proj\.weight"):
        export_native(folder, tmp_path / "x.pt")
    tensors["model.layers.1.mlp.up_proj.weight"] = torch.zeros(128, 64)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(MythosError, match=r"up_proj\.weight has shape \(128, 64\).*\(256, 64\)"):
        export_native(folder, tmp_path / "x.pt")


def test_not_a_folder(tmp_path):
    with pytest.raises(MythosError, match="not a folder"):
        export_native(tmp_path / "missing", tmp_path / "x.pt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MythosError, match=r"config\.json"):
        export_native(tmp_path / "empty", tmp_path / "x.pt")
