"""`eval` measures the MLX folders beside an HF export in mlx-lm (the MLX venv), on the windows and
float32 reference the GGUF files get, records them in eval.json bound by sha256, and the card shows them.

The folder is the reference fixture's HF export with a Q8_0 GGUF and `mythos-convert mlx --bits 4,8`;
eval scores 32 windows of 128 tokens of the embedded corpus's validation part (2,080 positions).
Measured here (Intel Xeon Sapphire Rapids, 2 cores, loaded), reference perplexity 131.12: Q8_0 mean
KL 1.08e-4, top-1 98.8%; MLX 8-bit 4.24e-5, 99.2%, perplexity -0.09%; MLX 4-bit 1.18e-2, 89.7%,
+0.07%. mlx-lm wrote folders of the same sizes in every run here (583,657 and 1,042,424 bytes:
5.08 and 9.08 bits/weight over 918,784 parameters). The KL bounds leave a factor of about 3 around
those figures (over all 478 windows: 4.22e-5 and 1.16e-2); a wrong reference, window or position
moves KL by orders of magnitude.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import export_reference
from mlx_venv import mlx_venv_python

from mythos_convert.api import export_gguf
from mythos_convert.card.mlx_facts import runtime_rows
from mythos_convert.errors import MythosError
from mythos_convert.evaluate.chart import point_style, render_png
from mythos_convert.evaluate.mlx_targets import with_mlx_runtime
from mythos_convert.evaluate.record import bound_eval
from mythos_convert.evaluate.targets import Target
from mythos_convert.mlx.export import export_mlx


def slow_mlx(test):
    """Marks of the tests that run mlx-lm in the MLX venv (as tests/test_mlx.py's)."""
    return pytest.mark.slow(pytest.mark.mlx(test))


CHUNKS = "32"


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mythos_convert", *args], capture_output=True, text=True, env=env, timeout=900
    )


def _no_mlx_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "MYTHOS_MLX_PYTHON"}


@pytest.fixture(scope="module")
def mlx_python() -> str:
    return str(mlx_venv_python())


@pytest.fixture(scope="module")
def measured(tmp_path_factory, mlx_python) -> Path:
    """The HF export with Q8_0 and MLX 4/8-bit folders, evaluated by the CLI (eval.json, card re-rendered)."""
    folder = export_reference(tmp_path_factory.mktemp("eval-mlx") / "hf")
    export_gguf(folder, "q8_0", verify=False)
    export_mlx(folder, "4,8", python=mlx_python)
    done = _cli("eval", str(folder), "--chunks", CHUNKS, "--mlx-python", mlx_python, "--quiet")
    assert done.returncode == 0, done.stderr
    return folder


def _entries(folder: Path) -> dict:
    return json.loads((folder / "eval.json").read_text())["results"]


@slow_mlx
def test_mlx_entries_beside_the_gguf(measured):
    results = _entries(measured)
    q8, m8, m4 = results["mythos-919K-Q8_0.gguf"], results["mlx-8bit/"], results["mlx-4bit/"]
    for entry, label in ((m8, "MLX 8-bit"), (m4, "MLX 4-bit")):
        assert entry["kind"] == "mlx" and entry["engine"] == "mlx-lm (CPU)" and entry["type"] == label
        # the same windows and reference as the GGUF file
        for key in ("ctx", "windows", "scored_tokens", "method", "dataset", "reference"):
            assert entry[key] == q8[key], key
    assert m8["windows"] == 32 and m8["reference"]["name"].startswith("native engine, float32")
    assert 1.5e-5 < m8["kl"]["mean_kl"] < 1.5e-4 and m8["kl"]["top1_agreement"] > 0.98
    assert 3e-3 < m4["kl"]["mean_kl"] < 3e-2 and 0.80 < m4["kl"]["top1_agreement"] < 0.95
    assert m4["kl"]["mean_kl"] > 50 * m8["kl"]["mean_kl"]  # measured 277x
    assert m8["kl"]["mean_kl"] < q8["kl"]["mean_kl"]  # measured 2.6x below (all 478 windows: 2.6x too)
    assert m8["kl"]["p99_kl"] < m4["kl"]["p99_kl"] and m8["kl"]["median_kl"] <= m8["kl"]["p99_kl"]
    ref_ppl = m8["reference"]["perplexity"]
    assert abs(m8["perplexity"] - ref_ppl) / ref_ppl < 0.003 and abs(m4["perplexity"] - ref_ppl) / ref_ppl < 0.01
    assert m8["delta_perplexity"] == pytest.approx(m8["perplexity"] - ref_ppl)
    assert (m4["size"], m8["size"]) == (583_657, 1_042_424)
    assert m4["bits_per_weight"] == pytest.approx(583_657 * 8 / 918_784)
    assert m8["bits_per_weight"] == pytest.approx(1_042_424 * 8 / 918_784)


