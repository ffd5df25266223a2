"""verify.gguf_tensors: a GGUF header against the source config, and each tensor against the source
with the usual mistakes recognised (rows not permuted, permuted with the wrong head count, scaled,
NaN/Inf stored). The file and its reader are stand-ins holding just what the checks read."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from mythos_convert.formats.permute import permute_rows, unpermute_rows
from mythos_convert.model.config import MythosConfig
from mythos_convert.verify.gguf_tensors import (
    TensorCheck,
    _diagnose,
    _head_counts,
    _rel_error,
    check_tensors,
    header_problems,
)

CONFIG = MythosConfig(
    vocab_size=40, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=96, max_seq_len=64, norm_eps=1e-5
).validate()  # head_dim 8: q has 32 rows, k 16


def test_a_check_is_bad_above_its_bound_or_when_not_a_number():
    assert not TensorCheck("w", "Q8_0", 0.017, 0.017).bad
    assert TensorCheck("w", "Q8_0", 0.0171, 0.017).bad
    assert TensorCheck("w", "Q8_0", math.nan, 0.017).bad
    assert TensorCheck("w", "F16", 0.25, 0.5, "a cause").as_dict() == {
        "name": "w",
        "type": "F16",
        "rel_error": 0.25,
        "bound": 0.5,
    }


def test_the_relative_error_is_rms_against_the_source():
    want = np.array([3.0, 4.0], dtype=np.float32)
    assert _rel_error(want.copy(), want) == 0.0
    assert _rel_error(want + np.array([0.3, 0.4], dtype=np.float32), want) == pytest.approx(0.1, rel=1e-6)
    zero = np.zeros(2, dtype=np.float32)
    assert _rel_error(zero, zero) == 0.0
    assert _rel_error(want, zero) == math.inf
    assert math.isnan(_rel_error(np.array([1.0, np.nan], dtype=np.float32), want))
    assert math.isnan(_rel_error(np.array([1.0, np.inf], dtype=np.float32), want))


def test_the_relative_error_of_large_float32_values_is_taken_in_float64():
    want = np.full(2, 1e20, dtype=np.float32)  # its square overflows float32
    assert _rel_error(want * np.float32(2), want) == pytest.approx(1.0, rel=1e-6)
    assert _rel_error(want * np.float32(1.5), want) == pytest.approx(0.5, rel=1e-6)


def test_head_counts_a_matrix_could_have_been_permuted_with():
    assert _head_counts(16, 4) == [1, 2, 8]  # 4 is the real one
    assert _head_counts(12, 4) == [1, 2, 6]
    assert _head_counts(16, 8) == [1, 4, 8]
    assert _head_counts(2, 2) == []  # one head of two rows: the only count there is


def _src(rows: int = 16, cols: int = 3) -> np.ndarray:
    return np.random.default_rng(7).standard_normal((rows, cols)).astype(np.float32)


def test_stored_nan_or_inf_is_named_with_its_rows():
    got = np.ones((6, 2), dtype=np.float32)
    got[1, 0], got[3, 1], got[3, 0] = np.nan, np.inf, np.nan
    assert _diagnose("w", got, got, None, 0.1, 8) == "w holds NaN (3 value(s), row(s) 1, 3)"
    got = np.ones((6, 2), dtype=np.float32)
    got[0, 1] = got[2, 0] = got[4, 0] = got[5, 1] = got[5, 0] = -np.inf
    assert _diagnose("w", got, got, 4, 0.1, 8) == "w holds Inf (5 value(s), row(s) 0, 2, 4, 5)"
    got = np.ones((7, 1), dtype=np.float32)
    got[:, 0] = np.inf
    assert _diagnose("w", got, got, None, 0.1, 8) == "w holds Inf (7 value(s), row(s) 0, 1, 2, 3)"
    flat = np.array([1.0, np.nan, 1.0, np.nan], dtype=np.float32)  # a norm: one value a row
    assert _diagnose("n", flat, flat, None, 0.1, 8) == "n holds NaN (2 value(s), row(s) 1, 3)"


def test_rows_left_unpermuted_or_permuted_with_other_heads_are_recognised():
    src = _src()
    assert _diagnose("k", src.copy(), src, 2, 0.01, 8) == (
        "k matches the source not permuted (q/k rows must be interleaved per head for llama.cpp)"
    )
    assert _diagnose("k", permute_rows(src, 4), src, 2, 0.01, 8) == "k matches the source permuted with 4 heads, not 2"
    assert _diagnose("q", permute_rows(src, 1), src, 4, 0.01, 4) == "q matches the source permuted with 1 heads, not 4"


def test_a_scaled_tensor_is_named_with_its_scale():
    src = _src()
    assert _diagnose("e", src * np.float32(2), src, None, 0.01, 8) == "e is the source scaled by 2"
    assert _diagnose("k", permute_rows(src, 2) * np.float32(0.5), src, 2, 0.01, 8) == "k is the source scaled by 0.5"
    assert _diagnose("e", src * np.float32(1.123456), src, None, 0.01, 8) == "e is the source scaled by 1.123"
    # within the bound of 1 a scale is no diagnosis: the error is reported as it is
    assert _diagnose("e", src * np.float32(1.005), src, None, 0.01, 8) == (
        "e differs from the source: relative error 0.005 > 0.01"
    )


def test_other_differences_are_reported_with_their_error():
    src = np.array([[3.0, 0.0], [0.0, 4.0]], dtype=np.float32)
    got = np.array([[3.0, 0.5], [0.0, 4.0]], dtype=np.float32)  # not a scale: vdot(got, src) = vdot(src, src)
    assert _diagnose("e", got, src, None, 0.05, 8) == "e differs from the source: relative error 0.1 > 0.05"
    zero = np.zeros((2, 2), dtype=np.float32)
    assert _diagnose("e", got, zero, None, 0.05, 8) == "e differs from the source: relative error inf > 0.05"
    noise = np.random.default_rng(3).standard_normal((16, 3)).astype(np.float32)
    src = _src()
    line = _diagnose("q", permute_rows(src, 2) + noise, src, 2, 1e-3, 8)
    error = np.linalg.norm(noise.astype(np.float64)) / np.linalg.norm(src.astype(np.float64))
    assert line == f"q differs from the source: relative error {error:.3g} > 0.001"


class _File:
    """A GGUF source: its tensors by GGUF name, dequantised with the q/k rows back in the half-split layout."""

    def __init__(self, tensors: dict[str, tuple[str, np.ndarray]]):
        self.stored = {f"file:{name}": name for name in tensors}
        self.ggml_types = {name: t for name, (t, _) in tensors.items()}
        self.tensors = {name: a for name, (_, a) in tensors.items()}

    def get(self, name: str) -> np.ndarray:
        return self.tensors[name]


def test_every_tensor_is_checked_and_each_bad_one_diagnosed():
    rng = np.random.default_rng(11)
    source = {
        "token_embd.weight": rng.standard_normal((40, 32)).astype(np.float32),
        "blk.0.attn_q.weight": rng.standard_normal((32, 32)).astype(np.float32),
        "blk.0.attn_k.weight": rng.standard_normal((16, 32)).astype(np.float32),
        "blk.1.attn_k.weight": rng.standard_normal((16, 32)).astype(np.float32),
        "output_norm.weight": rng.standard_normal(32).astype(np.float32),
        "blk.1.ffn_up.weight": rng.standard_normal((64, 32)).astype(np.float32),
    }
    k_rows_as_q = permute_rows(source["blk.0.attn_k.weight"], 4)  # k permuted with the query head count
    file = _File(
        {
            "token_embd.weight": ("F16", source["token_embd.weight"] * np.float32(3)),
            # written without the permutation: reading it back undoes one that was never made
            "blk.0.attn_q.weight": ("F32", unpermute_rows(source["blk.0.attn_q.weight"], 4)),
            "blk.0.attn_k.weight": ("Q8_0", unpermute_rows(k_rows_as_q, 2)),
            "blk.1.attn_k.weight": ("Q8_0", source["blk.1.attn_k.weight"].copy()),
            "output_norm.weight": ("F32", source["output_norm.weight"].copy()),
            "blk.1.ffn_up.weight": ("IQ9_X", source["blk.1.ffn_up.weight"] * np.float32(1.5)),  # unknown: bound 1
        }
    )
    checks = check_tensors(file, source, CONFIG)
    assert [c.name for c in checks] == list(source)
    by = {c.name: c for c in checks}
    assert by["token_embd.weight"].cause == "token_embd.weight is the source scaled by 3"
    assert by["token_embd.weight"].rel_error == pytest.approx(2.0, rel=1e-6) and by["token_embd.weight"].bound == 5e-4
    assert by["blk.0.attn_q.weight"].cause == (
        "blk.0.attn_q.weight matches the source not permuted (q/k rows must be interleaved per head for llama.cpp)"
    )
    assert by["blk.0.attn_k.weight"].cause == "blk.0.attn_k.weight matches the source permuted with 4 heads, not 2"
    assert by["blk.0.attn_k.weight"].bound == 0.017 and by["blk.0.attn_k.weight"].ggml_type == "Q8_0"
    assert by["blk.1.attn_k.weight"] == TensorCheck("blk.1.attn_k.weight", "Q8_0", 0.0, 0.017)
    assert by["output_norm.weight"] == TensorCheck("output_norm.weight", "F32", 0.0, 1e-7)
    assert by["blk.1.ffn_up.weight"] == TensorCheck("blk.1.ffn_up.weight", "IQ9_X", pytest.approx(0.5), 1.0)
    assert [c.bad for c in checks] == [True, True, True, False, False, False]


def test_a_tensor_exactly_at_its_bound_passes_undiagnosed():
    src = np.array([3.0, 4.0], dtype=np.float32)
    got = np.array([3.0, 4.0 + 0.5], dtype=np.float32)  # error 0.5 / 5 = 0.1: Q2_K's bound is 0.9
    file = _File({"output_norm.weight": ("Q2_K", got)})
    (check,) = check_tensors(file, {"output_norm.weight": src}, CONFIG)
    assert check.cause is None and check.rel_error == pytest.approx(0.1, rel=1e-6) and check.bound == 0.9


def _reader(values: dict[str, object]):
    fields = {key: SimpleNamespace(contents=lambda v=v: v) for key, v in values.items()}
    return SimpleNamespace(get_field=fields.get)


HEADER = {
    "llama.vocab_size": 40,
    "llama.embedding_length": 32,
    "llama.feed_forward_length": 256,
    "llama.block_count": 2,
    "llama.attention.head_count": 4,
    "llama.attention.head_count_kv": 2,
    "llama.rope.dimension_count": 8,
    "llama.attention.key_length": 8,
    "llama.attention.value_length": 8,
    "llama.context_length": 64,
    "llama.attention.layer_norm_rms_epsilon": float(np.float32(1e-5)),
    "llama.rope.freq_base": 10000.0,
}


def test_a_header_that_matches_the_config_has_no_problems():
    assert CONFIG.ffn_dim == 256
    assert header_problems(_reader(HEADER), CONFIG) == []
    assert header_problems(_reader({k: v for k, v in HEADER.items() if k != "llama.vocab_size"}), CONFIG) == []


def test_each_header_problem_is_one_line_and_all_are_named():
    header = {k: v for k, v in HEADER.items() if k not in ("llama.context_length", "llama.rope.dimension_count")}
    header.update(
        {
            "llama.block_count": "two",
            "llama.attention.head_count_kv": True,
            "llama.attention.key_length": 16,
            "llama.attention.layer_norm_rms_epsilon": 2e-5,
            "llama.vocab_size": 41,
        }
    )
    assert header_problems(_reader(header), CONFIG) == [
        "the GGUF header's llama.vocab_size is 41, the checkpoint's vocab_size is 40",
        "the GGUF header's llama.block_count is 'two', not a number; the checkpoint's n_layers is 2",
        "the GGUF header's llama.attention.head_count_kv is True, not a number; the checkpoint's n_kv_heads is 2",
        "the GGUF header has no llama.rope.dimension_count; the checkpoint's head_dim is 8",
        "the GGUF header's llama.attention.key_length is 16, the checkpoint's head_dim is 8",
        "the GGUF header has no llama.context_length; the checkpoint's max_seq_len is 64",
        "the GGUF header's llama.attention.layer_norm_rms_epsilon is 2e-05, the checkpoint's norm_eps is 1e-05",
    ]


def test_a_float_is_compared_as_the_file_stores_it():
    header = dict(HEADER, **{"llama.attention.layer_norm_rms_epsilon": 1e-5 * (1 + 1e-9)})  # float32-equal
    assert header_problems(_reader(header), CONFIG) == []
    header = dict(HEADER, **{"llama.rope.freq_base": 10000.5})
    assert header_problems(_reader(header), CONFIG) == [
        "the GGUF header's llama.rope.freq_base is 10000.5, the checkpoint's rope_theta is 10000.0"
    ]


def test_bounds_are_inclusive_and_small_sources_are_not_special():
    # exact binary fractions: each error below is exactly its bound
    src = np.array([[0.0, 0.0], [3.0, 4.0], [0.0, 0.0], [0.0, 0.0]])
    got = src.copy()
    got[1, 1] = 4.5  # 0.5 off a row of norm 5: 0.1
    assert _diagnose("k", got, src, 2, 0.1, 2).startswith("k matches the source not permuted")
    swapped = permute_rows(src, 1)  # rows 1 and 2 exchanged
    swapped[2, 1] = 4.5
    assert _diagnose("k", swapped, src, 2, 0.1, 2) == "k matches the source permuted with 1 heads, not 2"
    line = np.array([[3.0, 4.0]])
    assert _diagnose("e", np.array([[5.0, 8.75]]), line, None, 0.125, 8) == "e is the source scaled by 2"
    assert _diagnose("e", line * 1.125, line, None, 0.125, 8) == (
        "e differs from the source: relative error 0.125 > 0.125"
    )
    small = np.array([[0.3, 0.4]])  # |src|^2 = 0.25: a scale is still found
    assert _diagnose("e", small * 2, small, None, 0.01, 8) == "e is the source scaled by 2"
    assert _rel_error(small * 1.5, small) == pytest.approx(0.5)
    assert _head_counts(12, 8) == [2, 3, 6]  # 12 rows of head_dim 8: one head, rounded down


def test_a_tensor_exactly_at_an_unknown_types_bound_passes():
    file = _File({"output_norm.weight": ("IQ9_X", np.array([6.0, 8.0], dtype=np.float32))})
    (check,) = check_tensors(file, {"output_norm.weight": np.array([3.0, 4.0], dtype=np.float32)}, CONFIG)
    assert check == TensorCheck("output_norm.weight", "IQ9_X", 1.0, 1.0)


def test_source_tensors_are_float32_under_gguf_names():
    import torch

    from mythos_convert.verify.gguf_tensors import source_tensors

    weights = [
        ("embedding.weight", torch.full((2, 3), 1.5, dtype=torch.bfloat16)),
        ("layers.1.feed_forward.w2.weight", torch.arange(6, dtype=torch.float16).reshape(3, 2)),
    ]
    got = source_tensors(SimpleNamespace(tensors=lambda: iter(weights)))
    assert list(got) == ["token_embd.weight", "blk.1.ffn_down.weight"]
    assert all(isinstance(a, np.ndarray) and a.dtype == np.float32 for a in got.values())
    assert np.array_equal(got["token_embd.weight"], np.full((2, 3), 1.5, dtype=np.float32))
    assert np.array_equal(got["blk.1.ffn_down.weight"], np.arange(6, dtype=np.float32).reshape(3, 2))
