"""Where llama.cpp keeps weights (`mythos_convert.engines.llama_buffers`): AMX is never reached, llama.cpp's own
list of extra buffer types is left as it was, and every way the repacked load cannot be had is plain."""

from __future__ import annotations

import ctypes

import pytest

import mythos_convert.engines.llama_buffers as buffers

pytestmark = pytest.mark.llama_cpp


def fake_list(names: list[str]):
    """An `_extra_list` over a fresh NULL-terminated array each call, as a ggml that hands out copies would."""

    def extra_list():
        array = (ctypes.c_void_p * (len(names) + 1))(*range(1, len(names) + 1), None)
        return array, [(i + 1, name) for i, name in enumerate(names)]

    return extra_list


def test_the_repacked_load_leaves_amx_out_and_puts_llama_cpps_list_back():
    pytest.importorskip("llama_cpp")
    before = buffers.extra_buffer_names()
    if "CPU_REPACK" not in before:
        pytest.skip(f"this llama.cpp build has no CPU_REPACK buffer (it has {before})")
    with buffers.repacked_weights() as repacked:
        assert repacked is True
        during = buffers.extra_buffer_names()
        assert "AMX" not in during and "CPU_REPACK" in during
        assert during == [name for name in before if name != "AMX"]  # the rest in llama.cpp's order
    assert buffers.extra_buffer_names() == before
    with pytest.raises(RuntimeError), buffers.repacked_weights():  # put back on the way out of a failure too
        raise RuntimeError("a load that fails")
    assert buffers.extra_buffer_names() == before


def test_a_ggml_that_hands_out_copies_gets_a_plain_load(monkeypatch):
    """Rewriting a copy would not reach the load: it would still find AMX (and crash), so it is plain,
    and an engine asking beforehand is told so (it names itself by the answer)."""
    pytest.importorskip("llama_cpp")
    monkeypatch.setattr(buffers, "_extra_list", fake_list(["AMX", "CPU_REPACK"]))
    assert buffers.can_repack() is False
    with buffers.repacked_weights() as repacked:
        assert repacked is False
        import llama_cpp.llama_cpp as lib

        assert lib.llama_model_default_params().use_extra_bufts is False


@pytest.mark.parametrize("names", [[], ["AMX"], ["KLEIDIAI"]])
def test_without_cpu_repack_the_load_is_plain(monkeypatch, names):
    pytest.importorskip("llama_cpp")
    monkeypatch.setattr(buffers, "_extra_list", fake_list(names) if names else lambda: (None, []))
    with buffers.repacked_weights() as repacked:
        assert repacked is False
        import llama_cpp.llama_cpp as lib

        assert lib.llama_model_default_params().use_extra_bufts is False
    assert lib.llama_model_default_params().use_extra_bufts is True  # llama-cpp-python's own default again


def test_with_cpu_repack_and_no_amx_the_load_takes_the_extra_buffers(monkeypatch):
    """A CPU without AMX (an AVX2 EPYC): nothing to take out, the extra buffers are on for the load."""
    pytest.importorskip("llama_cpp")
    monkeypatch.setattr(buffers, "_extra_list", fake_list(["CPU_REPACK"]))
    assert buffers.can_repack() is True
    with buffers.repacked_weights() as repacked:
        assert repacked is True
        import llama_cpp.llama_cpp as lib

        assert lib.llama_model_default_params().use_extra_bufts is True
