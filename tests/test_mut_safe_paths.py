"""What `safe_paths` calls each kind of file it refuses, on the real files of this machine.

A block device is named like a character device: "a device file". Test machines without one skip.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from mythos_convert.errors import MythosError
from mythos_convert.support.safe_paths import entry_problem, require_file


def _a_block_device() -> Path | None:
    for path in sorted(Path("/dev").iterdir()):
        try:
            if stat.S_ISBLK(os.lstat(path).st_mode):
                return path
        except OSError:
            continue
    return None


@pytest.mark.skipif(_a_block_device() is None, reason="this machine has no block device in /dev")
def test_a_block_device_is_a_device_file():
    device = _a_block_device()
    assert entry_problem(device) == "a device file"
    with pytest.raises(MythosError) as caught:
        require_file(device, "checkpoint", "pass the ckpt.pt file")
    assert str(caught.value) == f"checkpoint {device} is a device file, not a regular file: pass the ckpt.pt file"


def test_a_missing_file_and_a_folder_are_named_with_the_fix(tmp_path):
    with pytest.raises(MythosError) as caught:
        require_file(tmp_path / "ckpt.pt", "checkpoint", "pass the ckpt.pt file")
    assert str(caught.value) == f"checkpoint {tmp_path / 'ckpt.pt'} does not exist: pass the ckpt.pt file"
    with pytest.raises(MythosError) as caught:
        require_file(tmp_path / "ckpt.pt" / "x", "tokenizer", "pass --tokenizer")  # a parent that is missing
    assert str(caught.value) == f"tokenizer {tmp_path / 'ckpt.pt' / 'x'} does not exist: pass --tokenizer"
    with pytest.raises(MythosError) as caught:
        require_file(tmp_path, "data", "pass a text file")
    assert str(caught.value) == f"data {tmp_path} is a folder, not a file: pass a text file"
    (tmp_path / "t.txt").write_text("x")
    assert require_file(str(tmp_path / "t.txt"), "data", "-") == tmp_path / "t.txt"
