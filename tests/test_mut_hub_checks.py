"""push's checks, each broken on its own in a copy of a real verified export, with the exact words it gives.

The folder is a real `export_hf` with its card, and the record a passing verify leaves (its files'
hashes, as `verify.record` binds them); test_push.py pushes a fully verified export. Every test breaks
one thing in a copy and expects that one problem, worded as the user will read it, with the sizes and
names worked out here. The export is unverified so that a mutant's run (one fresh process each) takes
seconds, not the time of a transformers verify.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mythos_convert.api import export_hf
from mythos_convert.hub.checks import (
    check_card,
    check_config,
    check_folder,
    check_inputs,
    check_tokenizer,
    check_verify,
    check_weights,
)
from mythos_convert.verify.record import hash_files, hf_bound_files, record_result


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_ckpt) -> Path:
    folder = export_hf(tiny_ckpt, tmp_path_factory.mktemp("mutpush") / "out", verify=False).folder
    files = hash_files(folder, hf_bound_files(folder))
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= set(files)
    record_result(folder, "hf", {"passed": True, "max_abs_diff": 0.0, "files": files})
    return folder


@pytest.fixture(scope="module")
def sharded(tmp_path_factory, tiny_ckpt) -> Path:
    return export_hf(
        tiny_ckpt, tmp_path_factory.mktemp("mutshard") / "out", max_shard_size=200_000, verify=False, card=False
    ).folder


@pytest.fixture
def copy(exported: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(exported, tmp_path / "f"))


def _verified(folder: Path) -> dict:
    return json.loads((folder / "verify.json").read_text())["results"]


def test_the_export_passes_and_a_non_folder_is_named(exported: Path, tmp_path: Path):
    assert check_folder(exported) == []
    assert check_folder(tmp_path / "nowhere") == [f"{tmp_path / 'nowhere'} is not a folder"]


def test_config_missing_or_not_loading(copy: Path):
    (copy / "config.json").unlink()
    assert check_config(copy) == ["config.json is missing: export the folder with `mythos-convert hf`"]
    (copy / "config.json").write_text("{not json")
    [problem] = check_config(copy)
    assert problem.startswith("config.json does not load with transformers AutoConfig: ")
    assert len(problem) <= len("config.json does not load with transformers AutoConfig: ") + 200
    assert "\n" not in problem


def test_no_weights_and_a_truncated_file(copy: Path):
    weights = copy / "model.safetensors"
    data = weights.read_bytes()
    header_len = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + header_len])
    end = max(v["data_offsets"][1] for k, v in header.items() if k != "__metadata__")
    assert len(data) == 8 + header_len + end
    weights.write_bytes(data[:-1])
    assert check_weights(copy) == [
        f"weights file model.safetensors is truncated ({len(data) - 1} bytes, header needs {len(data)})"
    ]
    weights.write_bytes(data + b"\0")  # longer than the header needs: still readable
    assert check_weights(copy) == []
    weights.unlink()
    assert check_weights(copy) == ["no model weights: the folder has no *.safetensors file"]


def test_an_index_whose_tensors_and_sizes_do_not_add_up(sharded: Path, tmp_path: Path):
    folder = Path(shutil.copytree(sharded, tmp_path / "s"))
    index_path = folder / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    assert check_weights(folder) == []
    weight_map = index["weight_map"]
    shards = sorted(set(weight_map.values()))
    # one tensor said to be in the other shard than where it is
    moved = sorted(weight_map)[0]
    wrong = dict(weight_map, **{moved: next(s for s in shards if s != weight_map[moved])})
    index_path.write_text(json.dumps({**index, "weight_map": wrong}))
    assert check_weights(folder) == [f"model.safetensors.index.json lists 1 tensor(s) not in their shard, e.g. {moved}"]
    # two tensors stored but not indexed (the missing-entry check reports nothing then)
    dropped = sorted(weight_map)[:2]
    index_path.write_text(
        json.dumps({**index, "weight_map": {k: v for k, v in weight_map.items() if k not in dropped}})
    )
    assert check_weights(folder) == [f"2 stored tensor(s) are not in model.safetensors.index.json, e.g. {dropped[0]}"]
    # a total size one byte off
    total = index["metadata"]["total_size"]
    index_path.write_text(json.dumps({**index, "metadata": {"total_size": total + 1}}))
    assert check_weights(folder) == [
        f"model.safetensors.index.json declares total_size {total + 1} but the shards hold {total} bytes"
    ]
    index_path.write_text(json.dumps({**index, "metadata": {"total_size": str(total + 1)}}))
    assert check_weights(folder) == []  # not a number: nothing declared
    index_path.write_text(json.dumps({"weight_map": weight_map}))
    assert check_weights(folder) == []  # no metadata at all: nothing declared
    index_path.write_text(json.dumps(index))
    (folder / shards[0]).unlink()
    assert check_weights(folder) == [f"weights file {shards[0]} is missing"]


def test_tokenizer_missing_or_damaged_and_card_missing(copy: Path):
    (copy / "README.md").unlink()
    assert check_card(copy) == [f"README.md (the model card) is missing: run `mythos-convert card {copy}`"]
    assert check_tokenizer(copy) == []
    (copy / "tokenizer.json").write_text("{}")
    [problem] = check_tokenizer(copy)
    assert problem.startswith(f"tokenizer {copy / 'tokenizer.json'} ")
    assert problem.endswith(": re-export the folder with `mythos-convert hf`")
    (copy / "tokenizer.json").unlink()
    assert check_tokenizer(copy) == ["tokenizer.json is missing: export the folder with `mythos-convert hf`"]


def test_a_failed_verify_with_and_without_figures(copy: Path):
    record_result(copy, "hf", {"passed": False})
    assert check_verify(copy) == ["the last verify of hf failed: fix the export and rerun verify"]
    record_result(copy, "hf", {"passed": "yes", "max_abs_diff": 0.25, "tolerance": "max<=1e-05"})
    assert check_verify(copy) == [
        "the last verify of hf failed (max abs diff 0.25 vs tolerance max<=1e-05): fix the export and rerun verify"
    ]


def test_a_result_without_hashes_and_a_changed_file(copy: Path):
    entry = _verified(copy)["hf"]
    record_result(copy, "hf", {k: v for k, v in entry.items() if k != "files"})
    assert check_verify(copy) == [
        "the verify result of hf records no file hashes (verify.json from an older mythos-convert): "
        f"re-run verify, `mythos-convert verify {copy}`"
    ]
    record_result(copy, "hf", entry)
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "rms_norm_eps": 1e-3}))
    assert check_verify(copy) == [
        f"config.json changed since `verify` checked it (hf): re-run `mythos-convert verify {copy}`"
    ]
    # a push that uploads only the weights does not look at the config
    assert check_verify(copy, {"model.safetensors"}) == []


def test_uploaded_files_no_result_covers_are_listed_with_those_verified(copy: Path):
    (copy / "extra.safetensors").write_bytes(b"x")
    (copy / "m-Q4_K_M.gguf").write_bytes(b"g")
    (copy / "m-00002-of-00002.gguf").write_bytes(b"g")
    uploaded = {"model.safetensors", "config.json", "extra.safetensors", "notes.txt", "m-00002-of-00002.gguf"}
    assert check_verify(copy, uploaded) == [
        "1 file(s) were never verified: extra.safetensors (verified: config.json, model.safetensors): "
        f"run `mythos-convert verify {copy}` (or --exclude them)"
    ]
    assert check_verify(copy, uploaded | {"m-Q4_K_M.gguf"})[0] == (
        "m-Q4_K_M.gguf was never verified: run `mythos-convert verify` on it (or --exclude it)"
    )
    assert check_verify(copy, {"extra.safetensors"}) == [
        f"1 file(s) were never verified: extra.safetensors: run `mythos-convert verify {copy}` (or --exclude them)"
    ]
    (copy / "b.safetensors").write_bytes(b"y")
    assert check_verify(copy, {"extra.safetensors", "b.safetensors"}) == [
        "2 file(s) were never verified: b.safetensors, extra.safetensors: "
        f"run `mythos-convert verify {copy}` (or --exclude them)"
    ]


def test_a_gguf_result_counts_only_when_its_file_is_uploaded(copy: Path):
    record_result(copy, "m-F16.gguf", {"passed": False})
    assert check_verify(copy, {"model.safetensors"}) == []
    assert check_verify(copy, {"model.safetensors", "m-F16.gguf"}) == [
        "the last verify of m-F16.gguf failed: fix the export and rerun verify"
    ]
    assert check_verify(copy) == ["the last verify of m-F16.gguf failed: fix the export and rerun verify"]
    entry = _verified(copy)["hf"]
    record_result(copy, "m-F16.gguf", {**entry, "files": {}})
    assert check_verify(copy, {"m-F16.gguf"}) == [
        "the verify result of m-F16.gguf records no file hashes (verify.json from an older mythos-convert): "
        f"re-run verify, `mythos-convert verify {copy / 'm-F16.gguf'}`"
    ]


def test_a_refused_hf_result_does_not_list_its_files_again(copy: Path):
    record_result(copy, "hf", {"passed": False})
    assert check_verify(copy, {"model.safetensors", "config.json"}) == [
        "the last verify of hf failed: fix the export and rerun verify"
    ]


def test_damaged_or_missing_verify_json(copy: Path):
    (copy / "verify.json").write_text("[1, 2]")
    [problem] = check_verify(copy)
    assert problem.startswith(f"{copy / 'verify.json'} is corrupted (")  # not taken for a folder never verified
    (copy / "verify.json").unlink()
    assert check_verify(copy) == [
        "the folder was never verified (no verify.json): run `mythos-convert verify` on it first"
    ]


def test_the_inputs_a_check_reads_besides_the_upload(copy: Path):
    (copy / "a.gguf").write_bytes(b"g")
    (copy / "sub").mkdir()
    (copy / "sub" / "n.txt").write_text("n")
    (copy / ".hidden").write_text("h")
    uploaded = {"model.safetensors", "config.json"}
    everything = sorted(p.relative_to(copy).as_posix() for p in copy.rglob("*") if p.is_file())
    want = [n for n in everything if n not in uploaded and not n.endswith(".gguf") and not n.startswith(".")]
    assert check_inputs(copy, uploaded) == want
    assert "sub/n.txt" in want and "README.md" in want


@pytest.mark.parametrize(
    ("error", "shown"),
    [
        (OSError("no config here\nTraceback (most recent call last):"), "no config here"),
        (ValueError(""), "ValueError"),
        (ValueError("e" * 250), "e" * 200),
    ],
)
def test_what_transformers_says_is_one_line_and_it_is_asked_offline(copy: Path, monkeypatch, error, shown):
    import transformers

    calls = []

    def refuse(path, **kwargs):
        calls.append((path, kwargs))
        raise error

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", staticmethod(refuse))
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", staticmethod(refuse))
    assert check_config(copy) == [f"config.json does not load with transformers AutoConfig: {shown}"]
    assert check_tokenizer(copy) == [f"the tokenizer does not load with transformers AutoTokenizer: {shown}"]
    assert calls == [(str(copy), {"local_files_only": True})] * 2


def test_each_weights_file_is_named_and_a_file_without_tensors_is_whole(copy: Path):
    weights = copy / "model.safetensors"
    data = weights.read_bytes()
    (copy / "extra.safetensors").write_bytes(data[:-3])
    weights.write_bytes(data[:-1])
    assert check_weights(copy) == [
        f"weights file extra.safetensors is truncated ({len(data) - 3} bytes, header needs {len(data)})",
        f"weights file model.safetensors is truncated ({len(data) - 1} bytes, header needs {len(data)})",
    ]
    (copy / "extra.safetensors").unlink()
    header = json.dumps({"__metadata__": {"format": "pt"}}).encode()
    weights.write_bytes(len(header).to_bytes(8, "little") + header)  # no tensors: nothing past the header
    assert check_weights(copy) == []
    weights.write_bytes(b"\xff" * 8 + header)
    assert check_weights(copy) == [
        f"weights file {weights} is not a safetensors file (bad header size {2**64 - 1}): re-export the folder"
    ]


def test_a_damaged_index_and_a_truncated_shard_beside_a_misplaced_tensor(sharded: Path, tmp_path: Path):
    folder = Path(shutil.copytree(sharded, tmp_path / "s"))
    index_path = folder / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    weight_map = index["weight_map"]
    shards = sorted(set(weight_map.values()))
    moved = sorted(weight_map)[0]
    index_path.write_text(
        json.dumps({**index, "weight_map": {**weight_map, moved: next(s for s in shards if s != weight_map[moved])}})
    )
    shard = folder / shards[1]
    data = shard.read_bytes()
    shard.write_bytes(data[:-2])
    assert check_weights(folder) == [
        f"weights file {shards[1]} is truncated ({len(data) - 2} bytes, header needs {len(data)})",
        f"model.safetensors.index.json lists 1 tensor(s) not in their shard, e.g. {moved}",
    ]
    index_path.write_text("{}")
    assert check_weights(folder) == [
        f"{index_path} is not a valid safetensors index (no weight_map): re-export the folder"
    ]


def test_a_folder_target_counts_only_when_one_of_its_files_is_uploaded(copy: Path):
    record_result(copy, "mlx-4bit/", {"passed": False})
    assert check_verify(copy, {"model.safetensors"}) == []
    # its files are named by the refusal, not listed again as never verified
    assert check_verify(copy, {"model.safetensors", "mlx-4bit/model.safetensors"}) == [
        "the last verify of mlx-4bit/ failed: fix the export and rerun verify"
    ]


def test_check_folder_lists_every_checks_problems_for_the_upload_and_its_digests(copy: Path):
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "rms_norm_eps": 1e-3}))
    changed = f"changed since `verify` checked it (hf): re-run `mythos-convert verify {copy}`"
    assert check_folder(copy) == [f"config.json {changed}"]
    assert check_folder(copy, {"model.safetensors"}) == []  # the config is not uploaded
    # the push's own digest of its copy is what counts, not the folder's file
    size = (copy / "model.safetensors").stat().st_size
    digests = {"model.safetensors": {"size": size, "sha256": "0" * 64}}
    assert check_folder(copy, {"model.safetensors"}, digests) == [f"model.safetensors {changed}"]
    (copy / "config.json").unlink()
    record_result(copy, "hf", {"passed": False})
    assert check_folder(copy) == [
        "config.json is missing: export the folder with `mythos-convert hf`",
        "the last verify of hf failed: fix the export and rerun verify",
    ]


def test_every_target_is_judged_not_only_the_first_skipped_or_refused(copy: Path):
    entry = _verified(copy)["hf"]
    failed = "the last verify of {} failed: fix the export and rerun verify"
    record_result(copy, "a-F16.gguf", {"passed": False})  # sorts before hf; not uploaded below
    record_result(copy, "hf", {"passed": False})
    assert check_verify(copy, {"model.safetensors"}) == [failed.format("hf")]
    record_result(copy, "m-Q8_0.gguf", {"passed": False})
    assert check_verify(copy) == [failed.format("a-F16.gguf"), failed.format("hf"), failed.format("m-Q8_0.gguf")]
    record_result(copy, "hf", {"passed": True})
    assert check_verify(copy, {"model.safetensors", "m-Q8_0.gguf"}) == [
        "the verify result of hf records no file hashes (verify.json from an older mythos-convert): "
        f"re-run verify, `mythos-convert verify {copy}`",
        failed.format("m-Q8_0.gguf"),
    ]
    # two passing results: the files of both count as verified
    (copy / "mlx-4bit").mkdir()
    (copy / "mlx-4bit" / "w.safetensors").write_bytes(b"w")
    record_result(copy, "hf", entry)
    record_result(copy, "mlx-4bit/", {"passed": True, "files": hash_files(copy, ["mlx-4bit/w.safetensors"])})
    assert check_verify(copy, {"model.safetensors", "mlx-4bit/w.safetensors"}) == []


def test_files_changed_since_verify_are_named_together(copy: Path):
    (copy / "model.safetensors").write_bytes((copy / "model.safetensors").read_bytes() + b"\0")
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "rope_theta": 20000.0}))
    assert check_verify(copy) == [
        f"config.json, model.safetensors changed since `verify` checked it (hf): re-run `mythos-convert verify {copy}`"
    ]
