"""A DCP folder's pickled index and byte entries are read without running code from them."""

from __future__ import annotations

import io
import os
import pickle
import warnings

import pytest
import torch
import torch.distributed.checkpoint as dcp

from mythos_convert.errors import MythosError
from mythos_convert.formats.dcp_safe import load_dcp, read_dcp_metadata


def _save(folder, state):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "assuming the intent is to save in a single process"
        dcp.save(state, checkpoint_id=str(folder), no_dist=True)


def _load(folder, state):
    load_dcp(folder, state)
    return state


def test_a_state_dict_round_trips_through_the_safe_reader(tmp_path):
    gen = torch.Generator().manual_seed(7)
    saved = {
        "w": torch.randn(3, 4, generator=gen),
        "b": torch.randn(5, generator=gen).to(torch.bfloat16),
        "h": torch.randn(2, generator=gen).to(torch.float16),
        "opt": {"step": 11, "rng": torch.get_rng_state(), "name": "adamw"},
    }
    _save(tmp_path, saved)
    loaded = _load(
        tmp_path,
        {
            "w": torch.zeros(3, 4),
            "b": torch.zeros(5, dtype=torch.bfloat16),
            "h": torch.zeros(2, dtype=torch.float16),
            "opt": {"step": 0, "rng": torch.zeros_like(torch.get_rng_state()), "name": ""},
        },
    )
    for key in ("w", "b", "h"):
        assert torch.equal(loaded[key], saved[key])
    assert loaded["opt"]["step"] == 11 and loaded["opt"]["name"] == "adamw"
    assert torch.equal(loaded["opt"]["rng"], saved["opt"]["rng"])
    index = read_dcp_metadata(tmp_path)
    assert set(index.state_dict_metadata) == {"w", "b", "h", "opt.step", "opt.rng", "opt.name"}


class _Boom:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_an_index_that_calls_a_function_is_refused_by_name(tmp_path, monkeypatch):
    _save(tmp_path, {"w": torch.zeros(2)})
    (tmp_path / ".metadata").write_bytes(pickle.dumps(_Boom()))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MythosError, match=r"posix\.system|os\.system"):
        read_dcp_metadata(tmp_path)
    assert not (tmp_path / "PWNED").exists()
    with pytest.raises(MythosError):
        _load(tmp_path, {"w": torch.zeros(2)})
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("bad_name", ["../secret.distcp", "/etc/passwd", "sub/__0_0.distcp", ".."])
def test_an_index_pointing_outside_the_folder_is_refused(tmp_path, bad_name):
    _save(tmp_path, {"w": torch.zeros(2)})
    index = read_dcp_metadata(tmp_path)
    for info in index.storage_data.values():
        info.relative_path = bad_name
    (tmp_path / ".metadata").write_bytes(pickle.dumps(index))
    with pytest.raises(MythosError, match="outside the checkpoint folder"):
        read_dcp_metadata(tmp_path)


def test_a_folder_without_an_index_and_a_truncated_index_are_named(tmp_path):
    with pytest.raises(MythosError, match=r"not a torch\.distributed\.checkpoint folder"):
        read_dcp_metadata(tmp_path)
    _save(tmp_path, {"w": torch.zeros(2)})
    data = (tmp_path / ".metadata").read_bytes()
    (tmp_path / ".metadata").write_bytes(data[: len(data) // 2])
    with pytest.raises(MythosError, match="not a readable DCP index"):
        read_dcp_metadata(tmp_path)


def test_a_byte_entry_holding_code_is_refused(tmp_path, monkeypatch):
    _save(tmp_path, {"opt": {"step": 3}})
    index = read_dcp_metadata(tmp_path)
    (info,) = index.storage_data.values()
    shard = tmp_path / info.relative_path
    hostile = io.BytesIO()
    torch.save(_Boom(), hostile)
    payload = hostile.getvalue()
    blob = bytearray(shard.read_bytes())
    blob[info.offset : info.offset + info.length] = b""
    blob[info.offset : info.offset] = payload
    shard.write_bytes(bytes(blob))
    info.length = len(payload)
    (tmp_path / ".metadata").write_bytes(pickle.dumps(index))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MythosError, match=r"not plain data|does not load"):
        _load(tmp_path, {"opt": {"step": 0}})
    assert not (tmp_path / "PWNED").exists()
