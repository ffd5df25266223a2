"""The torch-free path of `hf --no-verify` (zip reader + byte copy) writes what the torch path writes.

Each case exports the same checkpoint twice, once by copying bytes and once through torch (the
copy path switched off), and compares every file byte for byte; errors must be the same too.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import make_checkpoint, tiny_config, write_config_yaml

from mythos_convert.api import export_hf
from mythos_convert.errors import MythosError
from mythos_convert.export import hf as hf_module
from mythos_convert.formats import tensor_bytes
from mythos_convert.formats.tensor_bytes import finite
from mythos_convert.formats.torch_zip import NotPlain, TensorRef, read_torch_zip


@pytest.fixture
def copies(monkeypatch):
    """Counts the exports that took the byte-copy path."""
    calls = []
    real = hf_module.write_safetensors

    def counting(folder, weights, *args, **kwargs):
        if all(isinstance(t, TensorRef) for t in weights.values()):  # every payload a byte copy
            calls.append(weights)
        return real(folder, weights, *args, **kwargs)

    monkeypatch.setattr(hf_module, "write_safetensors", counting)
    return calls


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _both_ways(ckpt: Path, tmp_path: Path, monkeypatch, copies, **kwargs) -> tuple[dict, dict]:
    """Files of the export by copying (asserted to copy) and by torch (copy path switched off)."""
    export_hf(ckpt, tmp_path / "copied", verify=False, **kwargs)
    assert len(copies) == 1, "the byte-copy path was not taken"
    with monkeypatch.context() as patch:
        patch.setattr(hf_module, "_copyable_source", lambda *a: None)
        export_hf(ckpt, tmp_path / "torch", verify=False, **kwargs)
    assert len(copies) == 1
    return _files(tmp_path / "copied"), _files(tmp_path / "torch")


def _ckpt(tmp_path: Path, ref_tokenizer_path: Path, **kwargs) -> Path:
    path = make_checkpoint(tmp_path / "src" / "ckpt.pt", kwargs.pop("config", tiny_config()), **kwargs)
    (path.parent / "tokenizer.json").write_bytes(ref_tokenizer_path.read_bytes())
    return path


def _rewrite(path: Path, change) -> Path:
    data = torch.load(path, weights_only=True)
    change(data)
    torch.save(data, path)
    return path


def _to(state: dict, dtype: torch.dtype) -> dict:
    """`state` cast to `dtype` the way `model.to(dtype).state_dict()` is: shared tensors stay shared."""
    cast: dict[int, torch.Tensor] = {}
    return {k: cast.setdefault(v.data_ptr(), v.nan_to_num().to(dtype)) for k, v in state.items()}


def test_reader_describes_exactly_what_torch_loads(tiny_ckpt):
    lazy = read_torch_zip(tiny_ckpt)
    real = torch.load(tiny_ckpt, weights_only=True)
    raw = tiny_ckpt.read_bytes()
    assert lazy["step"] == real["step"] and lazy["config"] == real["config"]
    assert list(lazy["model"]) == list(real["model"])
    for name, tensor in real["model"].items():
        ref = lazy["model"][name]
        assert isinstance(ref, TensorRef)
        assert ref.shape == tuple(tensor.shape) and ref.stride == tensor.stride()
        assert ref.dtype == str(tensor.dtype).removeprefix("torch.") and ref.is_contiguous()
        start, size = ref.file_range()
        assert raw[start : start + size] == tensor.contiguous().numpy().tobytes()
    assert lazy["model"]["output.weight"] == lazy["model"]["embedding.weight"]  # the tie survives
    state = lazy["optimizer"]["state"]
    assert all(isinstance(s["exp_avg"], TensorRef) for s in state.values())


@pytest.mark.parametrize(
    "variant",
    ["reference", "compiled-prefix", "ddp-prefix", "yaml-config", "sharded", "bfloat16", "float16", "embedded-tok"],
)
def test_copy_path_writes_the_same_bytes(variant, tmp_path, ref_tokenizer_path, monkeypatch, copies):
    kwargs: dict = {}
    make: dict = {}
    if variant == "compiled-prefix":
        make["prefix"] = "_orig_mod."
    if variant == "ddp-prefix":
        make["prefix"] = "module."
    if variant == "yaml-config":
        make["embed_config"] = False
        kwargs["config_yaml"] = write_config_yaml(tmp_path / "model.yaml", tiny_config())
    if variant == "sharded":
        kwargs["max_shard_size"] = 60_000
    ckpt = _ckpt(tmp_path, ref_tokenizer_path, **make)
    if variant in ("bfloat16", "float16"):  # a checkpoint saved in half precision: exported as stored
        _rewrite(ckpt, lambda d: d.update(model=_to(d["model"], getattr(torch, variant))))
    if variant == "embedded-tok":
        (ckpt.parent / "tokenizer.json").unlink()
        text = ref_tokenizer_path.read_text()
        _rewrite(ckpt, lambda d: d.update(tokenizer_json=text, training={"tokens_seen": 1234, "val_loss": 3.5}))
    copied, by_torch = _both_ways(ckpt, tmp_path, monkeypatch, copies, **kwargs)
    assert copied == by_torch
    if variant == "sharded":
        assert "model.safetensors.index.json" in copied and len([n for n in copied if "-of-" in n]) > 2
    if variant in ("bfloat16", "float16"):
        assert json.loads(copied["config.json"])["dtype"] == variant


def test_without_copy_file_range_the_bytes_are_the_same(tmp_path, ref_tokenizer_path, monkeypatch, copies):
    """File systems that refuse copy_file_range (EXDEV, EOPNOTSUPP) get the read/write fallback."""

    def refuse(*args):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    ckpt = _ckpt(tmp_path, ref_tokenizer_path)
    monkeypatch.setattr(os, "copy_file_range", refuse)
    copied, by_torch = _both_ways(ckpt, tmp_path, monkeypatch, copies, max_shard_size=60_000)
    assert copied == by_torch


def test_casts_untied_heads_and_odd_files_take_the_torch_path(tmp_path, ref_tokenizer_path, monkeypatch, copies):
    ckpt = _ckpt(tmp_path, ref_tokenizer_path)
    export_hf(ckpt, tmp_path / "cast", dtype="bfloat16", verify=False)  # a cast: torch does it
    assert not copies
    separate = _rewrite(ckpt, lambda d: d["model"].update({"output.weight": d["model"]["embedding.weight"].clone()}))
    export_hf(separate, tmp_path / "separate", verify=False)  # equal copy: torch compares it
    assert not copies
    with pytest.raises(NotPlain):  # a global outside the allow-list is never resolved
        read_torch_zip(_rewrite(ckpt, lambda d: d.update(extra=Path("x"))))
    with pytest.raises(NotPlain):
        read_torch_zip(tmp_path / "cast" / "config.json")  # not a zip at all


def test_errors_are_those_of_the_torch_path(tmp_path, ref_tokenizer_path, monkeypatch, copies):
    def message(ckpt: Path, **kwargs) -> str:
        with pytest.raises(MythosError) as caught:
            export_hf(ckpt, tmp_path / "out", verify=False, **kwargs)
        assert not (tmp_path / "out").exists()
        return str(caught.value)

    def both(ckpt: Path, **kwargs) -> str:
        copied = message(ckpt, **kwargs)
        with monkeypatch.context() as patch:
            patch.setattr(hf_module, "_copyable_source", lambda *a: None)
            assert message(ckpt, **kwargs) == copied
        return copied

    ckpt = _ckpt(tmp_path, ref_tokenizer_path)
    _rewrite(ckpt, lambda d: d["model"]["layers.1.attention.wv.weight"].__setitem__((3, 5), float("nan")))
    assert "layers.1.attention.wv.weight holds NaN" in both(ckpt)
    assert len(copies) == 1  # the copy path found it
    half = _rewrite(
        ckpt,
        lambda d: d.update(model=_to(d["model"], torch.bfloat16)),
    )
    _rewrite(half, lambda d: d["model"]["norm.weight"].__setitem__(7, float("-inf")))
    assert "norm.weight holds NaN or Inf" in both(half)
    assert len(copies) == 2
    data = ckpt.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    assert "truncated" in both(tmp_path / "cut.pt")
    hostile = _ckpt(tmp_path / "a", ref_tokenizer_path, extra={"where": Path("x")})  # a global torch refuses
    assert "Python objects" in both(hostile)
    no_config = _ckpt(tmp_path / "b", ref_tokenizer_path, embed_config=False)
    assert "--config" in both(no_config)
    small = _ckpt(tmp_path / "c", ref_tokenizer_path, config=tiny_config(vocab_size=300))
    assert "512 tokens" in both(small)
    wrong = _ckpt(tmp_path / "d", ref_tokenizer_path)
    _rewrite(wrong, lambda d: d["model"].__setitem__("layers.0.attention.wk.weight", torch.zeros(16, 64)))
    assert "has shape (16, 64)" in both(wrong)


def test_allow_nonfinite_copies_the_values(tmp_path, ref_tokenizer_path, monkeypatch, copies):
    ckpt = _ckpt(tmp_path, ref_tokenizer_path)
    _rewrite(ckpt, lambda d: d["model"]["embedding.weight"].__setitem__((0, 0), float("inf")))
    copied, by_torch = _both_ways(ckpt, tmp_path, monkeypatch, copies, allow_nonfinite=True)
    assert copied == by_torch


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_finite_check_agrees_with_torch(dtype, monkeypatch):
    monkeypatch.setattr(tensor_bytes, "_CHUNK", 256)  # several chunks, bad values at their edges
    gen = torch.Generator().manual_seed(0)
    base = (torch.randn(1000, generator=gen) * 100).to(dtype)
    name = str(dtype).removeprefix("torch.")
    for bad in (float("nan"), float("inf"), float("-inf"), 1e30):
        for where in (0, 63, 64, 127, 128, 999):
            values = base.clone()
            values[where] = bad  # 1e30 overflows half precision to Inf, stays finite in float32
            raw = memoryview(values.view(torch.uint8).numpy().tobytes())
            assert finite(raw, name) == bool(torch.isfinite(values).all())
    assert finite(memoryview(base.view(torch.uint8).numpy().tobytes()), name)
    assert finite(memoryview(b""), name)


def test_hf_no_verify_never_imports_torch(tiny_ckpt, tmp_path):
    """The copy path's point: `hf --no-verify` of a float32 checkpoint starts no torch (about 2 s)."""
    code = (
        "import sys\n"
        "from mythos_convert.cli import app\n"
        f"sys.argv = ['mythos-convert', 'hf', {str(tiny_ckpt)!r}, {str(tmp_path / 'out')!r}, '--no-verify', '-q']\n"
        "try:\n    app()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip().splitlines()[-1] == "[]"
    assert (tmp_path / "out" / "model.safetensors").is_file()


@pytest.mark.parametrize(
    ("dtype", "bad", "tensor"),
    [
        (torch.float16, float("inf"), "layers.0.feed_forward.w2.weight"),
        (torch.bfloat16, float("inf"), "embedding.weight"),
        (torch.float16, float("nan"), "layers.1.ffn_norm.weight"),
    ],
)
def test_a_16_bit_checkpoint_holding_inf_or_nan_is_refused_on_the_copy_path(
    tmp_path, ref_tokenizer_path, copies, dtype, bad, tensor
):
    """Stored in 16 bits and exported in them: no cast, the bytes are copied, and each is checked first."""
    ckpt = _ckpt(tmp_path, ref_tokenizer_path)
    _rewrite(ckpt, lambda d: d.update(model=_to(d["model"], dtype)))
    _rewrite(ckpt, lambda d: d["model"][tensor].view(-1).__setitem__(37, bad))
    with pytest.raises(MythosError, match=f"{tensor} holds NaN or Inf"):
        export_hf(ckpt, tmp_path / "out", verify=False)
    assert len(copies) == 1 and not (tmp_path / "out").exists()
