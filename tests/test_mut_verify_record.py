"""verify.json, the record push trusts (verify/record.py): which files a verify binds, when a recorded
file counts as changed, how a damaged record reads, and what a new result replaces."""

from __future__ import annotations

import hashlib
import json
import threading

import pytest

from mythos_convert.errors import MythosError
from mythos_convert.verify import record


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_which_names_push_publishes_only_as_verified():
    for name in (
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "model.safetensors.index.json",
        "model-00001-of-00002.safetensors",
        "m-Q4_K_M.gguf",
    ):
        assert record.needs_verify(name), name
    for name in ("README.md", "eval.json", "gguf-quality.png", "model.safetensors.bak", "m.gguf.part"):
        assert not record.needs_verify(name), name


def test_an_hf_verify_binds_shards_and_the_folder_files_that_decide_what_it_computes(tmp_path):
    for name in ("b.safetensors", "a.safetensors", "config.json", "tokenizer.json", "README.md", "x.gguf"):
        (tmp_path / name).write_text("{}")
    (tmp_path / "dir.safetensors").mkdir()  # a folder named like a shard is no shard
    (tmp_path / "generation_config.json").mkdir()  # nor is a folder named like a bound file
    assert record.hf_bound_files(str(tmp_path)) == ["a.safetensors", "b.safetensors", "config.json", "tokenizer.json"]
    everything = ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"]
    everything += ["special_tokens_map.json", "model.safetensors.index.json"]
    (tmp_path / "generation_config.json").rmdir()
    for name in everything[1:]:
        (tmp_path / name).write_text("{}")
    assert record.hf_bound_files(tmp_path) == sorted(["a.safetensors", "b.safetensors", *everything])


