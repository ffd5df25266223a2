"""verify.localise names where an HF export first diverges from the native model. Two stand-in models
of two blocks each, shaped as the native model and transformers' Llama are (the same sub-layer
names), with one sub-layer of the HF side changed at a time."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mythos_convert.verify.localise import localise


class _Add(nn.Module):
    """x + bias, a sub-layer whose output is known exactly."""

    def __init__(self, bias: float, width: int = 3, tuple_out: bool = False):
        super().__init__()
        self.bias = torch.full((width,), bias)
        self.tuple_out = tuple_out

    def forward(self, x):
        out = x + self.bias
        return (out, None) if self.tuple_out else out


class _NativeBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn_norm, self.attention = _Add(0.0), _Add(1.0)
        self.ffn_norm, self.feed_forward = _Add(0.0), _Add(2.0)

    def forward(self, x):
        x = self.attention(self.attn_norm(x))
        return self.feed_forward(self.ffn_norm(x))


class _Native(nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(8, 3)
        nn.init.constant_(self.embedding.weight, 1.0)
        self.layers = nn.ModuleList([_NativeBlock(), _NativeBlock()])
        self.norm = _Add(0.0)

    def forward(self, batch):
        x = self.embedding(batch)
        for layer in self.layers:
            x = layer(x)
        return self.norm(x)


class _HFBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.input_layernorm, self.self_attn = _Add(0.0), _Add(1.0, tuple_out=True)
        self.post_attention_layernorm, self.mlp = _Add(0.0), _Add(2.0)

    def forward(self, x):
        x = self.self_attn(self.input_layernorm(x))[0]
        return (self.mlp(self.post_attention_layernorm(x)),)  # a decoder layer returns a tuple


class _HF(nn.Module):
    def __init__(self):
        super().__init__()
        self.model = nn.Module()
        self.model.embed_tokens = nn.Embedding(8, 3)
        nn.init.constant_(self.model.embed_tokens.weight, 1.0)
        self.model.layers = nn.ModuleList([_HFBlock(), _HFBlock()])
        self.model.norm = _Add(0.0)

    def forward(self, batch):
        x = self.model.embed_tokens(batch)
        for layer in self.model.layers:
            x = layer(x)[0]
        return self.model.norm(x)


def _hooks(*models) -> int:
    return sum(len(m._forward_hooks) for model in models for m in model.modules())


def test_the_same_models_agree_at_every_sub_layer_and_the_hooks_are_removed():
    native, hf = _Native(), _HF()
    assert localise(native, hf, [1, 2, 3]) == (
        "no sub-layer diverges on the longest prompt: the difference is in the output head or the decoding"
    )
    assert _hooks(native, hf) == 0


def test_the_first_sub_layer_that_differs_is_named_with_its_difference():
    native, hf = _Native(), _HF()
    hf.model.layers[1].mlp.bias = torch.full((3,), 2.5)  # block 1's MLP: 0.5 off, on outputs of 7 -> 7.5
    assert localise(native, hf, [1, 2]) == (
        "first divergence: block 1 MLP (mlp) (max |diff| 0.5, 0.071 of its scale; everything before agrees)"
    )
    hf.model.layers[0].self_attn.bias = torch.full((3,), 1.25)  # now block 0's attention goes first
    assert localise(native, hf, [1]) == (
        "first divergence: block 0 attention (self_attn) (max |diff| 0.25, 0.12 of its scale; everything before agrees)"
    )
    assert _hooks(native, hf) == 0


@pytest.mark.parametrize(
    ("where", "name"),
    [
        ("embedding", "the embedding"),
        ("input_layernorm", "block 0 attention norm (input_layernorm)"),
        ("post_attention_layernorm", "block 0 MLP norm (post_attention_layernorm)"),
        ("norm", "the final norm"),
    ],
)
def test_each_stage_is_named(where, name):
    native, hf = _Native(), _HF()
    if where == "embedding":
        nn.init.constant_(hf.model.embed_tokens.weight, 1.5)
        scale = "0.5"
    elif where == "norm":
        hf.model.norm.bias = torch.full((3,), 0.5)
        scale = "0.071"  # 0.5 on outputs of 7
    else:
        getattr(hf.model.layers[0], where).bias = torch.full((3,), 0.5)
        scale = "0.5" if where == "input_layernorm" else "0.25"
    assert localise(native, hf, [0]).startswith(f"first divergence: {name} (max |diff| 0.5, {scale} of its scale")


def test_a_difference_within_rounding_is_agreement():
    native, hf = _Native(), _HF()
    hf.model.norm.bias = torch.full((3,), 1e-4)  # 1e-4 on outputs of 7: 1.4e-5 of the scale
    assert localise(native, hf, [0]).startswith("no sub-layer diverges")
    hf.model.norm.bias = torch.full((3,), 1e-3)  # 1.4e-4 of the scale: above the bound
    assert localise(native, hf, [0]).startswith("first divergence: the final norm")


def test_a_block_output_that_differs_while_its_sub_layers_agree():
    native, hf = _Native(), _HF()
    block = hf.model.layers[0]

    def doubled(x):
        x = block.self_attn(block.input_layernorm(x))[0]
        return (block.mlp(block.post_attention_layernorm(x)) * 2,)

    block.forward = doubled
    assert localise(native, hf, [0]).startswith("first divergence: block 0 output (max |diff| 4,")


def test_a_zero_output_against_a_tiny_one_diverges():
    native, hf = _Native(), _HF()
    nn.init.constant_(native.embedding.weight, 0.0)
    nn.init.constant_(hf.model.embed_tokens.weight, 1e-13)
    assert localise(native, hf, [0]) == (
        "first divergence: the embedding (max |diff| 1e-13, 0.1 of its scale; everything before agrees)"
    )


def test_a_non_finite_output_names_its_side():
    native, hf = _Native(), _HF()
    hf.model.layers[1].self_attn.bias = torch.tensor([0.0, float("inf"), 0.0])
    assert (
        localise(native, hf, [0])
        == "first divergence: block 1 attention (self_attn) (transformers output is not finite)"
    )
    native, hf = _Native(), _HF()
    native.layers[0].feed_forward.bias = torch.tensor([float("nan"), 0.0, 0.0])
    assert localise(native, hf, [0]) == "first divergence: block 0 MLP (mlp) (native output is not finite)"
    assert _hooks(native, hf) == 0


def test_outputs_of_other_shapes_are_named_with_both_shapes():
    native, hf = _Native(), _HF()
    hf.model.embed_tokens = nn.Embedding(8, 4)
    hf.model.layers[0].input_layernorm = nn.Linear(4, 3)
    assert localise(native, hf, [1, 2]) == "first divergence: the embedding (output shapes (1, 2, 3) vs (1, 2, 4))"


def test_the_hooks_are_removed_when_the_forward_pass_fails():
    native, hf = _Native(), _HF()
    native.norm.forward = lambda x: 1 / 0
    with pytest.raises(ZeroDivisionError):
        localise(native, hf, [0])
    assert _hooks(native, hf) == 0


def test_models_of_different_depths_are_refused():
    native, hf = _Native(), _HF()
    del hf.model.layers[1]
    with pytest.raises(ValueError, match="zip"):
        localise(native, hf, [0])


def test_a_difference_of_exactly_the_bound_is_agreement():
    native, hf = _Native(), _HF()
    native.norm.bias = torch.full((3,), 9993.0)  # 7 + 9993 = 10000
    hf.model.norm.bias = torch.full((3,), 9994.0)  # 1 in 10000: 1e-4 of the scale, not above it
    assert localise(native, hf, [0]).startswith("no sub-layer diverges")
    hf.model.norm.bias = torch.full((3,), 9995.0)
    assert localise(native, hf, [0]).startswith("first divergence: the final norm (max |diff| 2, 0.0002 of its scale")
