"""Every verify gate at its edge: a figure just inside passes, one just outside fails.

The bounds are written here as literals, copied from docs/parity.md ("The gates and the worst cases
they were set from"), never imported from the code: a gate made looser or tighter fails these tests.
"""

from __future__ import annotations

import math

import pytest
import torch

from mythos_convert.engines.base import greedy_continue
from mythos_convert.verify.gates import GGUF_TOLERANCES, Tolerance, scaled_tolerance, tolerance_for
from mythos_convert.verify.inputs import GREEDY_TOKENS, prompt_ids, random_ids
from mythos_convert.verify.parity import (
    check,
    compare_logits,
    merge_comparisons,
    nan_max,
    nonfinite_reasons,
    render_table,
)

INSIDE, OUTSIDE = 0.999, 1.001  # figures at 99.9% and 100.1% of a bound


def figures(max_abs=0.0, mean_abs=0.0, agreement=1.0, mean_kl=None, p99_kl=None) -> dict:
    out = {"max_abs_diff": max_abs, "mean_abs_diff": mean_abs, "argmax_agreement": agreement, "nonfinite": []}
    if mean_kl is not None:
        out["mean_kl"] = mean_kl
    if p99_kl is not None:
        out["p99_kl"] = p99_kl
    return out


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16", "FLOAT16", "BFloat16"])
def test_hf_gate_is_max_abs_diff_1e_5_top1_100_and_greedy_equal(dtype):
    tol = tolerance_for(dtype)
    assert check(figures(max_abs=1e-5 * INSIDE), tol, True)[0]
    assert check(figures(max_abs=1e-5), tol, True)[0]  # the bound itself passes ("<=")
    passed, reasons = check(figures(max_abs=1e-5 * OUTSIDE), tol, True)
    assert not passed and reasons == ["max |diff| 1e-05 > 1e-05"]
    passed, reasons = check(figures(agreement=0.999), tol, True)
    assert not passed and reasons == ["argmax agreement 0.9990 < 1"]
    passed, reasons = check(figures(), tol, False)
    assert not passed and reasons == ["greedy 32-token generations differ"]
    assert check(figures(), tol, None)[0]  # greedy not run: not a failure
    assert tol.mean_abs_diff is None and tol.mean_kl is None and tol.p99_kl is None


def test_an_unknown_dtype_has_no_gate():
    with pytest.raises(KeyError, match="no tolerance defined for 'int8'"):
        tolerance_for("int8")


# type: (max |diff|, mean |diff|, top-1, greedy must match)
DIFF_GATES = {"F32": (1e-4, None, 1.0, True), "F16": (0.05, 6e-3, 0.965, False), "BF16": (0.35, 0.05, 0.92, False)}


@pytest.mark.parametrize("label", list(DIFF_GATES))
def test_gguf_float_gates_at_their_edges(label):
    top, mean, agreement, greedy = DIFF_GATES[label]
    tol = GGUF_TOLERANCES[label]
    mean_in = 0.0 if mean is None else mean * INSIDE
    assert check(figures(top * INSIDE, mean_in, agreement), tol, True)[0]
    assert not check(figures(top * OUTSIDE, mean_in, agreement), tol, True)[0]
    if mean is not None:
        assert not check(figures(top * INSIDE, mean * OUTSIDE, agreement), tol, True)[0]
    else:
        assert tol.mean_abs_diff is None
    assert not check(figures(top * INSIDE, mean_in, agreement - 0.001), tol, True)[0]
    assert check(figures(top * INSIDE, mean_in, agreement), tol, False)[0] is not greedy
    assert tol.mean_kl is None and tol.p99_kl is None


# type: (mean KL, p99 KL), docs/parity.md's table
KL_GATES = {
    "Q8_0": (0.0082, 0.02),
    "Q6_K": (0.02, 0.045),
    "Q5_K_M": (0.15, 0.42),
    "Q5_K_S": (0.15, 0.42),
    "Q5_1": (0.15, 0.43),
    "Q5_0": (0.19, 0.45),
    "Q4_K_M": (0.21, 0.54),
    "Q4_K_S": (0.22, 0.52),
    "Q4_1": (0.62, 1.5),
    "Q4_0": (0.67, 1.8),
    "Q3_K_L": (0.47, 1.2),
    "Q3_K_M": (0.5, 1.2),
    "Q3_K_S": (0.82, 1.7),
    "Q2_K": (1.3, 2.5),
}


