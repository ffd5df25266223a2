"""GGUF files read back with gguf-py's GGUFReader: keys, tensors, types, permutation, splits, bad input.

No llama.cpp here (tests/test_gguf_parity.py runs it): these check what the writer promises, fast.
"""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from helpers import make_checkpoint, make_reference_tokenizer, tiny_config
from tokenizers import Tokenizer, models, pre_tokenizers

from mythos_convert.api import export_gguf
from mythos_convert.data.tokenizer import load_tokenizer
from mythos_convert.errors import MythosError
from mythos_convert.export.gguf_header import KEY_FALLBACK, KEY_KEPT
from mythos_convert.export.gguf_plan import OUTTYPES, parse_outtypes, parse_size
from mythos_convert.export.gguf_vocab import build_vocab
from mythos_convert.export.modelfile import modelfile_text
from mythos_convert.model.config import MythosConfig
from mythos_convert.names import expected_names

Q = gguf.GGMLQuantizationType


def _ckpt(folder: Path, cfg: MythosConfig, tokenizer: Path, **kw) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.json").write_bytes(tokenizer.read_bytes())
    return make_checkpoint(folder / "ckpt.pt", cfg, with_optimizer=False, **kw)


def _fields(reader: gguf.GGUFReader) -> dict:
    return {name: field.contents() for name, field in reader.fields.items()}


def _tensors(reader: gguf.GGUFReader) -> dict[str, gguf.ReaderTensor]:
    return {t.name: t for t in reader.tensors}


