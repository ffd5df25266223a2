"""One ModelSource for every format: a checkpoint, its HF export and its GGUF files read back the same.

The same tiny model is opened as a native checkpoint, as the HF folder `hf` wrote and as GGUF
F32/F16 files `gguf` wrote; each must give the same config, the same tensors under the same native
names (GGUF: dequantised, q/k permutation undone) and a state dict the reference model loads
strictly. The one tensor check and the one tie check are then shown to refuse each kind of damage
in each format, naming the tensor in that format's own names.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import make_checkpoint, tiny_config
from safetensors.torch import load_file, save_file

from mythos_convert.api import export_gguf, export_hf
from mythos_convert.errors import MythosError
from mythos_convert.model.model import Mythos
from mythos_convert.names import check_tensors, check_tied, same_architecture
from mythos_convert.source import open_gguf, open_native_without_torch, open_source


@pytest.fixture(scope="module")
def exported(tmp_path_factory, ref_tokenizer_path):
    """A tiny GQA model (2 kv heads for 4 query heads, so q and k permute differently) in every format."""
    root = tmp_path_factory.mktemp("sources")
    cfg = tiny_config(vocab_size=512, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=192)
    ckpt = make_checkpoint(root / "run" / "ckpt.pt", cfg, with_optimizer=False)
    (ckpt.parent / "tokenizer.json").write_bytes(ref_tokenizer_path.read_bytes())
    folder = root / "hf"
    export_hf(ckpt, folder, verify=False, card=False)
    written = export_gguf(folder, "f32,f16", verify=False).written
    files = {w.outtype.label: w.path for w in written}
    return ckpt, folder, files


def _arrays(source) -> dict[str, np.ndarray]:
    out = {}
    for name, tensor in source.tensors():
        out[name] = tensor.float().numpy() if isinstance(tensor, torch.Tensor) else np.asarray(tensor, np.float32)
    return out


def test_every_format_gives_the_same_model(exported):
    ckpt, folder, files = exported
    native, hf, f32 = open_source(ckpt), open_source(folder), open_source(files["F32"])
    assert (native.kind, hf.kind, f32.kind) == ("native", "hf", "gguf")
    # config.json and the GGUF header store the SwiGLU width, not d_ff: the same model, maybe another d_ff
    assert same_architecture(native.config, hf.config) and same_architecture(native.config, f32.config)
    names = list(native.stored)
    assert names[0] == "embedding.weight" and "output.weight" not in names and "rope_cos" not in names
    assert list(hf.stored) == names and list(f32.stored) == names
    assert hf.stored["layers.1.attention.wk.weight"] == "model.layers.1.self_attn.k_proj.weight"
    assert f32.stored["layers.1.attention.wk.weight"] == "blk.1.attn_k.weight"
    want = _arrays(native)
    for source in (hf, f32):  # F32 is exact: the permutation is undone, not approximated
        got = _arrays(source)
        assert all(np.array_equal(got[n], want[n]) for n in names), source.kind
    f16 = _arrays(open_gguf(files["F16"]))
    worst = max(float(np.abs(f16[n] - want[n]).max() / max(1e-8, np.abs(want[n]).max())) for n in names)
    assert worst < 2**-10  # half precision's rounding, nothing more (a wrong permutation is O(1))


def test_state_dict_loads_strictly_and_computes_the_same(exported):
    ckpt, folder, files = exported
    ids = torch.tensor([[1, 5, 9, 200, 3, 7]])
    outputs = []
    for path in (ckpt, folder, files["F32"]):
        source = open_source(path)
        model = Mythos(source.config)
        model.load_state_dict(source.state_dict(), strict=True)
        state = source.state_dict()
        assert state["output.weight"] is state["embedding.weight"]  # tied, one storage
        with torch.no_grad():
            outputs.append(model.eval()(ids))
    assert torch.equal(outputs[0], outputs[1]) and torch.equal(outputs[0], outputs[2])


def test_provenance_and_tokenizer_of_an_export(exported):
    ckpt, folder, _ = exported
    hf = open_source(folder)
    assert hf.provenance is not None and hf.provenance.source_checkpoint == "ckpt.pt"
    assert hf.provenance.native_config == open_source(ckpt).config.to_dict()
    tok, where = hf.tokenizer()
    assert where.endswith("tokenizer.json") and tok.get_vocab_size() == 512
    assert open_source(ckpt).tokenizer()[1].endswith("tokenizer.json")


def test_torch_free_reader_sees_the_same_tensors(exported):
    ckpt, _, _ = exported
    lazy = open_native_without_torch(ckpt)
    assert lazy is not None and list(lazy.stored) == list(open_source(ckpt).stored)
    assert all(type(t).__name__ == "TensorRef" for _, t in lazy.tensors())


def _hf_copy(folder: Path, tmp_path: Path, change) -> Path:
    copy = tmp_path / "copy"
    copy.mkdir()
    for p in folder.iterdir():
        if p.is_file():
            (copy / p.name).write_bytes(p.read_bytes())
    tensors = load_file(copy / "model.safetensors")
    change(tensors)
    save_file(tensors, copy / "model.safetensors", metadata={"format": "pt"})
    return copy


@pytest.mark.parametrize(
    ("change", "expect"),
    [
        (lambda t: t.pop("model.layers.1.mlp.up_proj.weight"), "lacks tensor model.layers.1.mlp.up_proj.weight"),
        (lambda t: t.__setitem__("model.layers.0.self_attn.q_proj.bias", torch.zeros(64)), "q_proj.bias"),
        (lambda t: t.__setitem__("model.layers.2.input_layernorm.weight", torch.ones(64)), "beyond the config's 2"),
        (
            lambda t: t.__setitem__("model.layers.0.self_attn.k_proj.weight", torch.zeros(64, 64)),
            "k_proj.weight has shape (64, 64) but the config expects (32, 64)",
        ),
        (
            lambda t: t.__setitem__("lm_head.weight", t["model.embed_tokens.weight"] + 1),
            "lm_head.weight differs from the embedding",
        ),
    ],
    ids=["missing", "unknown", "beyond-layers", "misshapen", "untied"],
)
def test_hf_folder_damage_is_named(exported, tmp_path, change, expect):
    _, folder, _ = exported
    with pytest.raises(MythosError) as caught:
        open_source(_hf_copy(folder, tmp_path, change))
    assert expect in str(caught.value)


def test_an_equal_stored_head_is_accepted(exported, tmp_path):
    _, folder, _ = exported
    copy = _hf_copy(folder, tmp_path, lambda t: t.__setitem__("lm_head.weight", t["model.embed_tokens.weight"].clone()))
    assert "output.weight" not in open_source(copy).stored


def test_native_damage_is_named(tmp_path):
    cfg = tiny_config()
    ckpt = make_checkpoint(tmp_path / "ckpt.pt", cfg, with_optimizer=False)
    data = torch.load(ckpt, weights_only=True)
    data["model"]["output.weight"] = data["model"]["embedding.weight"] * 2
    torch.save(data, ckpt)
    with pytest.raises(MythosError, match=r"output\.weight differs from the embedding \(embedding\.weight\)"):
        open_source(ckpt)
    assert open_native_without_torch(ckpt) is None  # a separate head: torch compares the values


def test_gguf_read_with_another_config_names_the_misfit(exported):
    _, _, files = exported
    wider = tiny_config(vocab_size=512, d_model=64, n_layers=2, n_heads=4, n_kv_heads=4, d_ff=192)
    with pytest.raises(
        MythosError, match=r"blk\.0\.attn_k\.weight has shape \(32, 64\) but the config expects \(64, 64\)"
    ):
        open_gguf(files["F32"], wider)
    deeper = tiny_config(vocab_size=512, d_model=64, n_layers=3, n_heads=4, n_kv_heads=2, d_ff=192)
    with pytest.raises(MythosError, match=r"lacks tensor blk\.2\.attn_norm\.weight"):
        open_gguf(files["F32"], deeper)


def test_check_tensors_in_every_naming():
    cfg = tiny_config(vocab_size=16, d_model=8, n_layers=1, n_heads=2, n_kv_heads=1, d_ff=24)
    hf = {
        "model.embed_tokens.weight": (16, 8),
        "model.layers.0.input_layernorm.weight": (8,),
        "model.layers.0.self_attn.q_proj.weight": (8, 8),
        "model.layers.0.self_attn.k_proj.weight": (4, 8),
        "model.layers.0.self_attn.v_proj.weight": (4, 8),
        "model.layers.0.self_attn.o_proj.weight": (8, 8),
        "model.layers.0.post_attention_layernorm.weight": (8,),
        "model.layers.0.mlp.gate_proj.weight": (256, 8),  # the SwiGLU width rule: d_ff 24 -> 256
        "model.layers.0.mlp.up_proj.weight": (256, 8),
        "model.layers.0.mlp.down_proj.weight": (8, 256),
        "model.norm.weight": (8,),
    }
    stored = check_tensors(hf, cfg, "hf")
    assert len(stored) == 11 and stored["norm.weight"] == "model.norm.weight"
    assert list(stored)[:2] == ["embedding.weight", "norm.weight"]  # expected_names order: what shards follow
    with pytest.raises(MythosError, match=r"model\.norm\.weight has shape \(9,\) but the config expects \(8,\)"):
        check_tensors({**hf, "model.norm.weight": (9,)}, cfg, "hf")
    native = {"embedding.weight": (16, 8), "rope_cos": (3, 4)}
    with pytest.raises(MythosError, match=r"rope_cos has shape \(3, 4\)"):
        check_tensors(native, cfg, "native")  # the rope buffers are checked too (they fix max_seq_len)


def test_check_tied_compares_values_of_any_kind():
    a = torch.arange(6.0).reshape(2, 3)
    check_tied(a, a.clone(), "native")
    check_tied(a.numpy(), a.numpy().copy(), "gguf")
    with pytest.raises(MythosError, match=r"output\.weight differs"):
        check_tied(a + 1, a, "gguf")
    with pytest.raises(MythosError, match=r"lm_head\.weight differs"):
        check_tied(a[:1], a, "hf")  # another shape


def test_provenance_file_round_trip(exported):
    _, folder, _ = exported
    published = json.loads((folder / "mythos.json").read_text())
    from mythos_convert.formats.hf_folder import Provenance

    assert Provenance.from_dict(published).published() == published


def test_a_gguf_is_not_a_gguf_source(exported):
    """`gguf` of a .gguf: refused by name (verify needs the weights it was made from), not read as a checkpoint."""
    _, _, files = exported
    with pytest.raises(MythosError, match=r"already a GGUF file: pass the HF folder or the ckpt\.pt"):
        export_gguf(files["F32"], "q8_0", verify=False)


def test_gguf_config_is_read_from_its_header(exported, tmp_path):
    """Without a config given, a GGUF's own header says what it holds: a header claiming 4 kv heads
    for k/v matrices of 2 is named by the tensor that does not fit."""
    import shutil

    import gguf

    _, _, files = exported
    assert open_gguf(files["F32"]).config.n_kv_heads == 2 and open_gguf(files["F32"]).config.norm_eps == 1e-5
    tampered = shutil.copy(files["F32"], tmp_path / "kv4.gguf")
    reader = gguf.GGUFReader(tampered, "r+")
    field = reader.get_field("llama.attention.head_count_kv")
    field.parts[field.data[0]][0] = 4
    del reader
    with pytest.raises(
        MythosError, match=r"blk\.0\.attn_k\.weight has shape \(32, 64\) but the config expects \(64, 64\)"
    ):
        open_gguf(tampered)
