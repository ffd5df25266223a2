"""The plan of a GGUF output before any data is read (export/gguf_plan.py): `--outtype` and `--split-max-size`
as typed, each tensor's type and bytes, and how many shards a split output will have."""

from __future__ import annotations

import gguf
import pytest

from mythos_convert.errors import MythosError
from mythos_convert.export.gguf_plan import (
    OUTTYPES,
    OutType,
    TensorPlan,
    count_shards,
    parse_outtypes,
    parse_size,
    plan_tensors,
    searched_outtype,
)
from mythos_convert.model.config import MythosConfig

Q = gguf.GGMLQuantizationType
F = gguf.LlamaFileType


def _config(**changes) -> MythosConfig:
    """2 layers of width 256 (a K-quant block), GQA 4/2, SwiGLU width 512, 300 tokens."""
    fields = dict(vocab_size=300, d_model=256, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=512, max_seq_len=64)
    return MythosConfig(**{**fields, **changes}).validate()


NAMES = ["token_embd.weight", "output_norm.weight"] + [
    f"blk.{i}.{part}.weight"
    for i in range(2)
    for part in ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down")
]


def test_an_outtype_names_its_main_type_and_its_label():
    q4 = OutType("q4_k_m", F.MOSTLY_Q4_K_M)
    assert q4.qtype == Q.Q4_K and q4.label == "Q4_K_M"
    assert OutType("f16", F.MOSTLY_F16).qtype == Q.F16
    searched = searched_outtype("bpw4.50", {"blk.0.attn_q.weight": Q.Q5_K})
    assert searched.label == "bpw4.50" and searched.name == "bpw4.50"
    assert searched.file_type == F.MOSTLY_Q8_0 and searched.qtype == Q.Q8_0
    assert searched == OutType("bpw4.50", F.MOSTLY_Q8_0)  # the recipe is not compared


def test_a_searched_outtype_keeps_its_own_copy_of_the_recipe():
    recipe = {"blk.0.attn_q.weight": Q.Q5_K}
    searched = searched_outtype("size95MB", recipe)
    recipe["blk.0.attn_q.weight"] = Q.Q2_K
    assert searched.recipe == {"blk.0.attn_q.weight": Q.Q5_K}


def test_outtypes_are_read_as_typed_in_the_order_given_once_each():
    assert [t.name for t in parse_outtypes("f16")] == ["f16"]
    assert [t.name for t in parse_outtypes(" Q8_0 , q4_0,q8_0")] == ["q8_0", "q4_0"]
    assert parse_outtypes("q4_k_m")[0].file_type == F.MOSTLY_Q4_K_M
    every = ["f32", "f16", "bf16", "q8_0", "q6_k", "q5_k_m", "q5_k_s", "q5_1", "q5_0", "q4_k_m", "q4_k_s"]
    every += ["q4_1", "q4_0", "q3_k_l", "q3_k_m", "q3_k_s", "q2_k"]
    assert [t.name for t in parse_outtypes(" ALL ")] == every
    assert [t.name for t in parse_outtypes("all")] == every


@pytest.mark.parametrize("text", ["q4_k_x", "f16,", "", "all,f16", "iq2_xs"])
def test_an_unknown_outtype_lists_the_valid_ones(text):
    with pytest.raises(MythosError) as caught:
        parse_outtypes(text)
    assert str(caught.value) == (
        f"unknown --outtype {text!r}: choose one of f32, f16, bf16, q8_0, q6_k, q5_k_m, q5_k_s, q5_1, q5_0, "
        "q4_k_m, q4_k_s, q4_1, q4_0, q3_k_l, q3_k_m, q3_k_s, q2_k or all"
    )


@pytest.mark.parametrize(
    ("text", "size"),
    [
        (None, 0),
        ("", 0),
        (0, 0),
        ("0", 0),
        (12, 12),
        (1, 1),
        ("12", 12),
        ("1500K", 1_500_000),
        ("500M", 500_000_000),
        ("500mb", 500_000_000),
        (" 2 G ", 2_000_000_000),
        ("1.5G", 1_500_000_000),
        ("3T", 3_000_000_000_000),
        ("7B", 7),
    ],
)
def test_a_split_size_in_decimal_units(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["abc", "5X", "1.2.3M", "-5M", "M", "5 M B x"])
def test_an_unreadable_split_size_says_how_to_write_one(text):
    with pytest.raises(MythosError) as caught:
        parse_size(text)
    assert str(caught.value) == f"cannot read size {text!r}: write it like 500M, 2G or a number of bytes"


def test_a_tensor_plan_counts_its_bytes_by_its_types_blocks():
    assert TensorPlan("n", (256,), Q.F32).nbytes == 1024
    assert TensorPlan("e", (300, 256), Q.F16).nbytes == 153_600
    assert TensorPlan("k", (128, 256), Q.Q4_K).nbytes == 18_432  # 128 rows of one 144-byte block
    assert TensorPlan("g", (512, 256), Q.Q8_0).nbytes == 139_264  # 8 blocks of 34 bytes a row
    assert TensorPlan("x", (2, 3, 64), Q.Q4_0).nbytes == 216  # 6 rows of 2 blocks of 18 bytes
    assert TensorPlan("x", (5, 64), Q.Q8_0).note == ""


