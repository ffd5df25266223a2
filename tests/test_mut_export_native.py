"""`native` (export/native.py) on folders that differ from our own export: a damaged tokenizer.json is
refused with its fix, a folder without mythos.json keeps its tokenizer.json as it is, and a restored
post-processor is written as indented UTF-8 JSON."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from mythos_convert.api import export_hf
from mythos_convert.errors import MythosError
from mythos_convert.export.native import export_native


@pytest.fixture(scope="module")
def hf_folder(tiny_ckpt, tmp_path_factory) -> Path:
    return export_hf(tiny_ckpt, tmp_path_factory.mktemp("nat") / "hf", verify=False, card=False).folder


def _copy(folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(folder, tmp_path / "hf"))


def test_a_damaged_tokenizer_json_is_refused_with_its_fix(hf_folder, tmp_path):
    folder = _copy(hf_folder, tmp_path)
    (folder / "tokenizer.json").write_text("{not json")
    with pytest.raises(MythosError) as caught:
        export_native(folder, tmp_path / "back.pt")
    assert str(caught.value).startswith(f"tokenizer {folder / 'tokenizer.json'} is not a valid tokenizers JSON file")
    assert str(caught.value).endswith(": replace it with the model's tokenizer.json, or re-export the folder")
    assert not (tmp_path / "back.pt").exists()


def test_a_folder_without_mythos_json_keeps_its_tokenizer_json_as_it_is(hf_folder, tmp_path):
    folder = _copy(hf_folder, tmp_path)
    (folder / "mythos.json").unlink()
    (folder / ".mythos-local.json").unlink(missing_ok=True)  # nothing records the export: no provenance
    back = torch.load(export_native(folder, tmp_path / "back.pt"), weights_only=True)
    assert back["tokenizer_json"] == (folder / "tokenizer.json").read_text(encoding="utf-8")
    assert back["step"] == 0


def test_a_restored_post_processor_is_written_as_indented_utf8(hf_folder, tiny_ckpt, tmp_path):
    text = torch.load(export_native(hf_folder, tmp_path / "back.pt"), weights_only=True)["tokenizer_json"]
    lines = text.splitlines()
    assert lines[0] == "{" and lines[1].startswith('  "') and not lines[1].startswith("   ")
    assert "Ġ" in text and "\\u0120" not in text
    original = json.loads((tiny_ckpt.parent / "tokenizer.json").read_text())
    assert json.loads(text)["post_processor"] == original["post_processor"]


def test_an_output_over_the_folders_weights_is_refused_by_name(hf_folder, tmp_path):
    folder = _copy(hf_folder, tmp_path)
    shard = folder / "model.safetensors"
    with pytest.raises(MythosError) as caught:
        export_native(folder, shard, force=True)
    assert str(caught.value) == (
        f"output {shard} is the HF folder's file {shard} it reads: write the output to another path"
    )


def test_the_training_facts_and_a_step_of_zero_come_back(tiny_cfg, ref_tokenizer_path, tmp_path):
    from helpers import make_checkpoint

    (tmp_path / "tokenizer.json").write_bytes(ref_tokenizer_path.read_bytes())
    facts = {"tokens_seen": 4096, "val_loss": 2.5}
    ckpt = make_checkpoint(tmp_path / "ckpt.pt", tiny_cfg, step=0, with_optimizer=False, extra={"training": facts})
    folder = export_hf(ckpt, tmp_path / "hf", verify=False, card=False).folder
    back = torch.load(export_native(folder, tmp_path / "back.pt"), weights_only=True)
    assert back["step"] == 0 and back["training"] == facts


def test_a_file_that_appears_after_the_check_is_not_overwritten(hf_folder, tmp_path, monkeypatch):
    import mythos_convert.export.native as native

    monkeypatch.setattr(native, "check_output_file", lambda out, force: Path(out))  # the check passed, then...
    out = tmp_path / "back.pt"
    out.write_bytes(b"someone else's")
    with pytest.raises(MythosError):
        export_native(hf_folder, out)
    assert out.read_bytes() == b"someone else's"


def test_the_conversion_is_announced_with_its_size(hf_folder, tiny_cfg, tmp_path, monkeypatch):
    import mythos_convert.export.native as native

    said: list[str] = []
    monkeypatch.setattr(native, "info", said.append)
    out = tmp_path / "back.pt"
    export_native(hf_folder, out)
    assert said == [f"converting {hf_folder} ({tiny_cfg.num_parameters():,} parameters) to native {out}"]
