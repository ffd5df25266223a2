"""eval's arithmetic without engines: scoring windows, cross-entropy, perplexity, KL per engine, eval.json.

Stand-in engines return logits written here, so every figure is worked out in the test (closed
forms, numpy); test_eval.py runs the real engines end to end.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from datetime import datetime, timedelta, timezone

import gguf
import numpy as np
import pytest
import torch

import mythos_convert.evaluate.measure as measure_module
from mythos_convert.engines.base import Engine
from mythos_convert.errors import MythosError
from mythos_convert.evaluate.measure import measure
from mythos_convert.evaluate.perplexity import (
    PerplexityAccumulator,
    first_scored,
    method_text,
    scored_count,
    scored_logits,
    token_nll,
)
from mythos_convert.evaluate.record import (
    GGUFHeader,
    bound_eval,
    file_type_label,
    load_eval,
    read_gguf_header,
    record_eval,
)
from mythos_convert.evaluate.report import EvalReport, report_lines, write_report_json


def test_the_first_window_scores_every_prediction_the_others_their_second_half():
    assert [first_scored(w, 8) for w in range(3)] == [0, 4, 4]
    assert first_scored(1, 9) == 4
    # window 0: predictions 0..6 (7); others: 4..6 (3)
    assert scored_count(1, 8) == 7 and scored_count(3, 8) == 13 and scored_count(0, 8) == 0
    assert "windows of 16 tokens" in method_text(16)


def test_scored_logits_pair_position_j_with_token_j_plus_1():
    logits = torch.arange(8 * 3, dtype=torch.float32).reshape(8, 3)
    window = np.arange(100, 108)
    first, targets = scored_logits(logits, window, 0)
    assert torch.equal(first, logits[0:7]) and targets.tolist() == list(range(101, 108))
    later, targets = scored_logits(logits, window, 2)
    assert torch.equal(later, logits[4:7]) and targets.tolist() == [105, 106, 107]


def test_token_nll_is_minus_log_p_of_the_target():
    # softmax(0, ln 3) = (1/4, 3/4)
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, math.log(3.0)], [math.inf, 0.0]])
    nll = token_nll(logits, torch.tensor([0, 1, 1]))
    assert nll.dtype == torch.float64
    assert nll[0].item() == pytest.approx(math.log(4.0), rel=1e-7)
    assert nll[1].item() == pytest.approx(math.log(4.0 / 3.0), rel=1e-7)
    assert math.isnan(nll[2].item())  # a non-finite row is NaN, never a finite figure


def test_perplexity_is_exp_of_the_mean_nll_over_every_scored_token():
    acc = PerplexityAccumulator()
    assert math.isnan(acc.mean_nll) and math.isnan(acc.perplexity)
    uniform = torch.zeros(3, 5)  # -log(1/5) per token
    acc.add(uniform, torch.tensor([0, 1, 2]))
    acc.add(torch.tensor([[0.0, math.log(3.0)]], dtype=torch.float64), torch.tensor([1]))
    want = (3 * math.log(5.0) + math.log(4.0 / 3.0)) / 4
    assert acc.count == 4 and acc.mean_nll == pytest.approx(want, rel=1e-12)
    assert acc.perplexity == pytest.approx(math.exp(want), rel=1e-12)
    acc.add(torch.tensor([[math.nan, 0.0]]), torch.tensor([0]))
    assert math.isnan(acc.mean_nll) and math.isnan(acc.perplexity)


def fake_engine(target: str, logits_of, vocab: int = 4) -> Engine:
    return Engine(target, "native", "stand-in", "float32", vocab, logits_of, lambda ids, n: [], lambda: None)


def shifted(x: float):
    """An engine whose logits at every position are (0, 0, 0, x)."""

    def run(window: np.ndarray) -> torch.Tensor:
        out = torch.zeros(window.size, 4)
        out[:, 3] = x
        return out

    return run


@pytest.mark.parametrize("block_bytes", [1, 1 << 28])
def test_measure_gives_each_engine_its_own_perplexity_and_kl_against_the_reference(monkeypatch, block_bytes):
    monkeypatch.setattr(measure_module, "BLOCK_BYTES", block_bytes)  # a block of one window, or all of them
    ref, same, moved, alone = (
        fake_engine("ref", shifted(0.0)),
        fake_engine("same", shifted(0.0)),
        fake_engine("moved", shifted(2.0)),
        fake_engine("alone", shifted(1.0)),
    )
    wins = [np.array([0, 1, 2, 3, 0, 1]), np.array([3, 3, 3, 3, 3, 3]), np.array([2, 2, 2, 2, 2, 2])]
    got = measure([moved, ref, same, alone], wins, reference=ref, compare={"same", "moved"})
    assert got["ref"].divergence is None and got["alone"].divergence is None
    # window 0 scores 5 predictions, windows 1 and 2 two each (positions 3 and 4): 9 in all
    assert [got[t].perplexity.count for t in ("ref", "same", "moved", "alone")] == [9] * 4
    assert got["ref"].perplexity.perplexity == pytest.approx(4.0, rel=1e-12)  # uniform over 4
    kl = math.log((3 + math.exp(2.0)) / 4) - 2.0 / 4  # KL(uniform || softmax(0, 0, 0, 2))
    moved_kl = got["moved"].divergence.summary()
    assert moved_kl.positions == 9 and moved_kl.mean_kl == pytest.approx(kl, rel=1e-12)
    assert moved_kl.top1_agreement == 0.0
    assert got["same"].divergence.summary().max_kl == 0.0
    # targets: 1 2 3 0 1 | 3 3 | 2 2; p(3) = e^2 / (3 + e^2), p(other) = 1 / (3 + e^2)
    z = 3 + math.exp(2.0)
    want = (3 * (-2.0 + math.log(z)) + 6 * math.log(z)) / 9
    assert got["moved"].perplexity.mean_nll == pytest.approx(want, rel=1e-12)
    assert ref.tokens == 18 and moved.tokens == 18  # every engine ran every window once


def test_measure_without_a_reference_measures_no_kl():
    got = measure([fake_engine("a", shifted(1.0))], [np.zeros(4, dtype=np.int64)])
    assert got["a"].divergence is None and got["a"].perplexity.count == 3


def test_an_engine_counts_its_tokens_and_time():
    engine = fake_engine("a", shifted(0.0))
    assert math.isnan(engine.tokens_per_second)
    engine.logits(np.zeros(5, dtype=np.int64))
    engine.logits(np.zeros(3, dtype=np.int64))
    assert engine.tokens == 8 and engine.seconds > 0 and engine.tokens_per_second == 8 / engine.seconds


def test_bits_per_weight_and_file_type_labels():
    header = GGUFHeader("Q4_0", 256, [], n_elements=64, tensor_bytes=36, shards=["m.gguf"])
    assert header.bits_per_weight == 4.5
    assert math.isnan(GGUFHeader("F32", 1, [], 0, 0, []).bits_per_weight)
    assert file_type_label(15) == "Q4_K_M" and file_type_label(0) == "F32" and file_type_label(2) == "Q4_0"
    assert file_type_label(9999) == "file_type 9999"


def test_eval_json_keeps_other_targets_replaces_one_and_stores_nan_as_a_string(tmp_path):
    record_eval(tmp_path, {"a.gguf": {"perplexity": 12.5}, "b.gguf": {"perplexity": 3.0}})
    path = record_eval(tmp_path, {"a.gguf": {"perplexity": math.nan, "kl": {"max_kl": math.inf, "x": [-math.inf]}}})
    data = json.loads(path.read_text())  # strict JSON: json.loads would accept NaN, the text must not hold it
    assert "NaN," not in path.read_text().replace('"NaN"', "")
    assert data["version"] == 1 and list(data["results"]) == ["a.gguf", "b.gguf"]
    assert data["results"]["a.gguf"]["perplexity"] == "NaN"
    assert data["results"]["a.gguf"]["kl"] == {"max_kl": "Infinity", "x": ["-Infinity"]}
    assert data["results"]["b.gguf"]["perplexity"] == 3.0 and "timestamp" in data["results"]["b.gguf"]
    assert load_eval(tmp_path)["b.gguf"]["perplexity"] == 3.0


@pytest.mark.parametrize("text", ["not json", '{"version": 1}', '{"results": [1]}', '{"results": {"a": 1, "b": {}}}'])
def test_a_damaged_eval_json_reads_as_no_results(tmp_path, text):
    (tmp_path / "eval.json").write_text(text)
    assert load_eval(tmp_path) == ({"b": {}} if '"b"' in text else {})


def report(**changes) -> EvalReport:
    fields = {
        "rows": [{"perplexity": math.nan, "kl": None}],
        "dataset": "wiki",
        "text_tokens": 100,
        "ctx": 16,
        "windows": 6,
        "scored_tokens": 60,
        "method": "m",
        "reference": "native",
        "notes": ["a note"],
        "recorded": ["x/eval.json"],
    }
    return EvalReport(**{**fields, **changes})


def test_the_report_json_is_strict_and_its_lines_name_the_reference(tmp_path):
    path = write_report_json(report(), tmp_path / "r.json")
    data = json.loads(path.read_text())
    assert data["rows"] == [{"perplexity": "NaN", "kl": None}] and data["windows"] == 6
    assert report_lines(report()) == [
        "text: wiki",
        "method: m",
        "KL divergence: KL(P_ref || P) per scored position, reference: native",
        "a note",
        "recorded in x/eval.json",
    ]
    assert len(report_lines(report(reference=None))) == 4


def write_gguf(path, *, split: int | None = None, tensors: dict | None = None, file_type: int = 15) -> None:
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_file_type(file_type)
    writer.add_context_length(256)
    writer.add_token_list(["<pad>", "<bos>", "hello"])
    if split is not None:
        writer.add_uint16(gguf.Keys.Split.LLM_KV_SPLIT_COUNT, split)
    for name, data in (tensors or {}).items():
        writer.add_tensor(name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_a_gguf_header_gives_type_context_vocabulary_and_bits_per_weight(tmp_path):
    write_gguf(tmp_path / "m.gguf", tensors={"a": np.zeros((4, 8), np.float32), "b": np.zeros(16, np.float16)})
    header = read_gguf_header(tmp_path / "m.gguf")
    assert (header.label, header.context, header.tokens) == ("Q4_K_M", 256, ["<pad>", "<bos>", "hello"])
    assert (header.n_elements, header.tensor_bytes, header.shards) == (48, 160, ["m.gguf"])
    assert header.bits_per_weight == pytest.approx(160 * 8 / 48)
    assert read_gguf_header(tmp_path / "m.gguf", tokens=False).tokens == []


def test_a_split_gguf_header_counts_every_shards_tensors(tmp_path):
    write_gguf(tmp_path / "m-00001-of-00002.gguf", split=2, tensors={"a": np.zeros((4, 8), np.float32)})
    write_gguf(tmp_path / "m-00002-of-00002.gguf", split=2, tensors={"b": np.zeros(16, np.float16)})
    header = read_gguf_header(tmp_path / "m-00001-of-00002.gguf", tokens=False)
    assert header.shards == ["m-00001-of-00002.gguf", "m-00002-of-00002.gguf"]
    assert (header.n_elements, header.tensor_bytes) == (48, 160)


def test_a_file_that_is_not_gguf_is_one_error(tmp_path):
    (tmp_path / "x.gguf").write_bytes(b"not a gguf file at all" * 4)
    with pytest.raises(MythosError) as caught:
        read_gguf_header(tmp_path / "x.gguf")
    found = re.fullmatch(
        r".*x\.gguf is not a GGUF model file mythos-convert can read \((\w+): (.+)\): "
        r"pass a \.gguf file written by `mythos-convert gguf`",
        str(caught.value),
    )
    assert found is not None, str(caught.value)
    assert found[1].endswith("Error") and found[2] != "None"  # gguf-py's exception, named, with its text


def test_only_results_whose_files_still_match_are_bound(tmp_path):
    (tmp_path / "a.gguf").write_bytes(b"aaaa")
    (tmp_path / "b.gguf").write_bytes(b"bbbb")

    def files(name: str) -> dict:
        data = (tmp_path / name).read_bytes()
        return {name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}}

    record_eval(tmp_path, {"a.gguf": {"files": files("a.gguf")}, "b.gguf": {"files": files("b.gguf")}, "c": {}})
    assert sorted(bound_eval(tmp_path)) == ["a.gguf", "b.gguf"]  # no files recorded: never bound
    (tmp_path / "b.gguf").write_bytes(b"bbbc")  # same size, other bytes
    assert sorted(bound_eval(tmp_path)) == ["a.gguf"]


def test_eval_json_is_sorted_indented_and_stamped_in_utc(tmp_path):
    path = record_eval(tmp_path, {"z": {"perplexity": 2.0}, "a": {"perplexity": 1.0}})
    text = path.read_text()
    assert text.startswith('{\n  "results": {\n    "a": {\n      "perplexity": 1.0,\n')
    assert text.endswith('\n  "version": 1\n}\n')
    stamp = datetime.fromisoformat(json.loads(text)["results"]["z"]["timestamp"])
    assert stamp.utcoffset() == timedelta(0)
    assert abs((datetime.now(timezone.utc) - stamp).total_seconds()) < 120