def test_every_gguf_type_has_the_gate_the_readme_states():
    assert set(GGUF_TOLERANCES) == {"F32", "F16", "BF16", *KL_GATES}


@pytest.mark.parametrize("label", list(KL_GATES))
def test_gguf_kl_gates_at_their_edges(label):
    mean, p99 = KL_GATES[label]
    tol = GGUF_TOLERANCES[label]
    # quantized logits move by whole units: no |diff| or top-1 bound, greedy may differ
    loose = figures(max_abs=50.0, mean_abs=5.0, agreement=0.5, mean_kl=mean * INSIDE, p99_kl=p99 * INSIDE)
    assert check(loose, tol, False) == (True, [])
    passed, reasons = check({**loose, "mean_kl": mean * OUTSIDE}, tol, False)
    assert not passed and reasons == [f"mean KL {mean * OUTSIDE:.3g} > {mean:g}"]
    passed, reasons = check({**loose, "p99_kl": p99 * OUTSIDE}, tol, False)
    assert not passed and reasons == [f"p99 KL {p99 * OUTSIDE:.3g} > {p99:g}"]
    passed, reasons = check({k: v for k, v in loose.items() if k != "p99_kl"}, tol, False)
    assert not passed and reasons == ["p99 KL nan > " + f"{p99:g}"]  # a missing figure fails


def test_a_nan_figure_fails_every_bound():
    tol = Tolerance(max_abs_diff=1.0, mean_abs_diff=1.0, min_argmax_agreement=0.5, mean_kl=1.0, p99_kl=1.0)
    for key in ("max_abs_diff", "mean_abs_diff", "argmax_agreement", "mean_kl", "p99_kl"):
        comparison = {**figures(0.5, 0.5, 0.75, 0.5, 0.5), key: math.nan}
        assert not check(comparison, tol, True)[0], key
    assert check(figures(0.5, 0.5, 0.75, 0.5, 0.5), tol, True) == (True, [])


def test_without_a_tolerance_only_nonfinite_logits_fail():
    assert check(figures(max_abs=1e9, agreement=0.0), None, False) == (True, [])
    passed, reasons = check(figures(max_abs=math.inf), None, True)
    assert not passed and reasons == ["max abs diff is inf: the logits are not finite"]


@pytest.mark.parametrize(("std", "scale"), [(0.5, 1.0), (1.0, 1.0), (3.0, 3.0)])
def test_float_gates_grow_with_the_logits_spread_above_1(std, scale):
    tol = scaled_tolerance(GGUF_TOLERANCES["F16"], std)
    assert tol.max_abs_diff == pytest.approx(0.05 * scale) and tol.mean_abs_diff == pytest.approx(6e-3 * scale)
    assert tol.min_argmax_agreement == 0.965
    kl = scaled_tolerance(GGUF_TOLERANCES["Q4_0"], std)  # KL is scale-free
    assert (kl.max_abs_diff, kl.mean_abs_diff, kl.mean_kl, kl.p99_kl) == (None, None, 0.67, 1.8)
    f32 = scaled_tolerance(GGUF_TOLERANCES["F32"], std)
    assert f32.max_abs_diff == pytest.approx(1e-4 * scale) and f32.mean_abs_diff is None


def test_compare_logits_figures_on_known_values():
    ref = torch.tensor([[0.0, 1.0, 2.0], [3.0, 0.0, 0.0]])
    out = torch.tensor([[0.0, 1.5, 2.0], [3.0, 4.0, 0.0]])  # |diff| 0.5 and 4; row 2's argmax moves
    got = compare_logits(ref, out)
    assert got == {"max_abs_diff": 4.0, "mean_abs_diff": 4.5 / 6, "argmax_agreement": 0.5, "nonfinite": []}
    empty = compare_logits(torch.zeros(0, 3), torch.zeros(0, 3))
    assert (empty["max_abs_diff"], empty["mean_abs_diff"], empty["argmax_agreement"]) == (0.0, 0.0, 1.0)
    with pytest.raises(ValueError, match=r"reference \(2, 3\) vs export \(3, 2\)"):
        compare_logits(ref, ref.T)


