"""One failure policy: a failed verification raises `VerificationFailed` (a MythosError) with its
results and what was written attached, from `export_hf`, `export_gguf` and `verify` alike; the files
stay, the failure recorded; the CLI prints what it printed before, then one `error:` line, exit 2.

The verifiers are replaced by one that fails, so the policy is tested apart from what fails."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import mythos_convert.verify.gguf as gguf_verifier
import mythos_convert.verify.hf as hf_verifier
from mythos_convert.api import export_gguf, export_hf, verify
from mythos_convert.cli import app, main
from mythos_convert.errors import MythosError, VerificationFailed

FAILED = {
    "passed": False,
    "failures": ["max |diff| 1 > 1e-05 (planted)"],
    "max_abs_diff": 1.0,
    "argmax_agreement": 0.5,
    "greedy_equal": False,
}


def _failing(*args, **kwargs) -> dict:
    return dict(FAILED)


@pytest.fixture(scope="module")
def exported(tiny_ckpt, tmp_path_factory) -> Path:
    return export_hf(tiny_ckpt, tmp_path_factory.mktemp("policy") / "out", verify=False).folder


def test_export_hf_raises_with_the_result_and_the_written_folder(tiny_ckpt, tmp_path, monkeypatch):
    monkeypatch.setattr(hf_verifier, "verify_hf", _failing)
    with pytest.raises(VerificationFailed) as caught:
        export_hf(tiny_ckpt, tmp_path / "out")
    assert isinstance(caught.value, MythosError) and caught.value.results == {"hf": FAILED}
    assert caught.value.result == FAILED and "(planted)" in str(caught.value)
    assert caught.value.output.folder == tmp_path / "out" and (tmp_path / "out" / "config.json").is_file()


def test_export_gguf_raises_after_writing_every_file(exported, tmp_path, monkeypatch):
    folder = tmp_path / "out"
    shutil.copytree(exported, folder)
    monkeypatch.setattr(gguf_verifier, "verify_gguf", _failing)
    with pytest.raises(VerificationFailed) as caught:
        export_gguf(folder, "f32,q8_0")
    written = caught.value.output.written
    assert len(written) == 2 and all(w.path.is_file() for w in written)
    assert set(caught.value.results) == {w.path.name for w in written}
    assert str(caught.value).startswith(f"verification of {written[0].path.name}, {written[1].path.name} failed")


def test_verify_raises_where_it_returned_a_failed_result(exported, monkeypatch):
    monkeypatch.setattr(hf_verifier, "verify_hf", _failing)
    with pytest.raises(VerificationFailed) as caught:
        verify(exported)
    assert caught.value.results == {"hf": FAILED}
    assert str(caught.value).startswith(f"verification of {exported} failed: max |diff| 1 > 1e-05 (planted);")


def test_the_cli_shows_the_written_files_then_one_error_line(exported, tmp_path, monkeypatch):
    folder = tmp_path / "out"
    shutil.copytree(exported, folder)
    monkeypatch.setattr(gguf_verifier, "verify_gguf", _failing)
    res = CliRunner().invoke(app, ["gguf", str(folder), "--outtype", "f32", "-q"])
    assert isinstance(res.exception, VerificationFailed)
    assert "FAIL" in res.stdout  # the table of written files came first, the failure in its row


def test_a_failed_verify_is_one_error_line_and_exit_2(exported, monkeypatch, capsys):
    monkeypatch.setattr(hf_verifier, "verify_hf", _failing)
    monkeypatch.setattr(sys, "argv", ["mythos-convert", "verify", str(exported), "-q"])
    with pytest.raises(SystemExit) as caught:
        main()
    assert caught.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"error: verification of {exported} failed: max |diff| 1 > 1e-05 (planted); check that --ckpt is the "
        "checkpoint it was exported from, then re-export it (report a bug if it still fails)"
    ]
