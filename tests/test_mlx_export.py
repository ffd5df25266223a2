"""`mythos-convert mlx`: 4- and 8-bit folders by mlx-lm's own quantizer that `mlx_lm.load` runs, verified, with a card.

The KL gates (mythos_convert/verify/gates.py) are about 4x the worst measured over the reference
checkpoint and four random configurations: 8-bit mean 0.000153 / p99 0.000507, 4-bit 0.0408 / 0.105.
Bad input: no mlx-lm, an unsupported width, an existing output: one `error:` line, exit 2, nothing written.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys

import pytest
from helpers import export_reference
from mlx_venv import mlx_venv_python

from mythos_convert.mlx.export import export_mlx
from mythos_convert.mlx.parity import run_mlx
from mythos_convert.mlx.verify import within_kl_gate
from mythos_convert.verify.gates import MLX_KL_GATES

pytestmark = [pytest.mark.slow, pytest.mark.mlx]


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    return export_reference(tmp_path_factory.mktemp("mlx") / "hf")


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mythos_convert", *args], capture_output=True, text=True, env=env, timeout=900
    )


def test_gate_literals():
    assert MLX_KL_GATES == {8: (0.0006, 0.002), 4: (0.17, 0.42)}
    assert within_kl_gate(8, 0.00059, 0.0019) and not within_kl_gate(8, 0.00061, 0.0019)
    assert not within_kl_gate(8, 0.00059, 0.0021)
    assert within_kl_gate(4, 0.169, 0.419) and not within_kl_gate(4, 0.171, 0.419)
    assert not within_kl_gate(4, 0.169, 0.421) and not within_kl_gate(4, math.nan, 0.1)


def test_mlx_command_writes_verified_folders(hf_folder):
    python = str(mlx_venv_python())
    done = _cli("mlx", str(hf_folder), "--bits", "4,8", "--mlx-python", python)
    assert done.returncode == 0, done.stderr
    results = json.loads((hf_folder / "verify.json").read_text())["results"]
    for bits in (4, 8):
        folder = hf_folder / f"mlx-{bits}bit"
        config = json.loads((folder / "config.json").read_text())
        assert config["quantization"] == {"group_size": 64, "bits": bits, "mode": "affine"}
        assert config["rope_theta"] == 50000.0
        r = results[f"mlx-{bits}bit/"]
        assert r["passed"] and r["bits"] == bits and r["versions"] == {"mlx": "0.32.4", "mlx-lm": "0.32.2"}
        assert r["mean_kl"] <= MLX_KL_GATES[bits][0] and r["positions"] > 50
        card = (folder / "README.md").read_text()
        assert f"(MLX, {bits}-bit)" in card and f"{r['mean_kl']:.3g}" in card and "mlx_lm" in card
        got = run_mlx(python, folder, [[1, 5, 6, 7]], greedy=4)  # mlx_lm.load runs it
        assert got.info["quantization"]["bits"] == bits and len(got.greedy[0]) == 4
    assert results["mlx-4bit/"]["mean_kl"] > results["mlx-8bit/"]["mean_kl"]  # 4 bits cost more


def test_without_mlx_one_error_line_names_the_install(hf_folder, tmp_path):
    if importlib.util.find_spec("mlx_lm") is not None:
        pytest.skip("this Python has mlx-lm (the `mlx` extra): there is no missing install to report")
    env = {k: v for k, v in os.environ.items() if k != "MYTHOS_MLX_PYTHON"}
    before = sorted(p.name for p in hf_folder.iterdir())
    done = _cli("mlx", str(hf_folder), "--bits", "4", env=env)  # the main venv has no mlx-lm
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error:")
    assert "pip install 'mythos-convert[mlx]'" in done.stderr
    assert sorted(p.name for p in hf_folder.iterdir()) == before


@pytest.mark.parametrize("bits", ["3", "4,16", "fp4", ""])
def test_unsupported_width_is_refused_by_name(hf_folder, bits):
    done = _cli("mlx", str(hf_folder), "--bits", bits, "--mlx-python", sys.executable)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert f"--bits {bits.split(',')[-1] or '(empty)'} is not supported" in done.stderr


def test_failed_verification_writes_nothing(hf_folder, tmp_path, monkeypatch):
    import mythos_convert.verify.gates as gates

    monkeypatch.setitem(gates.MLX_KL_GATES, 4, (1e-9, 1e-9))
    with pytest.raises(Exception, match="mlx-4bit failed verification"):
        export_mlx(hf_folder, "4", force=True, python=str(mlx_venv_python()))
    leftovers = [p.name for p in hf_folder.iterdir() if p.name.startswith(".mlx-4bit")]
    assert leftovers == []