@pytest.mark.parametrize(("value", "name"), [(math.nan, "NaN"), (math.inf, "+Inf"), (-math.inf, "-Inf")])
def test_nonfinite_logits_are_named_with_their_side_and_1_based_place(value, name):
    ref = torch.zeros(4, 5)
    out = torch.zeros(4, 5)
    out[2, 3] = value
    out[3, 0] = math.nan  # a later NaN does not hide the first non-finite position
    one = compare_logits(ref, out, names=("native", "llama.cpp"))
    assert one["nonfinite"] == [{"side": "llama.cpp", "value": name, "position": 2}]
    clean = compare_logits(ref, ref)
    merged = merge_comparisons([clean, one], [4, 4])
    assert merged["nonfinite"] == [{"side": "llama.cpp", "value": name, "position": 3, "sequence": 2}]
    passed, reasons = check(merged, tolerance_for("float32"), True)
    assert not passed and reasons[0] == f"llama.cpp logits are {name} at prompt 2, position 3"
    both = compare_logits(out, out, names=("native", "export"))
    assert [e["side"] for e in both["nonfinite"]] == ["native", "export"]
    twice = merge_comparisons([both, both], [1, 1])
    assert nonfinite_reasons(twice) == [
        f"native logits are {name} at prompt 1, position 3",
        f"export logits are {name} at prompt 1, position 3",
    ]


def test_a_single_comparison_without_a_sequence_is_prompt_1():
    entry = {"side": "export", "value": "NaN", "position": 7}
    assert nonfinite_reasons({"nonfinite": [entry]}) == ["export logits are NaN at prompt 1, position 7"]


@pytest.mark.parametrize("key", ["max_abs_diff", "mean_abs_diff", "argmax_agreement"])
def test_a_nonfinite_figure_alone_is_a_reason(key):
    comparison = {**figures(), key: -math.inf}
    assert nonfinite_reasons(comparison) == [f"{key.replace('_', ' ')} is -inf: the logits are not finite"]


def test_merge_takes_the_max_and_token_weighted_means():
    parts = [figures(0.25, 0.5, 1.0), figures(0.75, 0.125, 0.5)]
    merged = merge_comparisons(parts, [3, 1])
    assert merged == {
        "max_abs_diff": 0.75,
        "mean_abs_diff": (0.5 * 3 + 0.125) / 4,
        "argmax_agreement": (1.0 * 3 + 0.5) / 4,
        "nonfinite": [],
    }
    assert math.isnan(merge_comparisons([figures(0.5), figures(math.nan)], [1, 1])["max_abs_diff"])
    assert merge_comparisons([], [])["mean_abs_diff"] == 0.0


def test_nan_max_keeps_a_nan_anywhere():
    assert math.isnan(nan_max([1.0, math.nan, 3.0]))
    assert nan_max([1.0, 3.0, 2.0]) == 3.0
    assert nan_max([]) == 0.0


def test_greedy_decoding_appends_each_argmax_and_runs_every_step():
    calls: list[list[int]] = []

    def step(seq: list[int]) -> torch.Tensor:
        calls.append(list(seq))
        logits = torch.zeros(len(seq), 10)
        logits[-1, (seq[-1] + 3) % 10] = 1.0  # next token: last + 3 (mod 10)
        if len(seq) > 1:
            logits[0, 9] = 5.0  # earlier rows never decide
        return logits

    assert greedy_continue(step, [1], n=4) == [4, 7, 0, 3]
    assert calls == [[1], [1, 4], [1, 4, 7], [1, 4, 7, 0]]
    assert len(greedy_continue(step, [2], n=GREEDY_TOKENS)) == 32 == GREEDY_TOKENS


