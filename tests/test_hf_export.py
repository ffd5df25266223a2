"""`mythos-convert hf`: the folder loads in transformers with no custom code and computes what the native model does."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import make_checkpoint, tiny_config, write_config_yaml
from safetensors import safe_open
from typer.testing import CliRunner

from mythos_convert.api import export_hf
from mythos_convert.cli import app
from mythos_convert.data.tokenizer import load_tokenizer, special_tokens
from mythos_convert.errors import MythosError
from mythos_convert.formats.checkpoint import load_checkpoint, load_model
from mythos_convert.names import convert_name, expected_names
from mythos_convert.verify.inputs import PROMPTS
from mythos_convert.verify.record import load_results

LONG_PROMPT = PROMPTS[-1]


def _stored(folder: Path) -> dict[str, torch.Tensor]:
    out = {}
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(file, framework="pt") as handle:
            out.update({k: handle.get_tensor(k) for k in handle.keys()})
    return out


def _hf_model(folder: Path, dtype=torch.float32):
    from transformers import LlamaForCausalLM

    model, info = LlamaForCausalLM.from_pretrained(folder, output_loading_info=True, dtype=dtype)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    return model.eval()


@pytest.fixture(scope="module")
def exported(tiny_ckpt, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hf") / "tiny-hf"
    export = export_hf(tiny_ckpt, out)
    assert export.verify is not None and export.verify["passed"], export.verify
    return out


def test_float32_parity_independent_of_verify(exported, tiny_ckpt, ref_tokenizer_path):
    """Logits on a >32-token prompt and random ids match the native model (checked here, not by verify)."""
    tok = load_tokenizer(ref_tokenizer_path)
    ids = [special_tokens(tok).id("bos"), *tok.encode(LONG_PROMPT, add_special_tokens=False).ids][:96]
    assert len(ids) > 32
    native = load_model(load_checkpoint(tiny_ckpt))
    hf = _hf_model(exported)
    for seq in (ids, torch.randint(0, 512, (80,), generator=torch.Generator().manual_seed(7)).tolist()):
        batch = torch.tensor([seq])
        with torch.no_grad():
            ref, got = native(batch), hf(batch).logits
        assert (ref - got).abs().max().item() <= 1e-5  # verify's HF gate (docs/parity.md)
        assert ref.std() > 0.5  # the fixture's logits are far from uniform: the comparison has teeth
    with torch.no_grad():
        gen = hf.generate(torch.tensor([ids[:20]]), max_new_tokens=16, do_sample=False, eos_token_id=None)[0, 20:]
        seq = list(ids[:20])
        for _ in range(16):
            seq.append(int(native(torch.tensor([seq]))[0, -1].argmax()))
    assert gen.tolist() == seq[20:]


def test_verify_result_recorded(exported):
    result = load_results(exported)["hf"]
    assert result["passed"] and result["greedy_equal"] and result["max_abs_diff"] <= 1e-5
    assert result["tokenizer_agreement"] == 1.0 and result["dtype"] == "float32"


def test_weights_file_tied_once(exported, tiny_cfg, tiny_ckpt):
    with safe_open(exported / "model.safetensors", framework="pt") as handle:
        names, metadata = set(handle.keys()), handle.metadata()
    assert metadata == {"format": "pt"}
    assert names == set(expected_names("hf", tiny_cfg.n_layers, tied=True))
    assert "lm_head.weight" not in names
    stored = _stored(exported)
    native = load_checkpoint(tiny_ckpt).state_dict
    for hf_name, tensor in stored.items():  # bit-exact copies of the native tensors
        assert torch.equal(tensor, native[convert_name(hf_name, "hf", "native")])


def test_config_has_both_schemas(exported, tiny_cfg):
    from transformers import AutoConfig

    cfg = json.loads((exported / "config.json").read_text())
    assert cfg["rope_parameters"] == {"rope_type": "default", "rope_theta": tiny_cfg.rope_theta}
    assert cfg["rope_theta"] == tiny_cfg.rope_theta and cfg["rope_scaling"] is None
    assert cfg["dtype"] == cfg["torch_dtype"] == "float32"
    assert cfg["rms_norm_eps"] == tiny_cfg.norm_eps
    assert cfg["intermediate_size"] == tiny_cfg.ffn_dim != tiny_cfg.d_ff
    assert cfg["tie_word_embeddings"] is True and cfg["head_dim"] == tiny_cfg.head_dim
    assert (cfg["bos_token_id"], cfg["eos_token_id"], cfg["pad_token_id"]) == (1, 2, 3)
    loaded = AutoConfig.from_pretrained(exported)
    assert loaded.rms_norm_eps == tiny_cfg.norm_eps and loaded.num_key_value_heads == tiny_cfg.n_kv_heads


def test_tokenizer_bos_only(exported, ref_tokenizer_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(exported)
    native = load_tokenizer(ref_tokenizer_path)
    for text in ("hello world", "Café 東京 😀", LONG_PROMPT):
        ids = tok(text)["input_ids"]
        assert ids[0] == tok.bos_token_id == 1 and ids[-1] != tok.eos_token_id
        assert ids[1:] == native.encode(text, add_special_tokens=False).ids
    assert (tok.bos_token, tok.eos_token, tok.pad_token, tok.unk_token) == ("<bos>", "<eos>", "<pad>", "<unk>")
    config = json.loads((exported / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert json.loads((exported / "special_tokens_map.json").read_text())["bos_token"] == "<bos>"


def test_generation_config_and_provenance(exported, tiny_ckpt, tiny_cfg):
    from transformers import GenerationConfig

    gen = GenerationConfig.from_pretrained(exported)
    assert gen.do_sample and gen.temperature == 0.8 and gen.top_p == 0.9
    assert (gen.bos_token_id, gen.eos_token_id, gen.pad_token_id) == (1, 2, 3)
    meta = json.loads((exported / "mythos.json").read_text())
    assert meta["format_version"] == 1 and meta["step"] == 123
    assert meta["native_config"] == tiny_cfg.to_dict() and meta["source_checkpoint"] == "ckpt.pt"
    assert (exported / "README.md").read_text().startswith("---")
    assert oct((exported / "model.safetensors").stat().st_mode & 0o777) != oct(0o600)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_dtypes(tiny_ckpt, tmp_path, dtype):
    out = export_hf(tiny_ckpt, tmp_path / dtype, dtype=dtype, temperature=0.5, top_p=0.8)
    assert out.verify["passed"] and out.verify["dtype"] == dtype
    assert out.verify["dtype_drift"]["max_abs_diff"] > 0  # the cast is real and measured
    stored = _stored(out.folder)
    native = load_checkpoint(tiny_ckpt).state_dict
    for hf_name, tensor in stored.items():
        assert tensor.dtype == getattr(torch, dtype)
        assert torch.equal(tensor, native[convert_name(hf_name, "hf", "native")].to(tensor.dtype))
    cfg = json.loads((out.folder / "config.json").read_text())
    assert cfg["dtype"] == cfg["torch_dtype"] == dtype
    assert json.loads((out.folder / "generation_config.json").read_text())["temperature"] == 0.5


def test_sharded_output_loads(tiny_ckpt, tmp_path):
    out = export_hf(tiny_ckpt, tmp_path / "sharded", max_shard_size=200_000)
    index = json.loads((out.folder / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1 and all((out.folder / s).is_file() for s in shards)
    assert not (out.folder / "model.safetensors").exists() and "lm_head.weight" not in index["weight_map"]
    assert index["metadata"]["total_size"] == sum(t.numel() * 4 for t in _stored(out.folder).values())
    assert out.verify["passed"]  # transformers loaded the shards without missing keys


@pytest.mark.parametrize("variant", ["_orig_mod.", "module.", "yaml"])
def test_checkpoint_variants_convert(tiny_cfg, tmp_path, variant, exported):
    if variant == "yaml":
        ckpt = make_checkpoint(tmp_path / "ckpt.pt", tiny_cfg, embed_config=False)
        with pytest.raises(MythosError, match="--config"):
            export_hf(ckpt, tmp_path / "out", tokenizer=exported / "tokenizer.json", verify=False)
        kwargs = {"config_yaml": write_config_yaml(tmp_path / "model.yaml", tiny_cfg)}
    else:
        ckpt = make_checkpoint(tmp_path / "ckpt.pt", tiny_cfg, prefix=variant)
        kwargs = {}
    out = export_hf(ckpt, tmp_path / "out", tokenizer=exported / "tokenizer.json", verify=False, **kwargs)
    reference = _stored(exported)
    got = _stored(out.folder)
    assert got.keys() == reference.keys() and all(torch.equal(got[k], reference[k]) for k in got)


def test_verify_command_passes_and_catches_tampering(exported, tmp_path):
    runner = CliRunner()
    ok = runner.invoke(app, ["verify", str(exported)])  # checkpoint taken from mythos.json
    assert ok.exit_code == 0, ok.output
    assert "pass" in ok.output
    bad = tmp_path / "tampered"
    shutil.copytree(exported, bad)
    stored = _stored(bad)
    name = "model.layers.1.self_attn.k_proj.weight"
    stored[name] = stored[name] * 1.01
    from safetensors.torch import save_file

    save_file(stored, bad / "model.safetensors", metadata={"format": "pt"})
    failed = runner.invoke(app, ["verify", str(bad)])
    assert failed.exit_code != 0 and isinstance(failed.exception, MythosError)
    assert "max |diff|" in str(failed.exception)
    assert load_results(bad)["hf"]["passed"] is False


def test_cli_hf_no_verify(tiny_ckpt, tmp_path):
    out = tmp_path / "cli"
    res = CliRunner().invoke(
        app, ["hf", str(tiny_ckpt), str(out), "--no-verify", "--dtype", "bfloat16", "--max-shard-size", "150000", "-q"]
    )
    assert res.exit_code == 0, res.output
    assert (out / "model.safetensors.index.json").is_file() and "hf" not in load_results(out)


# ---- bad input --------------------------------------------------------------------------------


def _ckpt_with(tmp_path: Path, cfg, mutate) -> Path:
    path = make_checkpoint(tmp_path / "bad.pt", cfg)
    data = torch.load(path, weights_only=True)
    mutate(data["model"])
    torch.save(data, path)
    return path


def test_refuses_non_empty_output_without_force(tiny_ckpt, tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(MythosError, match=r"not empty.*--force"):
        export_hf(tiny_ckpt, out, verify=False)
    assert (out / "keep.txt").read_text() == "mine"


def test_force_replaces_atomically(tiny_ckpt, tiny_cfg, tmp_path):
    out = tmp_path / "out"
    export_hf(tiny_ckpt, out, verify=False, card=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    nan = _ckpt_with(
        tmp_path, tiny_cfg, lambda m: m["layers.1.feed_forward.w2.weight"].__setitem__((0, 0), float("nan"))
    )
    shutil.copy(tiny_ckpt.parent / "tokenizer.json", nan.parent / "tokenizer.json")
    with pytest.raises(MythosError, match=r"layers\.1\.feed_forward\.w2\.weight.*NaN"):
        export_hf(nan, out, force=True, verify=False)  # fails mid-write
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # old folder intact
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # no temporary left
    export_hf(tiny_ckpt, out, force=True, dtype="float16", verify=False, card=False)
    assert json.loads((out / "config.json").read_text())["dtype"] == "float16"
    assert export_hf(nan, tmp_path / "nan-ok", allow_nonfinite=True, verify=False).folder.is_dir()


def test_truncated_checkpoint(tiny_ckpt, tmp_path):
    cut = tmp_path / "cut.pt"
    data = tiny_ckpt.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(MythosError, match="truncated"):
        export_hf(cut, tmp_path / "out", tokenizer=tiny_ckpt.parent / "tokenizer.json", verify=False)
    assert not (tmp_path / "out").exists()


def test_tokenizer_larger_than_embedding(tmp_path, ref_tokenizer_path):
    ckpt = make_checkpoint(tmp_path / "small.pt", tiny_config(vocab_size=300))
    with pytest.raises(MythosError, match=r"512 tokens.*300 rows"):
        export_hf(ckpt, tmp_path / "out", tokenizer=ref_tokenizer_path, verify=False)


def test_wrong_shape_missing_and_unknown_tensors(tiny_cfg, tmp_path, ref_tokenizer_path):
    def run(mutate):
        path = _ckpt_with(tmp_path, tiny_cfg, mutate)
        export_hf(path, tmp_path / "out", tokenizer=ref_tokenizer_path, verify=False)

    with pytest.raises(MythosError, match=r"layers\.0\.attention\.wk\.weight has shape \(16, 64\).*\(32, 64\)"):
        run(lambda m: m.__setitem__("layers.0.attention.wk.weight", torch.zeros(16, 64)))
    with pytest.raises(MythosError, match=r"lacks tensor layers\.1\.ffn_norm\.weight"):
        run(lambda m: m.pop("layers.1.ffn_norm.weight"))
    with pytest.raises(MythosError, match=r"'layers\.0\.attention\.wq\.bias'"):
        run(lambda m: m.__setitem__("layers.0.attention.wq.bias", torch.zeros(64)))
    with pytest.raises(MythosError, match=r"output\.weight differs"):
        run(lambda m: m.__setitem__("output.weight", m["embedding.weight"] + 1))
    with pytest.raises(MythosError, match="--dtype"):
        export_hf(tmp_path / "bad.pt", tmp_path / "o2", dtype="int8", verify=False)


def test_verify_of_a_checkpoint_without_config_uses_the_recorded_one(tmp_path, tiny_cfg, ref_tokenizer_path):
    """A reference checkpoint saved without its config, exported with --config: `verify` later needs
    no --config, because mythos.json recorded it (and without that record it says to pass one)."""
    from mythos_convert.verify.hf import verify_hf

    ckpt = make_checkpoint(tmp_path / "run" / "ckpt.pt", tiny_cfg, embed_config=False)
    (ckpt.parent / "tokenizer.json").write_bytes(ref_tokenizer_path.read_bytes())
    config = write_config_yaml(tmp_path / "model.yaml", tiny_cfg)
    out = export_hf(ckpt, tmp_path / "out", config_yaml=config, verify=False, card=False).folder
    assert verify_hf(out, ckpt, record=False, show=False)["passed"]
    meta = json.loads((out / "mythos.json").read_text())
    meta.pop("native_config")
    (out / "mythos.json").write_text(json.dumps(meta))
    with pytest.raises(MythosError, match="no embedded config: pass --config"):
        verify_hf(out, ckpt, record=False, show=False)
