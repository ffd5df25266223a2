"""Parity on random valid architectures: heads, KV heads, widths, vocabulary sizes (odd ones too)."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import make_checkpoint
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open

from mythos_convert.api import export_hf
from mythos_convert.formats.hf_config import mythos_config_from_hf
from mythos_convert.model.config import MythosConfig
from mythos_convert.names import same_architecture


@st.composite
def configs(draw) -> MythosConfig:
    n_kv = draw(st.sampled_from([1, 2, 3]))
    n_heads = n_kv * draw(st.sampled_from([1, 2, 3]))
    head_dim = draw(st.sampled_from([8, 12, 16]))
    return MythosConfig(
        vocab_size=draw(st.integers(512, 777)),  # >= the fixture tokenizer's 512; odd sizes included
        d_model=n_heads * head_dim,
        n_layers=draw(st.integers(1, 3)),
        n_heads=n_heads,
        n_kv_heads=n_kv,
        d_ff=draw(st.integers(16, 700)),  # SwiGLU width 256 or 512 after the rule
        max_seq_len=draw(st.sampled_from([96, 160])),
        norm_eps=draw(st.sampled_from([1e-5, 1e-6])),
        rope_theta=draw(st.sampled_from([10000.0, 500000.0])),
    ).validate()


@pytest.mark.slow
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cfg=configs(), seed=st.integers(0, 2**16))
def test_random_configs_parity(cfg, seed, tmp_path_factory, ref_tokenizer_path):
    folder = tmp_path_factory.mktemp("prop")
    ckpt = make_checkpoint(folder / "ckpt.pt", cfg, seed=seed)
    export = export_hf(ckpt, folder / "hf", tokenizer=ref_tokenizer_path, card=False)
    result = export.verify
    assert result["passed"], result["failures"]
    assert result["max_abs_diff"] <= 1e-5 and result["greedy_equal"] and result["argmax_agreement"] == 1.0
    config = json.loads((export.folder / "config.json").read_text())
    assert same_architecture(mythos_config_from_hf(config), cfg)
    with safe_open(export.folder / "model.safetensors", framework="pt") as handle:
        embed = handle.get_tensor("model.embed_tokens.weight")
    assert embed.shape == (cfg.vocab_size, cfg.d_model) and embed.dtype == torch.float32
