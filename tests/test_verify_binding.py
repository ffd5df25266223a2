"""verify.json binds its results to the files' sha256, and `push` refuses files changed since.

A real `hf` export (verified) plus a GGUF exported into it and verified in llama.cpp; then one byte
of the weights, a config value or the GGUF is changed after verify, and `push --dry-run` (which
runs every check, uploads nothing) must refuse, naming the file and the command to re-run. A
verify.json from before hashes were recorded, a partly verified folder and a corrupted verify.json
are refused too; the card drops results that no longer match.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mythos_convert.api import export_gguf, export_hf
from mythos_convert.card import write_card
from mythos_convert.cli import app
from mythos_convert.errors import MythosError
from mythos_convert.hub.checks import check_folder, check_verify

GGUF_NAME = "tiny-F16.gguf"
HF_FILES = {
    "model.safetensors",
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
}
ENDPOINT = "http://127.0.0.1:9"  # never contacted: a dry run plans and checks only


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def verified(tmp_path_factory, tiny_ckpt) -> Path:
    """A verified HF export with a verified F16 GGUF inside it (reference: the folder's weights)."""
    out = tmp_path_factory.mktemp("bound") / "out"
    assert export_hf(tiny_ckpt, out).verify["passed"]
    export = export_gguf(out, "f16", out / GGUF_NAME)
    assert export.verify[GGUF_NAME]["passed"], export.verify[GGUF_NAME]["failures"]
    return out


@pytest.fixture
def folder(verified: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(verified, tmp_path / "out"))


def _dry_run(folder: Path, *extra: str):
    args = ["push", str(folder), "--repo", "tester/tiny", "--dry-run", "--endpoint", ENDPOINT, *extra]
    return CliRunner().invoke(app, args)


def _refusal(folder: Path) -> str:
    run = _dry_run(folder)
    assert isinstance(run.exception, MythosError), run.output
    return str(run.exception)


pytestmark = pytest.mark.llama_cpp


def test_verify_json_records_every_verified_file_and_the_source(verified: Path, tiny_ckpt: Path):
    data = json.loads((verified / "verify.json").read_text())
    assert data["version"] == 2
    hf, gguf_entry = data["results"]["hf"], data["results"][GGUF_NAME]
    assert set(hf["files"]) == HF_FILES
    for name, digest in hf["files"].items():
        assert digest == {"sha256": _sha(verified / name), "size": (verified / name).stat().st_size}, name
    assert hf["source"] == {"name": "ckpt.pt", "sha256": _sha(tiny_ckpt), "size": tiny_ckpt.stat().st_size}
    assert gguf_entry["files"] == {
        GGUF_NAME: {"sha256": _sha(verified / GGUF_NAME), "size": (verified / GGUF_NAME).stat().st_size}
    }
    assert gguf_entry["source"]["name"] == "out/"
    assert gguf_entry["source"]["files"]["model.safetensors"]["sha256"] == _sha(verified / "model.safetensors")
    assert check_folder(verified, {"model.safetensors", "config.json", GGUF_NAME}) == []
    assert _dry_run(verified).exit_code == 0


def _flip_last_byte(path: Path) -> None:
    """Change one byte of tensor data (the file's last byte): same size, headers still valid."""
    with path.open("r+b") as fh:
        fh.seek(-1, 2)
        byte = fh.read(1)
        fh.seek(-1, 2)
        fh.write(bytes([byte[0] ^ 0x01]))


def _edit_config(path: Path) -> None:
    config = json.loads(path.read_text())
    config["rope_theta"] = config["rope_theta"] * 2
    path.write_text(json.dumps(config, indent=2))


@pytest.mark.parametrize(
    ("name", "tamper", "command"),
    [
        ("model.safetensors", _flip_last_byte, "mythos-convert verify {folder}`"),
        ("config.json", _edit_config, "mythos-convert verify {folder}`"),
        (GGUF_NAME, _flip_last_byte, "mythos-convert verify {folder}/" + GGUF_NAME + "`"),
    ],
)
def test_a_file_changed_after_verify_is_refused(folder: Path, name: str, tamper, command: str):
    tamper(folder / name)
    message = _refusal(folder)
    assert f"{name} changed since `verify` checked it" in message
    assert "re-run `" + command.format(folder=folder) in message
    assert "fails 1 check(s)" in message  # nothing else is wrong with the folder
    skipped = _dry_run(folder, "--skip-checks")
    assert skipped.exit_code == 0 and "--skip-checks" in skipped.output  # overrides, and says so


def test_an_excluded_changed_file_does_not_block(folder: Path):
    _flip_last_byte(folder / GGUF_NAME)
    assert _dry_run(folder, "--exclude", "*.gguf").exit_code == 0


def _parity_section(text: str) -> str:
    """The card's parity table only (the Files table above it has a row per GGUF too)."""
    return text.split("## Parity with the original model", 1)[1]


def test_the_card_shows_only_results_that_match_the_files(folder: Path):
    row = f"| `{GGUF_NAME}` | F16 |"  # its parity row
    text = _parity_section(write_card(folder).read_text())
    assert "| `hf` | float32 |" in text and row in text
    _flip_last_byte(folder / GGUF_NAME)
    text = _parity_section(write_card(folder).read_text())
    assert "| `hf` | float32 |" in text and row not in text


def test_an_old_verify_json_without_hashes_asks_to_rerun_verify(folder: Path):
    data = json.loads((folder / "verify.json").read_text())
    for entry in data["results"].values():
        del entry["files"], entry["source"]
    (folder / "verify.json").write_text(json.dumps({"version": 1, "results": data["results"]}))
    message = _refusal(folder)
    assert message.count("records no file hashes") == 2  # hf and the GGUF
    assert f"re-run verify, `mythos-convert verify {folder}`" in message
    assert f"re-run verify, `mythos-convert verify {folder / GGUF_NAME}`" in message


def test_a_partly_verified_folder_lists_what_was_not_verified(folder: Path):
    shutil.copy(folder / "model.safetensors", folder / "extra.safetensors")
    (problem,) = check_verify(folder, {"model.safetensors", "config.json", "extra.safetensors"})
    assert problem.startswith(
        "1 file(s) were never verified: extra.safetensors (verified: config.json, model.safetensors)"
    )
    data = json.loads((folder / "verify.json").read_text())
    del data["results"]["hf"]  # only the GGUF was verified: every HF file is listed
    (folder / "verify.json").write_text(json.dumps(data))
    (problem,) = check_verify(folder, {"model.safetensors", "config.json", "tokenizer.json", GGUF_NAME})
    assert problem == (
        "3 file(s) were never verified: config.json, model.safetensors, tokenizer.json (verified: tiny-F16.gguf): "
        f"run `mythos-convert verify {folder}` (or --exclude them)"
    )


def test_a_corrupted_verify_json_is_one_error_line(folder: Path):
    (folder / "verify.json").write_text('{"version": 2, "results": {"hf": {"passed": tru')
    assert check_verify(folder) == [
        f"{folder / 'verify.json'} is corrupted (Expecting value: line 1 column 45 (char 44)): "
        "delete it and re-run `mythos-convert verify` on the folder"
    ]
    run = subprocess.run(
        [sys.executable, "-m", "mythos_convert", "push", str(folder), "--repo", "tester/tiny", "--dry-run"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "verify.json is corrupted" in lines[0], run.stderr
