"""The name table maps every native tensor exactly once, both ways, and rejects unknown names by name."""

from __future__ import annotations

import pytest
from helpers import random_model, tiny_config

from mythos_convert.errors import MythosError
from mythos_convert.names import (
    FORMATS,
    NATIVE_DROPPED,
    TIED_HEAD,
    convert_name,
    expected_names,
    strip_native_prefixes,
    transform_of,
)


@pytest.fixture(scope="module")
def native_keys() -> list[str]:
    model = random_model(tiny_config(n_layers=3))
    return [k for k in model.state_dict() if k not in NATIVE_DROPPED]


@pytest.mark.parametrize("dst", ["hf", "gguf"])
def test_every_native_key_maps_once_and_back(native_keys, dst):
    mapped = [convert_name(k, "native", dst) for k in native_keys]
    assert len(set(mapped)) == len(native_keys)  # injective: no two tensors collide
    assert [convert_name(m, dst, "native") for m in mapped] == native_keys
    for other in FORMATS:  # every pair of formats round-trips
        assert [convert_name(convert_name(m, dst, other), other, dst) for m in mapped] == mapped


def test_expected_names_cover_the_model(native_keys):
    n_layers = 3
    assert set(expected_names("native", n_layers, tied=False)) == set(native_keys)
    tied = expected_names("native", n_layers, tied=True)
    assert set(tied) == set(native_keys) - {TIED_HEAD["native"]}
    hf = expected_names("hf", n_layers, tied=True)
    assert set(hf) == {convert_name(k, "native", "hf") for k in tied}
    assert "lm_head.weight" not in hf and "model.embed_tokens.weight" in hf


def test_layer_index_does_not_touch_w1_w2_w3():
    assert convert_name("layers.12.feed_forward.w3.weight", "native", "hf") == "model.layers.12.mlp.up_proj.weight"
    assert convert_name("model.layers.7.mlp.down_proj.weight", "hf", "native") == "layers.7.feed_forward.w2.weight"
    assert convert_name("blk.0.ffn_gate.weight", "gguf", "native") == "layers.0.feed_forward.w1.weight"


@pytest.mark.parametrize(
    ("name", "src"),
    [
        ("layers.0.attention.bias", "native"),
        ("model.layers.0.self_attn.q_proj.bias", "hf"),
        ("rope_cos", "native"),
        ("blk.0.attn_qkv.weight", "gguf"),
        ("model.embed_tokens.weight.extra", "hf"),
    ],
)
def test_unknown_names_fail_naming_themselves(name, src):
    with pytest.raises(MythosError, match=name.replace(".", r"\.")):
        convert_name(name, src, "hf" if src != "hf" else "native")


def test_prefixes_stripped_in_any_chain():
    assert strip_native_prefixes("_orig_mod.module.layers.0.attn_norm.weight") == "layers.0.attn_norm.weight"
    assert strip_native_prefixes("module._orig_mod.norm.weight") == "norm.weight"
    assert strip_native_prefixes("embedding.weight") == "embedding.weight"


def test_only_q_and_k_are_permuted(native_keys):
    transforms = {k: transform_of(k, "native") for k in native_keys}
    permuted = {k for k, t in transforms.items() if t}
    assert permuted == {k for k in native_keys if ".wq." in k or ".wk." in k}
    assert {transforms[k] for k in permuted} == {"permute_q", "permute_k"}


def test_native_shapes_match_the_model():
    from mythos_convert.names import native_shapes

    cfg = tiny_config(n_layers=3, n_heads=6, n_kv_heads=2, d_model=96, vocab_size=333)
    model = random_model(cfg)
    assert native_shapes(cfg) == {k: tuple(v.shape) for k, v in model.state_dict().items()}
