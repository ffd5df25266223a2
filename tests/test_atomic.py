"""Outputs appear whole or not at all, and with the modes a plain write would give them."""

import os
import stat

import pytest

from mythos_convert.api import export_hf
from mythos_convert.errors import MythosError
from mythos_convert.support.atomic import atomic_dir, atomic_file


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask_022():
    before = os.umask(0o022)
    yield
    os.umask(before)


def test_atomic_file_and_dir_get_normal_modes(tmp_path, umask_022):
    with atomic_file(tmp_path / "a.txt") as tmp:
        tmp.write_text("x")
    with atomic_dir(tmp_path / "d") as tmp:
        (tmp / "f").write_text("y")
    assert _mode(tmp_path / "a.txt") == 0o644 and _mode(tmp_path / "d") == 0o755


def test_failed_block_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "out") as tmp:
        (tmp / "half").write_text("written")
        raise RuntimeError("crash mid-write")
    assert list(tmp_path.iterdir()) == []


def test_non_empty_output_needs_force(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep").write_text("old")
    with pytest.raises(MythosError, match="--force"), atomic_dir(tmp_path / "out"):
        pass
    assert (tmp_path / "out" / "keep").read_text() == "old"


def test_every_exported_file_is_readable_by_others(tiny_ckpt, tmp_path, umask_022):
    out = export_hf(tiny_ckpt, tmp_path / "out").folder
    assert _mode(out) == 0o755
    for path in out.iterdir():
        assert _mode(path) == 0o644, path.name