@slow_mlx
def test_entries_are_bound_to_the_folders_files(measured):
    for name in ("mlx-4bit", "mlx-8bit"):
        files = _entries(measured)[f"{name}/"]["files"]
        on_disk = sorted(f"{name}/{p.name}" for p in (measured / name).iterdir() if p.name != "README.md")
        assert sorted(files) == on_disk and f"{name}/model.safetensors" in files
        weights = (measured / name / "model.safetensors").read_bytes()
        assert files[f"{name}/model.safetensors"] == {
            "sha256": hashlib.sha256(weights).hexdigest(),
            "size": len(weights),
        }


@slow_mlx
def test_a_tampered_mlx_file_loses_its_figures_until_measured_again(measured, mlx_python, tmp_path):
    copy = tmp_path / "hf"
    shutil.copytree(measured, copy)
    weights = copy / "mlx-4bit" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01  # a bit of the last tensor's data: still loads
    weights.write_bytes(bytes(data))
    assert "mlx-4bit/" not in bound_eval(copy) and "mlx-8bit/" in bound_eval(copy)
    done = _cli("card", str(copy))
    assert done.returncode == 0, done.stderr
    row = next(line for line in (copy / "README.md").read_text().splitlines() if line.startswith("| `mlx-4bit/`"))
    assert row.endswith("| - | - | - |")  # listed, but no figure for bytes no eval measured
    old = _entries(copy)["mlx-4bit/"]
    done = _cli("eval", str(copy / "mlx-4bit"), "--chunks", CHUNKS, "--mlx-python", mlx_python, "--quiet")
    assert done.returncode == 0, done.stderr
    new = _entries(copy)["mlx-4bit/"]
    assert new["files"]["mlx-4bit/model.safetensors"]["sha256"] == hashlib.sha256(bytes(data)).hexdigest()
    assert new["files"]["mlx-4bit/model.safetensors"] != old["files"]["mlx-4bit/model.safetensors"]
    assert "mlx-4bit/" in bound_eval(copy) and new["kl"] is not None  # the folder alone: its parent is the reference


@slow_mlx
def test_card_lists_the_mlx_folders(measured):
    card = (measured / "README.md").read_text()
    results = _entries(measured)
    for name, bits, label in (("mlx-4bit", 4, "MLX 4-bit"), ("mlx-8bit", 8, "MLX 8-bit")):
        e = results[f"{name}/"]
        row = f"| `{name}/` | {label} | "
        line = next(line for line in card.splitlines() if line.startswith(row))
        assert f"| {e['bits_per_weight']:.2f} | {e['perplexity']:.4f} | {e['kl']['mean_kl']:.3g} |" in line
        assert line.endswith(f"| {100 * e['kl']['top1_agreement']:.1f}% |")
        assert f"| `{name}/` | MLX {bits}-bit |" in card.split("## Parity", 1)[1]  # verify results kept: bound
    files_table = card.split("### Files", 1)[1].split("\n\n", 2)[1]
    assert files_table.index("Q8_0.gguf") < files_table.index("`mlx-4bit/`")  # one table across formats
    assert "The MLX folders ran in mlx-lm (CPU)." in card
    mlx_section = card.split("## MLX\n", 1)[1].split("\n## ", 1)[0]
    assert "load(folder)" in mlx_section and "path/to/this/folder/mlx-4bit/" in mlx_section
    runtimes = card.split("## Runtimes\n", 1)[1].split("\n## ", 1)[0]
    assert "| MLX (mlx-lm, CPU) | `mlx-4bit/`, `mlx-8bit/` |" in runtimes and "| llama.cpp |" in runtimes
    assert "TGI" not in card
    assert (measured / "gguf-quality.png").read_bytes()[:4] == b"\x89PNG"


def _main_python_has_mlx() -> None:
    if importlib.util.find_spec("mlx_lm") is not None:
        pytest.skip("this Python has mlx-lm (the `mlx` extra): there is no missing install to report")


@slow_mlx
def test_without_mlx_lm_one_skip_line(measured, tmp_path):
    _main_python_has_mlx()
    before = (measured / "eval.json").read_bytes()
    done = _cli(
        "eval", str(measured), "--chunks", "2", "--no-record", "--json", str(tmp_path / "r.json"), env=_no_mlx_env()
    )
    assert done.returncode == 0, done.stderr
    skips = [line for line in done.stdout.splitlines() if line.startswith("skipped")]
    assert len(skips) == 1 and skips[0].startswith("skipped mlx-4bit/, mlx-8bit/: ")
    assert "pip install 'mythos-convert[mlx]'" in skips[0]
    rows = json.loads((tmp_path / "r.json").read_text())["rows"]
    assert [r["kind"] for r in rows] == ["native", "hf", "gguf"]
    assert (measured / "eval.json").read_bytes() == before


@slow_mlx
def test_an_mlx_target_without_mlx_lm_is_one_error_line(measured):
    _main_python_has_mlx()
    done = _cli("eval", str(measured / "mlx-8bit"), "--chunks", "2", "--no-record", env=_no_mlx_env())
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and done.stderr.startswith("error:")
    assert "pip install 'mythos-convert[mlx]'" in done.stderr
    done = _cli("eval", str(measured), "--chunks", "2", "--no-record", "--mlx-python", sys.executable)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "cannot import mlx_lm" in done.stderr


