"""verify's hashing on a thread (verify/digests.py, record.file_digest) and its thread count (verify/cores.py)."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

import pytest

from mythos_convert.verify import cores as cores_module
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


def test_without_a_cpu_count_torch_gets_the_cores_of_its_affinity(monkeypatch):
    monkeypatch.setattr(cores_module.os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    monkeypatch.setattr(cores_module.os, "cpu_count", lambda: 64)
    assert free_threads(8, 0.0) == 3 and free_threads(8, 1.0) == 2
    monkeypatch.delattr(cores_module.os, "sched_getaffinity")
    assert free_threads(80, 0.0) == 64
    monkeypatch.setattr(cores_module.os, "cpu_count", lambda: None)  # unknown: one core
    assert free_threads(4, 0.0) == 1


def test_busy_time_is_every_busy_column_of_proc_stat(tmp_path, monkeypatch):
    stat = tmp_path / "stat"
    monkeypatch.setattr(cores_module, "PROC_STAT", stat)
    # user nice system idle iowait irq softirq steal guest guest_nice
    stat.write_text("cpu  100 20 30 400 50 6 7 8 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n")
    assert cores_module._machine_busy_s() == pytest.approx((100 + 20 + 30 + 6 + 7 + 8) / os.sysconf("SC_CLK_TCK"))
    for text in ("cpu  1 2 3 4 5 6 7\n", "intr 1 2 3 4 5 6 7 8 9\n", ""):
        stat.write_text(text)
        assert cores_module._machine_busy_s() is None, text
    stat.unlink()
    assert cores_module._machine_busy_s() is None


class Clock:
    """perf_counter and sleep for OtherLoad: time moves only when told, or when slept."""

    def __init__(self) -> None:
        self.now, self.slept = 100.0, []

    def perf_counter(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.mark.parametrize(
    ("elapsed", "busy", "own", "slept", "cores"),
    [
        (1.0, 1.5, 0.5, [], 1.0),  # others used 1.5 - 0.5 core-seconds in 1 s
        (2.0, 1.0, 0.0, [], 0.5),
        (0.1, 0.6, 0.0, [0.2], 2.0),  # a short window is waited out to 0.3 s
        (1.0, 0.1, 0.5, [], 0.0),  # our own time counted twice by rounding: never below 0
    ],
)
def test_other_load_is_the_busy_time_not_ours_per_second(monkeypatch, elapsed, busy, own, slept, cores):
    clock, readings = Clock(), {"busy": [10.0, 10.0 + busy], "own": [2.0, 2.0 + own]}
    monkeypatch.setattr(cores_module, "time", clock)
    monkeypatch.setattr(cores_module, "_machine_busy_s", lambda: readings["busy"].pop(0))
    monkeypatch.setattr(cores_module, "_own_cpu_s", lambda: readings["own"].pop(0))
    load = OtherLoad()
    clock.now += elapsed
    assert load.cores() == pytest.approx(cores)
    assert clock.slept == pytest.approx(slept)


@pytest.mark.parametrize("readings", [[None, 5.0], [5.0, None]])
def test_other_load_is_unknown_without_proc_stat(monkeypatch, readings):
    clock = Clock()
    monkeypatch.setattr(cores_module, "time", clock)
    monkeypatch.setattr(cores_module, "_machine_busy_s", lambda: readings.pop(0))
    load = OtherLoad()
    clock.now += 1.0
    assert load.cores() is None


def test_nine_fields_are_enough_and_own_time_is_user_plus_system(tmp_path, monkeypatch):
    stat = tmp_path / "stat"
    stat.write_text("cpu  1 2 3 4 5 6 7 8\n")  # older kernels: no guest columns
    monkeypatch.setattr(cores_module, "PROC_STAT", stat)
    assert cores_module._machine_busy_s() == pytest.approx((1 + 2 + 3 + 6 + 7 + 8) / os.sysconf("SC_CLK_TCK"))
    usage = type("Usage", (), {"ru_utime": 1.5, "ru_stime": 0.25})
    monkeypatch.setattr(cores_module.resource, "getrusage", lambda who: usage)
    assert cores_module._own_cpu_s() == 1.75


def test_own_cpu_time_grows_with_work():
    before = cores_module._own_cpu_s()
    sum(i * i for i in range(300_000))
    assert cores_module._own_cpu_s() > before


@pytest.fixture
def spied(tmp_path, monkeypatch):
    """A folder, a checkpoint, and the hashing calls Digests makes, in order, with their thread and arguments."""
    from mythos_convert.verify import digests as digests_module

    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    ckpt = tmp_path / "ckpt.pt"
    ckpt.write_bytes(b"checkpoint")
    calls: list[tuple] = []

    def hash_files(folder, names, stop, mapped=False):
        calls.append(("files start", threading.current_thread().name, stop, mapped))
        stop.wait(0.2)  # long enough for a second thread, were there one, to start the source meanwhile
        calls.append(("files end",))
        return {}

    def file_digest(path, stop=None, mapped=False):
        calls.append(("source", threading.current_thread().name, stop, mapped, path))
        return {"sha256": "x", "size": 1}

    monkeypatch.setattr(digests_module, "hash_files", hash_files)
    monkeypatch.setattr(digests_module, "file_digest", file_digest)
    return folder, ckpt, calls


def test_digests_run_in_order_on_one_named_thread_with_the_stop_event_and_mapped(spied):
    folder, ckpt, calls = spied
    with Digests(folder, source=ckpt) as digests:
        digests.wait()
    assert [c[0] for c in calls] == ["files start", "files end", "source"]
    (_, files_thread, files_stop, files_mapped), (_, source_thread, source_stop, source_mapped, path) = (
        calls[0],
        calls[2],
    )
    assert files_thread.startswith("verify-digest") and source_thread == files_thread
    assert isinstance(files_stop, threading.Event) and source_stop is files_stop and files_stop.is_set()
    assert files_mapped is True and source_mapped is True and path == ckpt.resolve()


def test_the_recorded_source_is_hashed_without_being_asked(spied):
    folder, ckpt, calls = spied
    (folder / ".mythos-local.json").write_text(json.dumps({"source_checkpoint_path": str(ckpt)}))
    with Digests(folder) as digests:
        digests.wait()
        assert [c[4] for c in calls if c[0] == "source"] == [ckpt.resolve()]
        digests.add_source(ckpt)  # once per path
        digests.add_source(None)
        digests.add_source(folder / "missing.pt")  # a missing file gets no digest
        digests.wait()
        assert [c[4] for c in calls if c[0] == "source"] == [ckpt.resolve()]


def test_a_source_asked_for_later_is_hashed_then(spied):
    folder, ckpt, calls = spied
    with Digests(folder) as digests:
        assert digests.source(ckpt) == {"name": "ckpt.pt", "sha256": "x", "size": 1}
    assert [c[0] for c in calls] == ["files start", "files end", "source"]


def test_closing_stops_the_running_hash_and_drops_the_queued_one(spied):
    folder, ckpt, calls = spied
    digests = Digests(folder, source=ckpt)
    while not calls:  # the folder's hash has started (and waits on the stop event)
        threading.Event().wait(0.01)
    digests.close()
    assert [c[0] for c in calls] == ["files start", "files end"]  # finished before close returned; no source


@pytest.mark.parametrize("text", ["[1]", '{"source_checkpoint_path": null}', '{"source_checkpoint_path": ""}', "{}"])
def test_a_local_paths_file_without_a_usable_path_records_no_source(tmp_path, text):
    (tmp_path / ".mythos-local.json").write_text(text)
    assert recorded_source(tmp_path) is None
