"""verify's hashing on a thread (verify/digests.py, record.file_digest) and its thread count (verify/cores.py)."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import pytest

from mythos_convert.verify import record
from mythos_convert.verify.cores import OtherLoad, free_threads
from mythos_convert.verify.digests import Digests, recorded_source


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("size", [0, 1, 4095, 4096, 4097, 3 * 4096 + 17])
def test_file_digest_over_mapped_windows_is_the_files_sha256(tmp_path, monkeypatch, size):
    monkeypatch.setattr(record, "_WINDOW", 4096)  # several windows, and a tail, on a small file
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    for mapped in (True, False):
        assert record.file_digest(path, mapped=mapped) == {"sha256": _sha(data), "size": size}


def test_a_set_stop_event_cancels_a_digest(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 100)
    stop = threading.Event()
    stop.set()
    for mapped in (True, False):
        with pytest.raises(record.Cancelled):
            record.file_digest(path, stop, mapped=mapped)


def test_digests_hash_the_bound_files_then_the_source(tmp_path):
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"weights")
    (folder / "README.md").write_text("not bound")
    ckpt = tmp_path / "ckpt.pt"
    ckpt.write_bytes(b"checkpoint")
    with Digests(folder, source=ckpt) as digests:
        digests.wait()
        assert digests.files() == {
            "config.json": {"sha256": _sha(b"{}"), "size": 2},
            "model.safetensors": {"sha256": _sha(b"weights"), "size": 7},
        }
        assert digests.source(ckpt) == {"name": "ckpt.pt", "sha256": _sha(b"checkpoint"), "size": 10}
        assert digests.source(tmp_path / "missing.pt") is None


def test_the_recorded_source_is_read_from_the_local_paths_file(tmp_path):
    folder = tmp_path / "hf"
    folder.mkdir()
    assert recorded_source(folder) is None
    (folder / ".mythos-local.json").write_text(json.dumps({"source_checkpoint_path": "/x/ckpt.pt"}))
    assert recorded_source(folder) == Path("/x/ckpt.pt")
    (folder / ".mythos-local.json").write_text("not json")
    assert recorded_source(folder) is None


@pytest.mark.parametrize(
    ("wanted", "others", "cpus", "threads"),
    [
        (2, 0.0, 2, 2),
        (2, 0.2, 2, 2),
        (2, 0.3, 2, 1),
        (2, 1.9, 2, 1),
        (2, 5.0, 2, 1),
        (16, 3.0, 16, 13),
        (4, None, 2, 4),
    ],
)
def test_torch_gets_the_cores_others_left_free(wanted, others, cpus, threads):
    assert free_threads(wanted, others, cpus) == threads


def test_other_load_is_a_number_of_cores_where_proc_stat_exists():
    cores = OtherLoad().cores()  # waits out its minimum window
    if Path("/proc/stat").is_file():
        assert cores is not None and cores >= 0.0
    else:
        assert cores is None
