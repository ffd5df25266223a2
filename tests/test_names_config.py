"""The config-key table (`names.CONFIG_KEYS`) in every direction, on values no default hides.

A non-default value for every field (theta 50000, eps 1e-6, odd sizes) goes through config.json
(written, read by transformers, read back), the GGUF header (written, compared with what gguf-py's
own typed adders write, read back) and verify's config checks, which name a changed field. The
expected keys here are this test's own spelling of what transformers and llama.cpp call them, so
a wrong key in the table fails here.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gguf
import numpy as np
import pytest
from helpers import make_checkpoint, make_reference_tokenizer

from mythos_convert.api import export_hf
from mythos_convert.data.tokenizer import SpecialTokens
from mythos_convert.errors import MythosError
from mythos_convert.export.gguf_header import add_hparams
from mythos_convert.formats.hf_config import hf_config_dict, mythos_config_from_hf
from mythos_convert.model.config import MythosConfig
from mythos_convert.names import COMPUTE_FIELDS, CONFIG_KEYS, same_architecture
from mythos_convert.source import gguf_config
from mythos_convert.verify.gguf_tensors import header_problems
from mythos_convert.verify.hf import verify_hf

SPECIALS = SpecialTokens(bos=("<bos>", 1), eos=("<eos>", 2), pad=("<pad>", 0))
ODD = MythosConfig(
    vocab_size=517,
    d_model=96,
    n_layers=3,
    n_heads=6,
    n_kv_heads=2,
    d_ff=500,  # SwiGLU width 512
    max_seq_len=200,
    norm_eps=1e-6,
    rope_theta=50000.0,
).validate()
# What transformers calls each value of ODD.
HF_EXPECTED = {
    "vocab_size": 517,
    "hidden_size": 96,
    "intermediate_size": 512,
    "num_hidden_layers": 3,
    "num_attention_heads": 6,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "max_position_embeddings": 200,
    "rms_norm_eps": 1e-6,
    "rope_theta": 50000.0,
}
# What llama.cpp calls each value of ODD, in the order its own converter writes them.
GGUF_EXPECTED = {
    "llama.context_length": 200,
    "llama.embedding_length": 96,
    "llama.block_count": 3,
    "llama.feed_forward_length": 512,
    "llama.attention.head_count": 6,
    "llama.attention.head_count_kv": 2,
    "llama.attention.layer_norm_rms_epsilon": float(np.float32(1e-6)),
    "llama.rope.freq_base": 50000.0,
    "llama.rope.dimension_count": 16,
    "llama.attention.key_length": 16,
    "llama.attention.value_length": 16,
    "llama.vocab_size": 517,
}


def _same_fields(a: MythosConfig, b: MythosConfig) -> None:
    for row in CONFIG_KEYS:
        assert getattr(a, row.field) == getattr(b, row.field), row.field
    assert same_architecture(a, b)


def test_config_json_holds_each_value_under_transformers_name():
    config = hf_config_dict(ODD, SPECIALS, "float32")
    assert {key: config.get(key) for key in HF_EXPECTED} == HF_EXPECTED
    assert config["rope_parameters"]["rope_theta"] == 50000.0
    from transformers import LlamaConfig

    llama = LlamaConfig(**config)
    theta = (getattr(llama, "rope_parameters", None) or {}).get("rope_theta", getattr(llama, "rope_theta", None))
    built = (llama.max_position_embeddings, llama.rms_norm_eps, llama.num_key_value_heads, llama.intermediate_size)
    assert built == (200, 1e-6, 2, 512) and llama.head_dim == 16 and theta == 50000.0


def test_config_json_reads_back_every_field():
    _same_fields(mythos_config_from_hf(json.loads(json.dumps(hf_config_dict(ODD, SPECIALS, "float32")))), ODD)


def _header(path: Path, add) -> gguf.GGUFReader:
    writer = gguf.GGUFWriter(path, "llama")
    add(writer)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    return gguf.GGUFReader(path, "r+")


def _llama_keys(reader: gguf.GGUFReader) -> list[tuple[str, object]]:
    return [(name, field.contents()) for name, field in reader.fields.items() if name.startswith("llama.")]


def test_gguf_header_is_what_gguf_py_writes(tmp_path: Path):
    """Same keys, types and order as gguf-py's typed adders (the bytes of every GGUF depend on it)."""
    ours = _header(tmp_path / "ours.gguf", lambda w: add_hparams(w, ODD))
    assert _llama_keys(ours) == list(GGUF_EXPECTED.items())

    def typed(w: gguf.GGUFWriter) -> None:
        w.add_context_length(200)
        w.add_embedding_length(96)
        w.add_block_count(3)
        w.add_feed_forward_length(512)
        w.add_head_count(6)
        w.add_head_count_kv(2)
        w.add_layer_norm_rms_eps(1e-6)
        w.add_rope_freq_base(50000.0)
        w.add_rope_dimension_count(16)
        w.add_key_length(16)
        w.add_value_length(16)
        w.add_vocab_size(517)

    theirs = _header(tmp_path / "theirs.gguf", typed)
    assert (tmp_path / "ours.gguf").read_bytes() == (tmp_path / "theirs.gguf").read_bytes()
    assert [f.types for f in ours.fields.values()] == [f.types for f in theirs.fields.values()]


