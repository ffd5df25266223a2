"""eval.json's reader words a foreign file's error in one line, gguf-py's own message cut to 80 characters."""

from __future__ import annotations

import pytest

import mythos_convert.evaluate.record as record
from mythos_convert.errors import MythosError


def test_a_long_reader_error_is_quoted_to_80_characters(tmp_path, monkeypatch):
    text = "0123456789" * 9 + "TAIL"  # 94 characters

    def fail(path):
        raise ValueError(text)

    monkeypatch.setattr(record, "gguf_readers", fail)
    with pytest.raises(MythosError) as caught:
        record.read_gguf_header(tmp_path / "m.gguf")
    assert str(caught.value) == (
        f"{tmp_path / 'm.gguf'} is not a GGUF model file mythos-convert can read (ValueError: "
        + "0123456789" * 8
        + "): pass a .gguf file written by `mythos-convert gguf`"
    )