def test_hash_files_digests_each_named_file_once_by_its_relative_name(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.bin").write_bytes(b"alpha")
    (tmp_path / "sub" / "b.bin").write_bytes(b"beta!!")
    got = record.hash_files(str(tmp_path), ["sub/b.bin", "a.bin", "a.bin"], mapped=True)
    assert list(got) == ["a.bin", "sub/b.bin"]
    assert got == {"a.bin": {"sha256": _sha(b"alpha"), "size": 5}, "sub/b.bin": {"sha256": _sha(b"beta!!"), "size": 6}}


def test_hash_files_passes_on_its_stop_event(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"alpha")
    stop = threading.Event()
    stop.set()
    with pytest.raises(record.Cancelled):
        record.hash_files(tmp_path, ["a.bin"], stop)
    with pytest.raises(record.Cancelled):
        record.hash_files(tmp_path, ["a.bin"], stop, mapped=True)


def test_a_mapped_digest_of_an_empty_file_is_the_empty_digest(tmp_path):
    (tmp_path / "e.bin").write_bytes(b"")
    assert record.file_digest(tmp_path / "e.bin", mapped=True) == {"sha256": _sha(b""), "size": 0}


def _recorded(tmp_path, files: dict[str, bytes]) -> dict:
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return {name: {"sha256": _sha(data), "size": len(data)} for name, data in files.items()}


def test_changed_files_names_a_missing_resized_rewritten_or_malformed_entry(tmp_path):
    files = _recorded(tmp_path, {"same": b"12345", "edited": b"abcde", "grown": b"xy", "gone": b"q"})
    files["odd"] = "not a digest"
    (tmp_path / "edited").write_bytes(b"abcdE")  # same size, other bytes
    (tmp_path / "grown").write_bytes(b"xyz")
    (tmp_path / "gone").unlink()
    assert record.changed_files(str(tmp_path), files) == ["edited", "gone", "grown", "odd"]
    # only the names asked about, and only those recorded
    assert record.changed_files(tmp_path, files, names=["same", "edited", "never-recorded"]) == ["edited"]
    assert record.changed_files(tmp_path, files, names=[]) == []


def test_a_folder_in_place_of_a_recorded_file_is_changed(tmp_path):
    files = _recorded(tmp_path, {"a": b""})
    (tmp_path / "a").unlink()
    (tmp_path / "a").mkdir()
    assert record.changed_files(tmp_path, files) == ["a"]


def test_changed_files_trusts_known_digests_instead_of_hashing(tmp_path):
    files = _recorded(tmp_path, {"a": b"12345", "b": b"67890"})
    (tmp_path / "a").unlink()  # the known digest stands for it: not looked at
    known = {"a": {"sha256": _sha(b"12345"), "size": 5}, "b": {"sha256": _sha(b"other"), "size": 5}}
    assert record.changed_files(tmp_path, files, known=known) == ["b"]
    known = {"a": {"sha256": _sha(b"12345"), "size": 6}}  # the right hash, the wrong size
    assert record.changed_files(tmp_path, files, known=known) == ["a"]
    assert record.changed_files(tmp_path, files, known={}) == ["a"]  # an empty map: hash the folder


def test_a_known_digest_is_compared_with_both_recorded_fields(tmp_path):
    files = {"a": {"sha256": "h", "size": 1}}
    assert record.changed_files(tmp_path, files, known={"a": {"sha256": "h", "size": 1}}) == []
    assert record.changed_files(tmp_path, files, known={"a": {"sha256": "H", "size": 1}}) == ["a"]
    assert record.changed_files(tmp_path, {"a": {"size": 1}}, known={"a": {"sha256": "h", "size": 1}}) == ["a"]
    assert record.changed_files(tmp_path, {"a": {"sha256": "h"}}, known={"a": {"sha256": "h", "size": 1}}) == ["a"]


def test_a_recorded_digest_without_a_size_or_hash_is_changed(tmp_path):
    (tmp_path / "a").write_bytes(b"12")
    assert record.changed_files(tmp_path, {"a": {"sha256": _sha(b"12")}}) == ["a"]
    assert record.changed_files(tmp_path, {"a": {"size": 2}}) == ["a"]
    assert record.changed_files(tmp_path, {"a": {"sha256": _sha(b"12"), "size": 2}}) == []


def test_a_result_is_bound_only_when_it_records_files_that_all_match(tmp_path):
    files = _recorded(tmp_path, {"a": b"1", "b": b"2"})
    assert record.is_bound(str(tmp_path), {"files": files})
    assert not record.is_bound(tmp_path, {"files": {}})
    assert not record.is_bound(tmp_path, {"files": ["a", "b"]})
    assert not record.is_bound(tmp_path, {"passed": True})
    assert not record.is_bound(tmp_path, ["files"])
    assert not record.is_bound(tmp_path, None)
    (tmp_path / "b").write_bytes(b"3")
    assert not record.is_bound(tmp_path, {"files": files})


def test_load_results_reads_a_record_and_an_absent_one_as_empty(tmp_path):
    assert record.load_results(str(tmp_path)) == {}
    assert record.load_results(tmp_path, strict=True) == {}
    (tmp_path / "verify.json").mkdir()
    assert record.load_results(tmp_path, strict=True) == {}
    (tmp_path / "verify.json").rmdir()
    (tmp_path / "verify.json").write_text('{"version": 2, "results": {"hf": {"passed": true}}}')
    assert record.load_results(tmp_path, True) == {"hf": {"passed": True}}
    (tmp_path / "verify.json").write_text('{"version": 2}')
    assert record.load_results(tmp_path, strict=True) == {}


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ("{not json", "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
        ('["a list"]', "'list' object has no attribute 'get'"),
        ('{"results": [1, 2]}', "`results` is not a mapping"),
    ],
)
def test_a_damaged_record_is_empty_or_under_strict_an_error_naming_it(tmp_path, text, detail):
    path = tmp_path / "verify.json"
    path.write_text(text)
    assert record.load_results(tmp_path) == {}
    with pytest.raises(MythosError) as caught:
        record.load_results(tmp_path, strict=True)
    assert str(caught.value) == (
        f"{path} is corrupted ({detail}): delete it and re-run `mythos-convert verify` on the folder"
    )
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_a_record_that_is_not_utf8_is_damaged(tmp_path):
    (tmp_path / "verify.json").write_bytes(b'{"results": "\xff\xfe"}')
    assert record.load_results(tmp_path) == {}
    with pytest.raises(MythosError, match=r"is corrupted \('utf-8' codec can't decode byte 0xff"):
        record.load_results(tmp_path, strict=True)


def test_a_long_error_is_cut_to_its_first_line_and_120_characters(tmp_path, monkeypatch):
    (tmp_path / "verify.json").write_text("{}")

    def fail(text):
        raise ValueError("x" * 130 + "\nsecond line")

    monkeypatch.setattr(record.json, "loads", fail)
    with pytest.raises(MythosError) as caught:
        record.load_results(tmp_path, strict=True)
    assert f"is corrupted ({'x' * 120}): delete" in str(caught.value)


