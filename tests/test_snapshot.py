"""push's private copy (mythos_convert/hub/snapshot.py) on real files: what it holds, what it refuses, what it leaves."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from mythos_convert.errors import MythosError, UnsafePathError
from mythos_convert.hub import snapshot
from mythos_convert.hub.snapshot import take_snapshot


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "config.json").write_text('{"a": 1}\n')
    (out / "model.safetensors").write_bytes(os.urandom(300_000))
    (out / "sub" / "notes.txt").write_text("notes\n")
    return out


NAMES = ["config.json", "model.safetensors", "sub/notes.txt"]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}."))


def test_the_copy_holds_the_bytes_hashed_private_and_read_only_and_goes_away(folder: Path):
    with take_snapshot(folder, NAMES) as snap:
        assert snap.root.parent == folder.parent and stat.S_IMODE(snap.root.stat().st_mode) == 0o700
        for rel in NAMES:
            data = (folder / rel).read_bytes()
            assert snap.path(rel).read_bytes() == data
            assert snap.digests[rel] == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
            assert stat.S_IMODE(snap.path(rel).stat().st_mode) == 0o400
        assert snap.changed_in_source(NAMES) == []
        root = snap.root
    assert not root.exists() and leftovers(folder) == []


def test_the_current_folder_gets_its_copy_beside_it_too(folder: Path, monkeypatch):
    monkeypatch.chdir(folder)
    with take_snapshot(Path("."), ["config.json"]) as snap:
        assert snap.root.parent == folder.parent and snap.root.name.startswith(".out.push-")
        assert snap.path("config.json").read_bytes() == (folder / "config.json").read_bytes()
    assert leftovers(folder) == []


def test_changed_in_source_sees_content_not_timestamps(folder: Path):
    with take_snapshot(folder, NAMES) as snap:
        os.utime(folder / "config.json", ns=(1, 1))  # a touch: same bytes
        (folder / "sub" / "notes.txt").write_text("notes\n")  # rewritten with the same bytes
        assert snap.changed_in_source(NAMES) == []
        with (folder / "model.safetensors").open("r+b") as fh:
            fh.write(b"\0")
        (folder / "sub" / "notes.txt").unlink()
        (folder / "sub" / "notes.txt").symlink_to(snap.path("sub/notes.txt"))  # a link to the very bytes
        assert snap.changed_in_source(NAMES) == ["model.safetensors", "sub/notes.txt"]


def test_a_link_or_a_missing_file_is_refused_and_nothing_is_left(folder: Path, tmp_path: Path):
    (tmp_path / "token").write_text("hf_" + "A" * 34)
    (folder / "config.json").unlink()
    (folder / "config.json").symlink_to(tmp_path / "token")
    with pytest.raises(UnsafePathError, match=r"config\.json in .* became a link"), take_snapshot(folder, NAMES):
        pass
    (folder / "sub").rename(tmp_path / "elsewhere")
    (folder / "sub").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UnsafePathError, match=r"sub/notes\.txt in .* became a link"):
        with take_snapshot(folder, ["sub/notes.txt"]):
            pass
    with pytest.raises(MythosError, match=r"gone\.bin disappeared from .*: rerun push"):
        with take_snapshot(folder, ["model.safetensors", "gone.bin"]):
            pass
    assert leftovers(folder) == []


def test_too_little_disk_for_the_copy_is_one_line_before_copying(folder: Path, monkeypatch):
    monkeypatch.setattr(snapshot, "_reflink", lambda src, dst: False)  # as on a filesystem without reflink
    real = snapshot.shutil.disk_usage
    monkeypatch.setattr(snapshot.shutil, "disk_usage", lambda path: real(path)._replace(free=1000))
    with pytest.raises(MythosError) as err, take_snapshot(folder, NAMES):
        pass
    message = str(err.value)
    assert "not enough free space for push's private copy" in message and "\n" not in message
    assert "--exclude" in message and str(folder) in message
    assert leftovers(folder) == []