def test_gguf_header_reads_back_every_field(tmp_path: Path):
    path = tmp_path / "m.gguf"
    reader = _header(path, lambda w: add_hparams(w, ODD))
    _same_fields(gguf_config(reader, path), ODD)
    assert header_problems(reader, ODD) == []


@pytest.mark.parametrize("key", list(GGUF_EXPECTED))
def test_a_changed_gguf_header_value_is_named(tmp_path: Path, key: str):
    reader = _header(tmp_path / "m.gguf", lambda w: add_hparams(w, ODD))
    field = reader.get_field(key)
    field.parts[field.data[0]][0] = GGUF_EXPECTED[key] * 2
    problems = header_problems(reader, ODD)
    assert len(problems) == 1 and f"the GGUF header's {key} is " in problems[0], problems


@pytest.fixture(scope="module")
def odd_export(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("odd")
    make_reference_tokenizer(folder / "tokenizer.json", vocab_size=512)
    ckpt = make_checkpoint(folder / "ckpt.pt", ODD, with_optimizer=False)
    export_hf(ckpt, folder / "hf", verify=False, card=False)
    return ckpt, folder / "hf"


# A changed value for each field that still loads (a shape field changed is a folder whose weights
# do not fit its config.json: the reader refuses it), and the line verify reports it with.
CHANGED = {
    "max_position_embeddings": (
        160,
        "config.json's max_position_embeddings is 160, the checkpoint's max_seq_len is 200",
    ),
    "rms_norm_eps": (1e-4, "config.json's rms_norm_eps is 0.0001, the checkpoint's norm_eps is 1e-06"),
    "rope_theta": (20000.0, "config.json's rope_theta is 20000.0, the checkpoint's rope_theta is 50000.0"),
}


def test_every_compute_field_has_a_changed_case():
    assert sorted(CHANGED) == sorted(COMPUTE_FIELDS.values())


@pytest.mark.parametrize("key", list(CHANGED))
def test_a_field_changed_in_config_json_is_named_by_verify(odd_export, tmp_path: Path, key: str):
    ckpt, clean = odd_export
    folder = tmp_path / "hf"
    shutil.copytree(clean, folder)
    value, line = CHANGED[key]
    config = json.loads((folder / "config.json").read_text())
    config[key] = value
    if key == "rope_theta":
        config["rope_parameters"]["rope_theta"] = value
    (folder / "config.json").write_text(json.dumps(config))
    result = verify_hf(folder, ckpt, record=False, show=False)
    assert not result["passed"] and line in result["failures"], result["failures"]


@pytest.mark.parametrize("key", ["hidden_size", "max_position_embeddings"])
def test_a_size_set_to_null_in_config_json_is_named_as_missing(key: str):
    config = hf_config_dict(ODD, SPECIALS, "float32")
    config[key] = None
    with pytest.raises(MythosError, match=rf"config.json lacks field\(s\) \['{key}'\]"):
        mythos_config_from_hf(config)
