"""Random configs with non-default RoPE theta, RMS eps and head counts: config.json and GGUF metadata hold them.

The project's tiny models use theta 10000 and eps 1e-5, the defaults: a value hard-coded in the
export would pass on them. Here every drawn value is checked in the written metadata, and the
config read back from config.json is the one drawn. No model is built: these are the metadata alone.
"""

from __future__ import annotations

from pathlib import Path

import gguf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mythos_convert.data.tokenizer import SpecialTokens
from mythos_convert.export.gguf_header import add_hparams
from mythos_convert.formats.hf_config import hf_config_dict, mythos_config_from_hf
from mythos_convert.model.config import MythosConfig

SPECIALS = SpecialTokens(bos=("<bos>", 1), eos=("<eos>", 2), pad=("<pad>", 0))


@st.composite
def configs(draw) -> MythosConfig:
    n_kv = draw(st.integers(1, 4))
    n_heads = n_kv * draw(st.integers(1, 4))
    return MythosConfig(
        vocab_size=draw(st.integers(300, 900)),
        d_model=n_heads * draw(st.sampled_from([8, 12, 16, 24])),
        n_layers=draw(st.integers(1, 5)),
        n_heads=n_heads,
        n_kv_heads=n_kv,
        d_ff=draw(st.integers(16, 900)),
        max_seq_len=draw(st.sampled_from([64, 96, 160, 4096])),
        norm_eps=draw(st.sampled_from([1e-6, 3e-6, 1e-5, 2.5e-5])),
        rope_theta=draw(st.sampled_from([5e3, 1e4, 5e4, 5e5, 1e6])),
    ).validate()


@settings(max_examples=40, deadline=None)
@given(cfg=configs())
def test_config_json_holds_every_drawn_value(cfg: MythosConfig):
    config = hf_config_dict(cfg, SPECIALS, "bfloat16")
    assert config["rope_theta"] == cfg.rope_theta and config["rope_parameters"]["rope_theta"] == cfg.rope_theta
    assert config["rms_norm_eps"] == cfg.norm_eps
    assert (config["num_attention_heads"], config["num_key_value_heads"]) == (cfg.n_heads, cfg.n_kv_heads)
    assert config["head_dim"] * cfg.n_heads == cfg.d_model and config["hidden_size"] == cfg.d_model
    assert config["intermediate_size"] == 256 * -(-(2 * cfg.d_ff // 3) // 256)  # 2/3 d_ff, up to 256s
    assert (config["vocab_size"], config["num_hidden_layers"]) == (cfg.vocab_size, cfg.n_layers)
    assert config["max_position_embeddings"] == cfg.max_seq_len
    assert (config["bos_token_id"], config["eos_token_id"], config["pad_token_id"]) == (1, 2, 0)
    assert config["dtype"] == config["torch_dtype"] == "bfloat16"
    back = mythos_config_from_hf(config)
    assert (back.rope_theta, back.norm_eps, back.n_heads, back.n_kv_heads) == (
        cfg.rope_theta,
        cfg.norm_eps,
        cfg.n_heads,
        cfg.n_kv_heads,
    )
    assert back.ffn_dim == cfg.ffn_dim and back.max_seq_len == cfg.max_seq_len


def gguf_metadata(cfg: MythosConfig, path: Path) -> dict:
    writer = gguf.GGUFWriter(path, "llama")
    add_hparams(writer, cfg)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    reader = gguf.GGUFReader(path)
    return {name: field.contents() for name, field in reader.fields.items() if name.startswith("llama.")}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cfg=configs())
def test_gguf_metadata_holds_every_drawn_value(cfg: MythosConfig, tmp_path: Path):
    meta = gguf_metadata(cfg, tmp_path / "m.gguf")
    assert meta["llama.rope.freq_base"] == cfg.rope_theta  # float32 in the file: the drawn values are exact
    assert abs(meta["llama.attention.layer_norm_rms_epsilon"] - cfg.norm_eps) <= cfg.norm_eps * 1e-6
    assert meta["llama.attention.head_count"] == cfg.n_heads
    assert meta["llama.attention.head_count_kv"] == cfg.n_kv_heads
    head_dim = cfg.d_model // cfg.n_heads
    assert meta["llama.rope.dimension_count"] == head_dim
    assert meta["llama.attention.key_length"] == meta["llama.attention.value_length"] == head_dim
    assert meta["llama.context_length"] == cfg.max_seq_len and meta["llama.embedding_length"] == cfg.d_model
    assert meta["llama.block_count"] == cfg.n_layers and meta["llama.vocab_size"] == cfg.vocab_size
    assert meta["llama.feed_forward_length"] == 256 * -(-(2 * cfg.d_ff // 3) // 256)
