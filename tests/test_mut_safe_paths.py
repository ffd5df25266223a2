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