def test_prompts_get_bos_and_are_cut():
    def encode(text: str) -> list[int]:
        return [len(word) for word in text.split()]

    ids = prompt_ids(encode, 1)
    assert ids[0] == [1, 3, 7, 2, 6, 2]  # "The capital of France is"
    assert len(ids) == 4 and max(len(s) for s in ids) > 33  # one prompt longer than 32 tokens
    assert prompt_ids(encode, None)[0] == [3, 7, 2, 6, 2]
    assert prompt_ids(encode, 1, max_len=3)[0] == [1, 3, 7]
    assert prompt_ids(encode, 1, max_len=0)[0] == [1, 3, 7, 2, 6, 2]  # 0 and None: no cut


def test_random_ids_are_seeded_and_cover_the_vocabulary():
    ids = random_ids(50)
    assert len(ids) == 48 and ids == random_ids(50, seed=1234) and ids != random_ids(50, seed=1)
    assert min(ids) >= 0 and max(ids) < 50 and len(set(ids)) > 20
    assert random_ids(7, length=5) == torch.randint(0, 7, (5,), generator=torch.Generator().manual_seed(1234)).tolist()


def test_a_tolerance_as_a_dict_names_every_bound():
    tol = Tolerance(max_abs_diff=0.5, mean_kl=0.25)
    assert tol.as_dict() == {
        "max_abs_diff": 0.5,
        "mean_abs_diff": None,
        "min_argmax_agreement": None,
        "greedy_must_match": True,
        "mean_kl": 0.25,
        "p99_kl": None,
    }


def test_the_parity_table_shows_every_figure_in_its_column():
    rows = [
        {
            "name": "logits",
            "max_abs_diff": 1.234e-6,
            "mean_abs_diff": 5e-7,
            "argmax_agreement": 0.98765,
            "mean_kl": 0.00123,
            "p99_kl": 0.0456,
            "greedy_equal": True,
            "tolerance": "max<=1e-05",
            "passed": True,
        },
        {"name": "tokenizer", "tokenizer_agreement": 1.0, "greedy_equal": False, "passed": False},
        {"mean_kl": 0.5},
    ]
    table = render_table(rows, title="parity of x")
    assert table.title == "parity of x"
    columns = [
        ("check", "left", ["logits", "tokenizer", ""]),
        ("max |diff|", "right", ["1.23e-06", "-", "-"]),
        ("mean |diff|", "right", ["5e-07", "-", "-"]),
        ("argmax agree", "right", ["98.77%", "100.00%", "-"]),
        ("KL mean / p99", "right", ["0.00123 / 0.0456", "-", "0.5 / nan"]),
        ("greedy equal", "center", ["yes", "NO", "-"]),
        ("tolerance", "left", ["max<=1e-05", "", ""]),
        ("result", "center", ["[green]pass[/green]", "[red]FAIL[/red]", "-"]),
    ]
    assert [(c.header, c.justify, list(c.cells)) for c in table.columns] == columns
    assert render_table([]).title == "parity"


def test_every_bound_is_inclusive_and_each_failure_says_which():
    f16 = GGUF_TOLERANCES["F16"]
    assert check(figures(0.05, 6e-3, 0.965), f16, False) == (True, [])  # each figure exactly at its bound
    passed, reasons = check(figures(0.01, 6e-3 * OUTSIDE, 0.99), f16, False)
    assert not passed and reasons == ["mean |diff| 0.00601 > 0.006"]
    q4 = GGUF_TOLERANCES["Q4_K_M"]
    assert check(figures(mean_kl=0.21, p99_kl=0.54), q4, False) == (True, [])


def test_merging_and_comparing_refuse_mismatched_lengths():
    with pytest.raises(ValueError):
        merge_comparisons([figures(), figures()], [1])
    with pytest.raises(ValueError):
        compare_logits(torch.zeros(2, 3), torch.zeros(2, 3), names=("only one",))


def test_each_side_is_named_once_even_when_it_repeats_first():
    native = {"side": "native", "value": "NaN", "position": 1, "sequence": 1}
    export = {"side": "export", "value": "+Inf", "position": 2, "sequence": 3}
    reasons = nonfinite_reasons({"nonfinite": [native, {**native, "sequence": 2}, export]})
    assert reasons == [
        "native logits are NaN at prompt 1, position 1",
        "export logits are +Inf at prompt 3, position 2",
    ]