def test_a_fixed_mix_gives_norms_f32_and_some_layers_more_bits():
    plans = plan_tensors(_config(), OUTTYPES["q4_k_m"])
    assert [p.name for p in plans] == NAMES
    types = {p.name: p.qtype for p in plans}
    assert types["token_embd.weight"] == Q.Q6_K
    assert {types[n] for n in NAMES if "norm" in n} == {Q.F32}
    assert types["blk.0.attn_v.weight"] == Q.Q4_K and types["blk.1.attn_v.weight"] == Q.Q6_K
    assert types["blk.0.ffn_down.weight"] == Q.Q4_K and types["blk.1.ffn_down.weight"] == Q.Q6_K
    assert types["blk.1.attn_q.weight"] == Q.Q4_K
    notes = {p.name: p.note for p in plans}
    assert notes["token_embd.weight"] == "embedding (= tied output head): Q6_K"
    assert notes["blk.1.attn_v.weight"].startswith("attn_v: more bits")
    assert notes["blk.0.attn_q.weight"] == ""
    shapes = {p.name: p.shape for p in plans}
    assert shapes["token_embd.weight"] == (300, 256) and shapes["blk.0.attn_k.weight"] == (128, 256)
    assert shapes["blk.0.ffn_down.weight"] == (256, 512) and shapes["output_norm.weight"] == (256,)


def test_a_plan_with_an_imatrix_follows_llama_quantize():
    config = _config(d_model=64, n_layers=8, d_ff=192)  # 8 layers: the first is the first eighth
    plain = {p.name: p for p in plan_tensors(config, OUTTYPES["q4_0"])}
    rich = {p.name: p for p in plan_tensors(config, OUTTYPES["q4_0"], imatrix=True)}
    assert plain["blk.0.ffn_down.weight"].qtype == Q.Q4_0
    assert rich["blk.0.ffn_down.weight"].qtype == Q.Q4_1
    assert rich["blk.0.ffn_down.weight"].note == "ffn_down in the first eighth of the layers, with an imatrix"
    assert rich["blk.1.ffn_down.weight"].qtype == Q.Q4_0


def test_the_mix_depends_on_the_layer_and_head_counts():
    # q2_k: attn_v gets Q4_K when there are 4 or more query heads per kv head (8/2), Q3_K without GQA (8/8)
    gqa = {p.name: p.qtype for p in plan_tensors(_config(n_heads=8, n_kv_heads=2), OUTTYPES["q2_k"])}
    mha = {p.name: p.qtype for p in plan_tensors(_config(n_heads=8, n_kv_heads=8), OUTTYPES["q2_k"])}
    assert gqa["blk.1.attn_v.weight"] == Q.Q4_K and mha["blk.1.attn_v.weight"] == Q.Q3_K
    # q4_k_m over 8 layers: attn_v gets Q6_K in the first and last eighth, and every third from the second
    eight = plan_tensors(_config(n_layers=8), OUTTYPES["q4_k_m"])
    assert [p.qtype for p in eight if "attn_v" in p.name] == [
        Q.Q6_K,
        Q.Q4_K,
        Q.Q4_K,
        Q.Q6_K,
        Q.Q4_K,
        Q.Q4_K,
        Q.Q6_K,
        Q.Q6_K,
    ]


def test_a_searched_plan_takes_the_recipe_for_every_matrix():
    recipe = {n: (Q.Q5_K if "attn" in n else Q.Q3_K) for n in NAMES if "norm" not in n}
    plans = plan_tensors(_config(), searched_outtype("bpw4.50", recipe), imatrix=True)
    assert [p.name for p in plans] == NAMES
    for p in plans:
        if "norm" in p.name:
            assert (p.qtype, p.note, p.shape) == (Q.F32, "", (256,))
        else:
            assert p.qtype == recipe[p.name] and p.note == "chosen by measurement for bpw4.50"
    assert {p.name: p.shape for p in plans}["blk.1.ffn_up.weight"] == (512, 256)


def test_shards_are_counted_as_gguf_split_cuts_them():
    config, f16 = _config(), OUTTYPES["f16"]
    # f16: embedding 153,600 + 5 norms of 1,024 + per layer 131,072 x 2 + 65,536 x 2 + 262,144 x 3
    total = 153_600 + 5 * 1024 + 2 * (2 * 131_072 + 2 * 65_536 + 3 * 262_144)
    assert total == 2_518_016
    assert count_shards(config, f16, 0) == 1
    assert count_shards(config, f16, total) == 1
    assert count_shards(config, f16, total - 1) == 2
    assert count_shards(config, f16, 1) == 20  # one tensor a shard
    # 154,624: the embedding and the output norm fill the first shard exactly; then (by hand) attn_norm+q,
    # k+v, o+ffn_norm, gate, up, down in each layer: 1 + 2 x 6 shards
    assert count_shards(config, f16, 153_600 + 1024) == 13
    # 2,048: the output norm and block 0's attention norm fill the second shard exactly, every other
    # tensor is one shard: 1 + 1 + 8 + 9
    assert count_shards(config, f16, 2048) == 19
    f32 = 2 * total - 5 * 1024  # every matrix twice the size, the norms F32 already
    assert count_shards(config, OUTTYPES["f32"], f32) == 1
    assert count_shards(config, OUTTYPES["f32"], f32 - 1) == 2