@pytest.fixture(scope="module")
def tiny_files(tiny_ckpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("gguf")
    export = export_gguf(tiny_ckpt, "f32,q8_0,q4_0", out / "tiny-{ftype}.gguf", verify=False)
    return {w.outtype.name: w for w in export.written}


def test_every_promised_key_is_there(tiny_files, tiny_cfg, ref_tokenizer_path):
    reader = gguf.GGUFReader(tiny_files["f32"].path)
    f = _fields(reader)
    c = tiny_cfg
    assert f["general.architecture"] == "llama"
    expected = {
        "llama.context_length": c.max_seq_len,
        "llama.embedding_length": c.d_model,
        "llama.block_count": c.n_layers,
        "llama.feed_forward_length": c.ffn_dim,  # the SwiGLU width, not d_ff
        "llama.attention.head_count": c.n_heads,
        "llama.attention.head_count_kv": c.n_kv_heads,
        "llama.rope.dimension_count": c.head_dim,
        "llama.attention.key_length": c.head_dim,
        "llama.attention.value_length": c.head_dim,
        "llama.vocab_size": c.vocab_size,
        "general.file_type": int(gguf.LlamaFileType.ALL_F32),
        "general.quantization_version": 2,
    }
    assert {k: f[k] for k in expected} == expected
    assert c.ffn_dim != c.d_ff
    assert f["llama.attention.layer_norm_rms_epsilon"] == pytest.approx(c.norm_eps)
    assert f["llama.rope.freq_base"] == pytest.approx(c.rope_theta)
    for key in ("general.name", "general.basename", "general.size_label", "general.type"):
        assert f[key], key
    assert f["general.size_label"] == gguf.utility.model_weight_count_rounded_notation(c.num_parameters())

    tok = load_tokenizer(ref_tokenizer_path)
    assert f["tokenizer.ggml.model"] == "gpt2" and f["tokenizer.ggml.pre"] == "gpt-2"
    assert f["tokenizer.ggml.tokens"][:5] == ["<unk>", "<bos>", "<eos>", "<pad>", "<sep>"]
    assert len(f["tokenizer.ggml.tokens"]) == c.vocab_size == len(f["tokenizer.ggml.token_type"])
    assert f["tokenizer.ggml.token_type"][:6] == [3, 3, 3, 3, 3, 1]  # CONTROL specials, then NORMAL
    ids = {role: tok.token_to_id(t) for role, t in (("bos", "<bos>"), ("eos", "<eos>"), ("sep", "<sep>"))}
    assert f["tokenizer.ggml.bos_token_id"] == ids["bos"] and f["tokenizer.ggml.eos_token_id"] == ids["eos"]
    assert ids["sep"] == 4 and "tokenizer.ggml.seperator_token_id" not in f  # llama-cpp-python would append it
    assert f["tokenizer.ggml.unknown_token_id"] == 0 and f["tokenizer.ggml.padding_token_id"] == 3
    assert f["tokenizer.ggml.add_bos_token"] is True and f["tokenizer.ggml.add_eos_token"] is False
    spec = json.loads(tok.to_str())
    assert len(f["tokenizer.ggml.merges"]) == len(spec["model"]["merges"])


def test_tensors_shapes_and_types(tiny_files, tiny_cfg):
    tensors = _tensors(gguf.GGUFReader(tiny_files["f32"].path))
    assert list(tensors) == expected_names("gguf", tiny_cfg.n_layers)
    assert "output.weight" not in tensors  # tied: llama.cpp uses token_embd
    c = tiny_cfg
    assert list(tensors["token_embd.weight"].shape) == [c.d_model, c.vocab_size]  # ggml order
    assert list(tensors["blk.0.attn_k.weight"].shape) == [c.d_model, c.n_kv_heads * c.head_dim]
    assert list(tensors["blk.1.ffn_down.weight"].shape) == [c.ffn_dim, c.d_model]
    assert {t.tensor_type for t in tensors.values()} == {Q.F32}

    q8 = _tensors(gguf.GGUFReader(tiny_files["q8_0"].path))
    for name, t in q8.items():
        assert t.tensor_type == (Q.F32 if name.endswith("norm.weight") else Q.Q8_0), name


def test_q4_0_keeps_embedding_at_q8_0_and_says_so(tiny_files):
    reader = gguf.GGUFReader(tiny_files["q4_0"].path)
    tensors = _tensors(reader)
    assert tensors["token_embd.weight"].tensor_type == Q.Q8_0
    assert tensors["blk.0.ffn_up.weight"].tensor_type == Q.Q4_0
    assert _fields(reader)[KEY_KEPT] == ["token_embd.weight=Q8_0"]
    assert _fields(reader)["general.file_type"] == int(gguf.LlamaFileType.MOSTLY_Q4_0)
    assert [p.name for p in tiny_files["q4_0"].special] == ["token_embd.weight"]


def test_q8_0_data_dequantizes_to_the_weights(tiny_files, tiny_ckpt):
    """The stored data is the checkpoint's (v unpermuted, within Q8_0 rounding)."""
    state = torch.load(tiny_ckpt, weights_only=True)["model"]
    t = _tensors(gguf.GGUFReader(tiny_files["q8_0"].path))["blk.1.attn_v.weight"]
    back = gguf.quants.dequantize(t.data, t.tensor_type)
    want = state["layers.1.attention.wv.weight"].numpy()
    assert np.abs(back - want).max() <= np.abs(want).max() / 127 + 1e-6


def _labelled_rows(shape: tuple[int, int]) -> torch.Tensor:
    return torch.arange(shape[0], dtype=torch.float32)[:, None].repeat(1, shape[1])


@pytest.mark.parametrize(("heads", "kv"), [(4, 2), (6, 1), (3, 3)])
def test_qk_permutation_on_labelled_rows(tmp_path, ref_tokenizer_path, heads, kv):
    """Row j of each head's first half and row j of its second half become rows 2j and 2j+1."""
    cfg = tiny_config(512, d_model=16 * heads, n_heads=heads, n_kv_heads=kv, n_layers=1)
    ckpt = _ckpt(tmp_path, cfg, ref_tokenizer_path)
    data = torch.load(ckpt, weights_only=True)
    for name in ("wq", "wk", "wv"):
        w = data["model"][f"layers.0.attention.{name}.weight"]
        data["model"][f"layers.0.attention.{name}.weight"] = _labelled_rows(tuple(w.shape))
    torch.save(data, ckpt)
    written = export_gguf(ckpt, "f32", verify=False).written[0]
    tensors = _tensors(gguf.GGUFReader(written.path))
    hd = cfg.head_dim
    for name, n in (("attn_q", heads), ("attn_k", kv)):
        rows = np.asarray(tensors[f"blk.0.{name}.weight"].data)[:, 0]
        want = [h * hd + half * hd // 2 + j for h in range(n) for j in range(hd // 2) for half in (0, 1)]
        assert rows.tolist() == want, name
    assert np.asarray(tensors["blk.0.attn_v.weight"].data)[:, 0].tolist() == list(range(kv * hd))


def test_f16_fallback_when_rows_do_not_fit_the_block(tmp_path, ref_tokenizer_path):
    cfg = tiny_config(512, d_model=48, n_heads=3, n_kv_heads=1, d_ff=128)  # 48 % 32 != 0
    ckpt = _ckpt(tmp_path, cfg, ref_tokenizer_path)
    written = export_gguf(ckpt, "q8_0", verify=False).written[0]
    reader = gguf.GGUFReader(written.path)
    tensors = _tensors(reader)
    assert tensors["blk.0.attn_q.weight"].tensor_type == Q.F16  # rows of 48
    assert tensors["blk.0.ffn_down.weight"].tensor_type == Q.Q8_0  # rows of ffn_dim = 256
    fallback = _fields(reader)[KEY_FALLBACK]
    assert "blk.0.attn_q.weight" in fallback and "blk.0.ffn_down.weight" not in fallback
    assert {p.name for p in written.special} == set(fallback)


def test_split_files_are_named_and_keyed_like_gguf_split(tmp_path, tiny_ckpt):
    written = export_gguf(tiny_ckpt, "f32", tmp_path / "m.gguf", split_max_size="100K", verify=False).written[0]
    n = len(written.paths)
    assert n >= 3
    assert [p.name for p in written.paths] == [f"m-{i:05d}-of-{n:05d}.gguf" for i in range(1, n + 1)]
    assert sorted(p.name for p in tmp_path.iterdir()) == [p.name for p in written.paths]
    names = []
    for i, path in enumerate(written.paths):
        reader = gguf.GGUFReader(path)
        f = _fields(reader)
        assert (f["split.no"], f["split.count"]) == (i, n)
        assert f["split.tensors.count"] == len(expected_names("gguf", 2))
        assert ("llama.block_count" in f) == (i == 0)  # metadata lives in the first shard
        names += [t.name for t in reader.tensors]
        assert sum(t.n_bytes for t in reader.tensors) <= 100_000 or len(reader.tensors) == 1
    assert names == expected_names("gguf", 2)


def test_outtype_all_writes_every_type_with_default_names(tmp_path, tiny_ckpt, tiny_cfg):
    src = tmp_path / "src"
    src.mkdir()
    for f in tiny_ckpt.parent.iterdir():
        (src / f.name).write_bytes(f.read_bytes())
    export = export_gguf(src / "ckpt.pt", "all", verify=False)
    label = gguf.utility.model_weight_count_rounded_notation(tiny_cfg.num_parameters())
    assert [w.path.name for w in export.written] == [f"mythos-{label}-{t.upper()}.gguf" for t in OUTTYPES]
    types = [_fields(gguf.GGUFReader(w.path))["general.file_type"] for w in export.written]
    assert types == [int(t.file_type) for t in OUTTYPES.values()]


def test_vocab_pads_to_the_embedding_and_marks_padding_unused(ref_tokenizer_path):
    tok = load_tokenizer(ref_tokenizer_path)
    vocab = build_vocab(tok, 544)
    assert len(vocab.tokens) == 544 and vocab.tokens[-1] == "[PAD543]"
    assert vocab.token_types[512:] == [int(gguf.TokenType.UNUSED)] * 32
    assert "ﬁle" in vocab.normalizer_warning() and "NFKC" in vocab.normalizer_warning()


def test_no_normalizer_no_warning(tmp_path):
    tok_path = make_reference_tokenizer(tmp_path / "tokenizer.json", nfkc=False)
    assert build_vocab(load_tokenizer(tok_path), 512).normalizer_warning() is None


def test_modelfile_names_the_file_the_stop_token_and_sampling(ref_tokenizer_path):
    text = modelfile_text("m-Q8_0.gguf", load_tokenizer(ref_tokenizer_path), {"temperature": 0.7, "top_k": 40}, 2048)
    lines = text.splitlines()
    assert "FROM ./m-Q8_0.gguf" in lines and 'PARAMETER stop "<eos>"' in lines
    assert "PARAMETER temperature 0.7" in lines and "PARAMETER top_k 40" in lines
    assert 'TEMPLATE """{{ .Prompt }}"""' in lines and "PARAMETER num_ctx 2048" in lines


def test_parse_helpers():
    assert [t.name for t in parse_outtypes("all")] == list(OUTTYPES)
    assert parse_size("500M") == 500_000_000 and parse_size("2G") == 2 * 10**9 and parse_size(None) == 0
    with pytest.raises(MythosError, match="cannot read size"):
        parse_size("lots")


# --- bad input -----------------------------------------------------------------------------------


def test_unknown_outtype_lists_the_valid_ones(tiny_ckpt):
    with pytest.raises(MythosError) as err:
        export_gguf(tiny_ckpt, "q3_k", verify=False)
    assert all(name in str(err.value) for name in [*OUTTYPES, "all"])


def test_existing_output_needs_force(tmp_path, tiny_ckpt):
    out = tmp_path / "m.gguf"
    out.write_bytes(b"old")
    with pytest.raises(MythosError, match="--force"):
        export_gguf(tiny_ckpt, "f16", out, verify=False)
    assert out.read_bytes() == b"old"
    export_gguf(tiny_ckpt, "f16", out, force=True, verify=False)
    assert gguf.GGUFReader(out).tensors


def test_failing_write_leaves_no_partial_file(tmp_path, tiny_cfg, ref_tokenizer_path):
    ckpt = _ckpt(tmp_path / "src", tiny_cfg, ref_tokenizer_path)
    data = torch.load(ckpt, weights_only=True)
    data["model"]["layers.1.feed_forward.w2.weight"] = torch.zeros(3, 3)  # corrupt, late in the stream
    torch.save(data, ckpt)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(MythosError, match=r"layers\.1\.feed_forward\.w2\.weight has shape \(3, 3\)"):
        export_gguf(ckpt, "f32,q8_0", out / "m-{ftype}.gguf", verify=False)
    assert list(out.iterdir()) == []  # neither the finals nor the temporary folders


def test_missing_tokenizer(tmp_path, tiny_cfg):
    ckpt = make_checkpoint(tmp_path / "ckpt.pt", tiny_cfg, with_optimizer=False)
    with pytest.raises(MythosError, match="no tokenizer found"):
        export_gguf(ckpt, "f16", verify=False)


def test_unsupported_tokenizer_type(tmp_path, tiny_cfg):
    tok = Tokenizer(models.WordLevel({"<unk>": 0, "a": 1}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "tokenizer.json"))
    ckpt = make_checkpoint(tmp_path / "ckpt.pt", tiny_cfg, with_optimizer=False)
    with pytest.raises(MythosError, match="tokenizer model 'WordLevel' is not supported"):
        export_gguf(ckpt, "f16", verify=False)


def test_unknown_pre_tokenizer_is_named(tmp_path, tiny_cfg, ref_tokenizer_path):
    spec = json.loads(ref_tokenizer_path.read_text())
    spec["pre_tokenizer"] = {"type": "Whitespace"}
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec))
    ckpt = make_checkpoint(tmp_path / "ckpt.pt", tiny_cfg, with_optimizer=False)
    with pytest.raises(MythosError, match=r"pre-tokenizer \(Whitespace\) has no llama.cpp equivalent"):
        export_gguf(ckpt, "f16", verify=False)