# Without mlx-lm: what the card and eval decide from records and targets.

VERIFIED_HF = {"target": "hf", "passed": True, "max_abs_diff": 0.0, "greedy_equal": True}
VERIFIED_Q8 = {"target": "m-Q8_0.gguf", "kind": "gguf", "passed": True}
MLX_4 = {"target": "mlx-4bit/", "runtime": "mlx-lm", "passed": True, "mean_kl": 0.0109}
MLX_8 = {"target": "mlx-8bit/", "runtime": "mlx-lm", "passed": True, "mean_kl": 4.9e-05}


def _runtimes(verify: list[dict], gguf: bool = True) -> dict[str, dict]:
    return {r["runtime"]: r for r in runtime_rows(verify, gguf, gguf)}


def test_runtime_table_says_how_each_runtime_was_checked():
    rows = _runtimes([VERIFIED_HF, VERIFIED_Q8, MLX_4, MLX_8])
    assert list(rows) == [
        "transformers 4.46 to 5.x",
        "vLLM (CPU)",
        "llama.cpp",
        "Ollama",
        "MLX (mlx-lm, CPU)",
        "any other",
    ]
    assert rows["transformers 4.46 to 5.x"]["checked"].startswith(
        "run: logits against the original model, max abs diff 0,"
    )
    assert rows["llama.cpp"]["checked"].startswith("run: 1 of the GGUF files verified")
    assert rows["Ollama"]["checked"].startswith("checked statically, not run")
    assert rows["Ollama"]["files"] == "the `.gguf` files, `Modelfile`"
    assert rows["MLX (mlx-lm, CPU)"]["files"] == "`mlx-4bit/`, `mlx-8bit/`"
    assert (
        rows["MLX (mlx-lm, CPU)"]["checked"]
        == "run: KL divergence from the original model, mean at most 0.0109 (Parity below)"
    )
    assert rows["vLLM (CPU)"]["checked"].endswith("not on these files") and rows["any other"]["checked"].startswith(
        "not checked"
    )
    assert not any("TGI" in str(r) for r in rows.values())


def test_runtime_table_claims_nothing_unverified():
    rows = _runtimes([dict(MLX_4, passed=False), dict(VERIFIED_Q8, passed=False)])
    assert "MLX (mlx-lm, CPU)" not in rows  # a failed MLX verify is no check
    assert rows["llama.cpp"]["checked"].startswith("not verified on these files yet")
    assert rows["transformers 4.46 to 5.x"]["checked"].startswith("not verified on these files yet")
    assert set(_runtimes([VERIFIED_HF], gguf=False)) == {"transformers 4.46 to 5.x", "vLLM (CPU)", "any other"}


def _mlx_target(found: bool) -> Target:
    return Target("mlx", Path("out/mlx-4bit"), "mlx-4bit/", "out/mlx-4bit/", None, mlx=object(), found=found)


def test_found_mlx_folders_are_skipped_without_mlx_lm(monkeypatch):
    _main_python_has_mlx()
    monkeypatch.delenv("MYTHOS_MLX_PYTHON", raising=False)
    hf = Target("hf", Path("out"), "hf", "out/", None)
    kept, notes, python = with_mlx_runtime([hf, _mlx_target(found=True)], None)
    assert kept == [hf] and python is None and len(notes) == 1
    assert notes[0].startswith("skipped mlx-4bit/: ") and "pip install 'mythos-convert[mlx]'" in notes[0]
    with pytest.raises(MythosError, match=r"pip install 'mythos-convert\[mlx\]'"):
        with_mlx_runtime([hf, _mlx_target(found=False)], None)  # asked for by name
    with pytest.raises(MythosError, match="cannot import mlx_lm"):
        with_mlx_runtime([hf, _mlx_target(found=True)], sys.executable)  # --mlx-python given
    assert with_mlx_runtime([hf], sys.executable) == ([hf], [], None)  # no MLX folder: nothing probed


def test_chart_marks_mlx_points_and_adds_a_legend_only_when_formats_mix():
    pytest.importorskip("matplotlib")
    gguf = [{"type": "Q8_0", "size": 994_016, "mean_kl": 1.1e-4}]
    mlx = [{"type": "MLX 8-bit", "size": 1_042_424, "mean_kl": 4.2e-5, "format": "MLX"}]
    assert render_png(gguf, "t") == render_png([dict(gguf[0], format="GGUF")], "t")  # GGUF: the default style
    mixed = render_png(gguf + mlx, "t")
    unmarked = render_png([*gguf, {k: v for k, v in mlx[0].items() if k != "format"}], "t")
    assert mixed != unmarked  # the MLX point has its own marker and the legend is drawn
    assert point_style(mlx[0]) != point_style(gguf[0])
