"""What `eval` reports (evaluate/report.py): each engine's row, what each folder's eval.json records
of it, the printed table and the lines under it. Targets, engines and measurements are stand-ins
with just the fields the report reads."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

from rich.text import Text

from mythos_convert.evaluate.report import (
    EvalReport,
    record_report,
    render_report,
    report_lines,
    report_row,
    report_table,
    write_report_json,
)


def _engine(target="m-Q4_K_M.gguf", kind="gguf", engine="llama.cpp", dtype="Q4_K_M", seconds=2.0, tokens=100):
    return SimpleNamespace(
        target=target,
        kind=kind,
        engine=engine,
        dtype=dtype,
        seconds=seconds,
        tokens_per_second=tokens / seconds,
    )


class _Summary:
    def __init__(self, **figures):
        self.figures = figures

    def as_dict(self):
        return dict(self.figures)


def _measured(ppl=12.5, nll=2.5, count=60, kl=None):
    perplexity = SimpleNamespace(perplexity=ppl, mean_nll=nll, count=count)
    divergence = None if kl is None else SimpleNamespace(summary=lambda: _Summary(**kl))
    return SimpleNamespace(perplexity=perplexity, divergence=divergence)


def _target(key="m-Q4_K_M.gguf", size=1234, *, mlx=None, header=None, stored=None, folder=None, files=None):
    hf = None if stored is None else SimpleNamespace(stored_dtype=lambda: stored)
    return SimpleNamespace(
        key=key,
        shown=key,
        size=size,
        mlx=mlx,
        header=header,
        source=SimpleNamespace(hf=hf),
        folder=folder,
        files=files or {},
    )


KL = {"mean_kl": 0.0123, "median_kl": 0.004, "p99_kl": 0.25, "max_kl": 1.5, "top1_agreement": 0.9375}


def test_a_row_holds_the_engine_its_figures_and_its_perplexity_against_the_reference():
    engine, ref = _engine(), _engine("m.pt", "native", "native (torch)", "float32")
    header = SimpleNamespace(bits_per_weight=4.85)
    row = report_row(engine, _target(header=header), _measured(kl=KL), ref, 12.0, 999)
    assert row == {
        "target": "m-Q4_K_M.gguf",
        "key": "m-Q4_K_M.gguf",
        "kind": "gguf",
        "engine": "llama.cpp",
        "type": "Q4_K_M",
        "reference": False,
        "perplexity": 12.5,
        "mean_nll": 2.5,
        "scored_tokens": 60,
        "kl": KL,
        "delta_perplexity": 0.5,
        "size": 1234,
        "bits_per_weight": 4.85,
        "tokens_per_second": 50.0,
        "seconds": 2.0,
    }


def test_the_reference_row_has_no_kl_and_no_delta():
    ref = _engine("m.pt", "native", "native (torch)", "float32")
    row = report_row(ref, None, _measured(), ref, 12.0, 4096)
    assert row["reference"] is True and row["key"] is None
    assert row["kl"] is None and row["delta_perplexity"] is None
    assert row["size"] == 4096 and row["bits_per_weight"] == 32.0
    half = _engine("hf", "hf", "transformers", "bfloat16")
    row = report_row(half, None, _measured(), ref, 12.0, 2048)
    assert row["bits_per_weight"] == 16.0 and row["reference"] is False


def test_no_delta_without_a_reference_perplexity():
    row = report_row(_engine(), _target(), _measured(kl=KL), None, None, 0)
    assert row["kl"] == KL and row["delta_perplexity"] is None


def test_bits_per_weight_come_from_the_mlx_folder_then_the_gguf_header_then_the_stored_dtype():
    engine = _engine()
    bits = SimpleNamespace(bits_per_weight=4.5)
    other = SimpleNamespace(bits_per_weight=8.5)

    def row_bits(target):
        return report_row(engine, target, _measured(), None, None, 0)["bits_per_weight"]

    assert row_bits(_target(mlx=bits, header=other)) == 4.5
    assert row_bits(_target(header=other, stored="bfloat16")) == 8.5
    assert row_bits(_target(stored="bfloat16")) == 16.0
    assert row_bits(_target(stored="float16")) == 16.0
    assert row_bits(_target(stored="float32")) == 32.0
    assert row_bits(_target()) == 32.0  # a checkpoint: float32
    assert row_bits(_target(stored="int8")) is None


def test_each_folder_records_its_targets_with_what_they_were_measured_on(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    files = {"m.gguf": {"sha256": "ab", "size": 5}}
    targets = [
        _target("m.pt", folder=None),
        _target("hf", folder=a, files={"config.json": {"sha256": "cd", "size": 2}}),
        _target("m.gguf", folder=a, files=files),
        _target("n.gguf", folder=b),
    ]
    rows = [
        {"target": "m.pt", "key": None, "reference": True, "seconds": 1.0, "kl": None, "perplexity": 10.0},
        {"target": "hf", "key": "hf", "reference": False, "seconds": 1.0, "kl": None, "perplexity": 10.5},
        {"target": "m.gguf", "key": "m.gguf", "reference": False, "seconds": 2.0, "kl": KL, "perplexity": 11.0},
        {"target": "n.gguf", "key": "n.gguf", "reference": False, "seconds": 3.0, "kl": KL, "perplexity": 12.0},
    ]
    report = EvalReport(rows, "wiki", 5000, 64, 7, 4321, "sliding", "m.pt", [])
    written = record_report(report, targets, 10.0)
    assert written == [str(a / "eval.json"), str(b / "eval.json")]
    entries = json.loads((a / "eval.json").read_text())["results"]
    assert sorted(entries) == ["hf", "m.gguf"]
    gguf = entries["m.gguf"]
    assert gguf.pop("timestamp")
    assert gguf == {
        "perplexity": 11.0,
        "kl": KL,
        "ctx": 64,
        "windows": 7,
        "method": "sliding",
        "dataset": "wiki; 4,321 tokens scored",
        "reference": {"name": "m.pt", "perplexity": 10.0},
        "files": files,
    }
    assert entries["hf"]["reference"] is None and entries["hf"]["files"] == {"config.json": {"sha256": "cd", "size": 2}}
    assert list(json.loads((b / "eval.json").read_text())["results"]) == ["n.gguf"]


def _cells(table) -> list[list[str]]:
    return [[str(cell) for cell in column.cells] for column in table.columns]


def _report(rows, **changes) -> EvalReport:
    fields = dict(dataset="wiki", text_tokens=9000, ctx=128, windows=3, scored_tokens=12345, method="m")
    fields.update(reference="m.pt", notes=["a [note]"], recorded=["a/eval.json", "b/eval.json"])
    return EvalReport(rows, **{**fields, **changes})


ROWS = [
    {
        "target": "m.pt",
        "reference": True,
        "engine": "native (torch)",
        "type": "float32",
        "size": 3 * 2**20,
        "bits_per_weight": 32.0,
        "perplexity": 10.0,
        "delta_perplexity": None,
        "kl": None,
        "tokens_per_second": 1234.5,
    },
    {
        "target": "m.gguf",
        "reference": False,
        "engine": "llama.cpp",
        "type": "Q4_K_M",
        "size": 512,
        "bits_per_weight": None,
        "perplexity": math.nan,
        "delta_perplexity": 0.25,
        "kl": KL,
        "tokens_per_second": 99.4,
    },
]


def test_the_table_prints_one_row_per_model_the_reference_marked():
    table = report_table(_report(ROWS))
    assert str(table.title) == "perplexity on 12,345 tokens (3 windows of 128)"
    headers = [str(c.header) for c in table.columns]
    assert headers == [
        "target",
        "engine",
        "type",
        "size",
        "bits/w",
        "perplexity",
        "Δ ppl",
        "mean KL",
        "median KL",
        "p99 KL",
        "max KL",
        "top-1",
        "tokens/s",
    ]
    assert [c.justify for c in table.columns] == ["left"] * 3 + ["right"] * 10
    assert _cells(table) == [
        ["m.pt (reference)", "m.gguf"],
        ["native (torch)", "llama.cpp"],
        ["float32", "Q4_K_M"],
        ["3.00 MiB", "512 B"],
        ["32.00", "-"],
        ["10.0000", "NaN"],
        ["-", "+0.2500"],
        ["-", "0.0123"],
        ["-", "0.004"],
        ["-", "0.25"],
        ["-", "1.5"],
        ["-", "93.75%"],
        ["1,234", "99"],
    ]


def test_the_lines_under_the_table_and_what_is_printed_in_order(tmp_path):
    report = _report(ROWS)
    assert report_lines(report) == [
        "text: wiki",
        "method: m",
        "KL divergence: KL(P_ref || P) per scored position, reference: m.pt",
        "a [note]",
        "recorded in a/eval.json",
        "recorded in b/eval.json",
    ]
    assert report_lines(_report(ROWS, reference=None, notes=[], recorded=[])) == ["text: wiki", "method: m"]
    shown = render_report(report)
    assert str(shown[0].title) == "perplexity on 12,345 tokens (3 windows of 128)"
    assert [Text.from_markup(line).plain for line in shown[1:]] == report_lines(report)  # brackets kept
    assert render_report(report, tmp_path / "r.json")[-1] == f"report: {tmp_path / 'r.json'}"
    assert len(render_report(report, None)) == 7


def test_the_report_json_holds_every_field(tmp_path):
    report = _report(ROWS)
    path = write_report_json(report, str(tmp_path / "r.json"))
    assert path == Path(tmp_path / "r.json")
    data = json.loads(path.read_text())
    assert data["rows"][1]["perplexity"] == "NaN"
    assert {k: data[k] for k in ("dataset", "text_tokens", "ctx", "windows", "scored_tokens")} == {
        "dataset": "wiki",
        "text_tokens": 9000,
        "ctx": 128,
        "windows": 3,
        "scored_tokens": 12345,
    }
    assert data["recorded"] == ["a/eval.json", "b/eval.json"] and data["notes"] == ["a [note]"]
    assert EvalReport(ROWS, "w", 1, 2, 3, 4, "m", None, []).recorded == []


def test_the_table_writes_exponents_and_infinities_in_lower_case():
    inf = math.inf
    row = dict(ROWS[1], bits_per_weight=inf, perplexity=inf, delta_perplexity=inf, tokens_per_second=inf)
    row["kl"] = {"mean_kl": 1.5e-05, "median_kl": 2.5e-06, "p99_kl": 3.5e-05, "max_kl": 4.5e20, "top1_agreement": inf}
    assert [column[0] for column in _cells(report_table(_report([row])))][4:] == [
        "inf",
        "inf",
        "+inf",
        "1.5e-05",
        "2.5e-06",
        "3.5e-05",
        "4.5e+20",
        "inf%",
        "inf",
    ]
