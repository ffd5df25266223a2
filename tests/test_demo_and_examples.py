"""`mythos-convert demo` end to end (as the README's first command runs it), then every example on its output.

The demo trains for a few steps only (`--max-steps`): what is tested here is that the whole real
pipeline runs and proves parity, not how good the tiny model gets (test_trainer covers learning).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _run(args: list[str], cwd: Path | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "COLUMNS": "80",
    }
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("demo") / "demo-out"
    proc = _run([sys.executable, "-m", "mythos_convert", "demo", str(out), "--max-steps", "40"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def test_demo_runs_the_whole_pipeline(demo_out):
    out, proc = demo_out
    hf = out / "hf"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "README.md", "verify.json", "Modelfile"):
        assert (hf / name).is_file(), name
    ggufs = sorted(p.name for p in hf.glob("*.gguf"))
    assert [n.rsplit("-", 1)[-1] for n in ggufs] == ["F16.gguf", "Q8_0.gguf"]
    results = json.loads((hf / "verify.json").read_text())["results"]
    assert results["hf"]["passed"] and results["hf"]["max_abs_diff"] <= 1e-4
    assert all(results[name]["passed"] for name in ggufs)
    # the closing table names every artifact with its parity figures, and the push was only planned
    for label in ("checkpoint", "HF folder", "GGUF F16", "GGUF Q8_0", "model card"):
        assert label in proc.stdout
    assert "dry run" in proc.stdout.lower() or "your-name/mythos-tiny" in proc.stdout
    assert proc.stdout.count("ok: max|diff|") == 3
    # in an 80-column terminal the table fits and no path is cut across lines
    table = proc.stdout.split("mythos-convert demo:", 1)[1].split("\n  checkpoint:", 1)[0]
    assert max(len(line) for line in table.splitlines()) <= 80
    for name in ggufs:
        assert f"hf/{name}" in table
    # the short eval put figures, not dashes, into the card's Files table, and drew the chart
    card = (hf / "README.md").read_text()
    files = card.split("### Files", 1)[1].split("\n\n", 2)[1]
    assert files.count("|") > 0 and " - |" not in files, files
    assert (hf / "gguf-quality.png").is_file() and "gguf-quality.png" in card


def test_demo_refuses_to_overwrite(demo_out):
    out, _ = demo_out
    before = (out / "hf" / "model.safetensors").read_bytes()
    proc = _run([sys.executable, "-m", "mythos_convert", "demo", str(out), "--max-steps", "2"], timeout=120)
    assert proc.returncode == 2
    assert "--force" in proc.stderr and proc.stderr.strip().count("\n") == 0
    assert (out / "hf" / "model.safetensors").read_bytes() == before


def test_example_load_with_transformers(demo_out):
    out, _ = demo_out
    script = ROOT / "examples" / "load_with_transformers.py"
    proc = _run([sys.executable, str(script), str(out / "hf"), "The meaning of", "--max-new-tokens", "12"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("The meaning of") and len(proc.stdout.strip()) > len("The meaning of")


def test_example_greedy_matches_native_generate(demo_out):
    """The transformers example (greedy) continues the prompt exactly as the native engine does."""
    out, _ = demo_out
    script = ROOT / "examples" / "load_with_transformers.py"
    hf = _run([sys.executable, str(script), str(out / "hf"), "The meaning of", "--max-new-tokens", "12", "--greedy"])
    ckpt = str(out / "run" / "ckpt.pt")
    generate = ["generate", ckpt, "The meaning of", "--max-new-tokens", "12", "--temperature", "0", "--quiet"]
    native = _run([sys.executable, "-m", "mythos_convert", *generate])
    assert hf.returncode == 0 and native.returncode == 0, hf.stderr[-2000:] + native.stderr[-2000:]
    assert hf.stdout.strip() == native.stdout.strip()


def test_example_run_with_llama_cpp(demo_out):
    out, _ = demo_out
    gguf = next((out / "hf").glob("*-Q8_0.gguf"))
    script = ROOT / "examples" / "run_with_llama_cpp.py"
    proc = _run([sys.executable, str(script), str(gguf), "The meaning of", "--max-new-tokens", "12"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("The meaning of") and len(proc.stdout.strip()) > len("The meaning of")