def test_tokenizer_larger_than_embedding(tmp_path, ref_tokenizer_path):
    ckpt = _ckpt(tmp_path, tiny_config(256), ref_tokenizer_path)
    with pytest.raises(MythosError, match="embedding has 256 rows"):
        export_gguf(ckpt, "f16", verify=False)


def test_untied_head_is_refused(tmp_path, tiny_cfg, ref_tokenizer_path):
    ckpt = _ckpt(tmp_path, tiny_cfg, ref_tokenizer_path)
    data = torch.load(ckpt, weights_only=True)
    data["model"]["output.weight"] = data["model"]["embedding.weight"] + 1.0
    torch.save(data, ckpt)
    with pytest.raises(MythosError, match="differs from the embedding"):
        export_gguf(ckpt, "f16", verify=False)
    assert not list(tmp_path.glob("*.gguf"))


def test_hf_folder_that_is_not_a_llama(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "vocab_size": 512}))
    with pytest.raises(MythosError, match="model_type is 'gpt2'"):
        export_gguf(tmp_path, "f16", verify=False)


def test_pre_tokenizer_names_read_from_the_tokenizer(ref_tokenizer_path):
    from mythos_convert.export.gguf_vocab import KNOWN_SPLIT_REGEXES, pre_tokenizer_name

    spec = json.loads(ref_tokenizer_path.read_text())
    assert pre_tokenizer_name(spec) == "gpt-2"
    for regex, name in KNOWN_SPLIT_REGEXES.items():
        spec["pre_tokenizer"] = {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False},
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
            ],
        }
        assert pre_tokenizer_name(spec) == name
    spec["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = r"\w+"
    with pytest.raises(MythosError, match=r"Sequence\[Split, ByteLevel\]"):
        pre_tokenizer_name(spec)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_hf_folder_to_gguf_reads_numpy_views_equal_to_the_tensors(tmp_path, tiny_ckpt, dtype):
    """The writer reads an HF folder without torch (mapped numpy views): every tensor equals what
    safetensors gives torch, for each stored dtype; the files from the folder and the checkpoint agree."""
    from mythos_convert.api import export_hf
    from mythos_convert.formats.hf_read import read_hf_folder

    folder = export_hf(tiny_ckpt, tmp_path / dtype, dtype=dtype, verify=False, card=False).folder
    src = read_hf_folder(folder)
    for name in src.tensor_names():
        array, tensor = src.get_array(name), src.get_tensor(name)
        assert array.shape == tuple(tensor.shape)
        assert dtype == "bfloat16" or not array.flags.writeable  # a view of the file, not a copy
        assert np.array_equal(np.asarray(array, dtype=np.float32), tensor.float().numpy()), name
    written = export_gguf(folder, "f16,q8_0", tmp_path / f"{dtype}-{{ftype}}.gguf", verify=False).written
    if dtype == "float32":  # the checkpoint's float32 weights: the same files
        again = export_gguf(tiny_ckpt, "f16,q8_0", tmp_path / "ckpt-{ftype}.gguf", verify=False).written
        for a, b in zip(written, again, strict=True):
            ta, tb = _tensors(gguf.GGUFReader(a.path)), _tensors(gguf.GGUFReader(b.path))
            assert all(np.array_equal(ta[n].data, tb[n].data) for n in ta)


def test_hf_folder_to_gguf_imports_no_torch(tmp_path, tiny_ckpt):
    """torch's import alone takes longer than writing a small model's GGUF: the HF path does without it."""
    import subprocess
    import sys

    from mythos_convert.api import export_hf

    folder = export_hf(tiny_ckpt, tmp_path / "hf", verify=False, card=False).folder
    code = (
        "import sys; from mythos_convert.support.ui import set_quiet; from mythos_convert.api import export_gguf; "
        f"set_quiet(True); export_gguf({str(folder)!r}, 'f16,q8_0,q4_k_m', verify=False); "
        "print('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "False"


@pytest.fixture(scope="module")
def poisoned_folders(tiny_ckpt, tmp_path_factory) -> dict[str, Path]:
    """HF folders (read without torch, as mapped views) holding one NaN or one -Inf in a q weight,
    which the writer permutes before encoding."""
    from mythos_convert.api import export_hf

    root = tmp_path_factory.mktemp("poisoned")
    folders = {}
    for label, value in (("nan", float("nan")), ("-inf", float("-inf"))):
        payload = torch.load(tiny_ckpt, weights_only=True)
        payload["model"]["layers.1.attention.wq.weight"][50, 7] = value
        (root / label).mkdir()
        torch.save(payload, root / label / "ckpt.pt")
        (root / label / "tokenizer.json").write_bytes((tiny_ckpt.parent / "tokenizer.json").read_bytes())
        folders[label] = export_hf(
            root / label / "ckpt.pt", root / label / "hf", allow_nonfinite=True, verify=False, card=False
        ).folder
    return folders


@pytest.mark.parametrize("kernels", ["compiled", "numpy"])
@pytest.mark.parametrize("bad", ["nan", "-inf"])
@pytest.mark.parametrize("outtype", ["f32", "f16", "bf16", "q8_0", "q4_k_m", "f32,q8_0", "q8_0,f16"])
def test_a_nonfinite_weight_is_refused_naming_the_tensor(
    tmp_path, monkeypatch, poisoned_folders, kernels, bad, outtype
):
    """The check folded into the compiled cast and quantizers, and numpy's separate pass
    (MYTHOS_KERNELS=0), refuse the same tensor with the same words; no file is left."""
    from mythos_convert.quant import kquants

    if kernels == "numpy":
        monkeypatch.setenv("MYTHOS_KERNELS", "0")
        monkeypatch.setattr(kquants, "kernel_status", lambda: kquants.KernelStatus(None, "MYTHOS_KERNELS=0"))
    elif kquants.kernel_status().quantize is None:
        pytest.skip(f"compiled quantizers unavailable: {kquants.kernel_status().reason}")
    message = (
        "tensor layers.1.attention.wq.weight holds NaN or Inf values: the checkpoint is damaged; "
        "convert a healthy checkpoint (llama.cpp would compute NaN logits)"
    )
    with pytest.raises(MythosError) as caught:
        export_gguf(poisoned_folders[bad], outtype, tmp_path / "m-{ftype}.gguf", verify=False)
    assert str(caught.value) == message
    assert list(tmp_path.iterdir()) == []


def test_export_table_counts_each_other_type_once(tmp_path):
    """Q3_K_M puts attn_output and ffn_down at Q4_K for two different reasons: the "other types"
    cell counts Q4_K once, with both (`Q4_K x4` on the reference's 2 layers), not once per reason."""
    from helpers import REFERENCE, require_reference
    from rich.console import Console

    from mythos_convert.export.gguf import render_export

    require_reference()
    export = export_gguf(
        REFERENCE / "ref_small.pt",
        "q3_k_m",
        tmp_path / "m-{ftype}.gguf",
        tokenizer=REFERENCE / "tokenizer" / "tokenizer.json",
        verify=False,
    )
    console = Console(record=True, width=300)
    for item in render_export(export):
        console.print(item)
    (row,) = [line for line in console.export_text().splitlines() if "m-Q3_K_M.gguf" in line and "│" in line][:1]
    assert row.count("Q4_K x") == 1
    assert "Q4_K x4" in row