def test_an_error_without_a_message_is_named_by_its_type(tmp_path, monkeypatch):
    (tmp_path / "verify.json").write_text("{}")

    def fail(text):
        raise ValueError()

    monkeypatch.setattr(record.json, "loads", fail)
    with pytest.raises(MythosError, match=r"is corrupted \(ValueError\): delete"):
        record.load_results(tmp_path, strict=True)


def test_record_result_keeps_the_other_targets_and_stamps_a_new_entry(tmp_path):
    record.record_result(str(tmp_path), "hf", {"passed": True, "timestamp": "2026-01-02T03:04:05+00:00"})
    given = {"passed": False, "max_abs_diff": float("nan")}
    path = record.record_result(tmp_path, "m-F16.gguf", given)
    assert path == tmp_path / "verify.json"
    assert "timestamp" not in given  # the caller's dict is not changed
    text = path.read_text(encoding="utf-8")
    data = json.loads(text)
    assert data["version"] == 2
    assert list(data) == ["results", "version"]  # keys sorted
    assert data["results"]["hf"] == {"passed": True, "timestamp": "2026-01-02T03:04:05+00:00"}
    entry = data["results"]["m-F16.gguf"]
    assert entry["passed"] is False and entry["max_abs_diff"] == "NaN"
    stamp = entry["timestamp"]
    assert len(stamp) == 25 and stamp.endswith("+00:00") and stamp[10] == "T" and "." not in stamp
    record.record_result(tmp_path, "hf", {"passed": False, "timestamp": "t"})
    assert record.load_results(tmp_path)["hf"] == {"passed": False, "timestamp": "t"}


def test_a_damaged_record_is_replaced_by_the_new_result(tmp_path):
    (tmp_path / "verify.json").write_text("{broken")
    record.record_result(tmp_path, "hf", {"passed": True, "timestamp": "t"})
    assert json.loads((tmp_path / "verify.json").read_text()) == {
        "results": {"hf": {"passed": True, "timestamp": "t"}},
        "version": 2,
    }


class _SetAfter:
    """A stop event that is set after its first `n` looks."""

    def __init__(self, n: int):
        self.looks, self.n = 0, n

    def is_set(self) -> bool:
        self.looks += 1
        return self.looks > self.n


def test_a_read_digest_stops_between_chunks_and_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(record, "_CHUNK", 4)
    path = tmp_path / "a.bin"
    path.write_bytes(b"0123456789ab")  # three chunks
    with pytest.raises(record.Cancelled) as caught:
        record.file_digest(path, _SetAfter(1))
    assert str(caught.value) == str(path)
    assert record.file_digest(path, _SetAfter(3)) == {"sha256": _sha(b"0123456789ab"), "size": 12}


def test_a_mapped_digest_maps_read_only_windows_and_names_the_file_it_stops(tmp_path, monkeypatch):
    monkeypatch.setattr(record, "_WINDOW", 4096)  # mmap offsets are multiples of the page size
    data = bytes(range(256)) * 40  # 10240 bytes: two windows and a part
    path = tmp_path / "a.bin"
    path.write_bytes(data)
    with path.open("rb") as fh:  # read-only, as file_digest opens it: no fallback to reads here
        assert record._mapped_digest(fh, None) == {"sha256": _sha(data), "size": 10240}
    with path.open("rb") as fh, pytest.raises(record.Cancelled) as caught:
        record._mapped_digest(fh, _SetAfter(2))
    assert str(caught.value) == str(path)
    with pytest.raises(record.Cancelled) as caught:
        record.file_digest(path, _SetAfter(1), mapped=True)
    assert str(caught.value) == str(path)


def _spy_mmap(monkeypatch) -> list:
    calls: list = []
    real = record.mmap.mmap

    def spy(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(record.mmap, "mmap", spy)
    return calls


def test_only_a_mapped_digest_maps_the_file(tmp_path, monkeypatch):
    (tmp_path / "a.bin").write_bytes(b"alpha")
    calls = _spy_mmap(monkeypatch)
    assert record.file_digest(tmp_path / "a.bin") == {"sha256": _sha(b"alpha"), "size": 5}
    assert record.hash_files(tmp_path, ["a.bin"]) == {"a.bin": {"sha256": _sha(b"alpha"), "size": 5}}
    assert calls == []
    assert record.hash_files(tmp_path, ["a.bin"], mapped=True) == {"a.bin": {"sha256": _sha(b"alpha"), "size": 5}}
    assert len(calls) == 1
