"""The one safetensors writer writes what `save_file` writes and gives pages back safely."""

from __future__ import annotations

import torch
from safetensors.torch import save_file

from mythos_convert.formats.safetensors import write_safetensors
from mythos_convert.formats.tensor_bytes import PageReleaser


def test_bytes_identical_to_save_file(tmp_path):
    gen = torch.Generator().manual_seed(0)
    tensors = {  # native names; the file holds them under HF names, sorted
        "norm.weight": torch.randn(7, generator=gen),
        "layers.0.attention.wk.weight": torch.randn(5, 3, generator=gen),
        "embedding.weight": torch.randn(2, 9, generator=gen),
    }
    hf_names = {
        "norm.weight": "model.norm.weight",
        "layers.0.attention.wk.weight": "model.layers.0.self_attn.k_proj.weight",
        "embedding.weight": "model.embed_tokens.weight",
    }
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        cast = {hf_names[k]: v.to(dtype) for k, v in tensors.items()}
        save_file(cast, tmp_path / "ref.safetensors", metadata={"format": "pt"})
        (tmp_path / "ours").mkdir(exist_ok=True)
        files = write_safetensors(tmp_path / "ours", tensors, str(dtype).removeprefix("torch."))
        assert files == ["model.safetensors"]
        assert (tmp_path / "ours" / "model.safetensors").read_bytes() == (tmp_path / "ref.safetensors").read_bytes()


def test_release_keeps_mapped_values_and_ignores_anonymous_memory(tmp_path):
    big = torch.randn(3, 1 << 16)
    torch.save({"w": big}, tmp_path / "ckpt.pt")
    mapped = torch.load(tmp_path / "ckpt.pt", mmap=True, weights_only=True)["w"]
    releaser = PageReleaser(tmp_path / "ckpt.pt")
    assert releaser.ranges  # the checkpoint's mapping was found
    releaser.release(mapped)
    assert torch.equal(mapped, big)  # pages come back from the file
    anonymous = big.clone()
    releaser.release(anonymous)  # not in the file's mapping: must be left alone
    assert torch.equal(anonymous, big)
    assert PageReleaser(None).ranges == []
