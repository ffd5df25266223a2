"""The one name table: native Mythos <-> transformers Llama <-> llama.cpp GGUF.

Every converter in every direction maps names through `TABLE`. A row may name the transform the
GGUF side needs (`permute_q`/`permute_k`: half-split RoPE rows to llama.cpp's interleaved layout).
Layer indices are found with `\\.(\\d+)\\.` only, because native names contain `w1`/`w2`/`w3`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mythos_convert.errors import MythosError


@dataclass(frozen=True)
class NameRow:
    native: str
    hf: str
    gguf: str
    transform: str | None = None  # applied on the way to GGUF, inverted on the way back


TABLE: tuple[NameRow, ...] = (
    NameRow("embedding.weight", "model.embed_tokens.weight", "token_embd.weight"),
    NameRow("layers.{i}.attn_norm.weight", "model.layers.{i}.input_layernorm.weight", "blk.{i}.attn_norm.weight"),
    NameRow(
        "layers.{i}.attention.wq.weight",
        "model.layers.{i}.self_attn.q_proj.weight",
        "blk.{i}.attn_q.weight",
        "permute_q",
    ),
    NameRow(
        "layers.{i}.attention.wk.weight",
        "model.layers.{i}.self_attn.k_proj.weight",
        "blk.{i}.attn_k.weight",
        "permute_k",
    ),
    NameRow("layers.{i}.attention.wv.weight", "model.layers.{i}.self_attn.v_proj.weight", "blk.{i}.attn_v.weight"),
    NameRow("layers.{i}.attention.wo.weight", "model.layers.{i}.self_attn.o_proj.weight", "blk.{i}.attn_output.weight"),
    NameRow(
        "layers.{i}.ffn_norm.weight", "model.layers.{i}.post_attention_layernorm.weight", "blk.{i}.ffn_norm.weight"
    ),
    NameRow("layers.{i}.feed_forward.w1.weight", "model.layers.{i}.mlp.gate_proj.weight", "blk.{i}.ffn_gate.weight"),
    NameRow("layers.{i}.feed_forward.w3.weight", "model.layers.{i}.mlp.up_proj.weight", "blk.{i}.ffn_up.weight"),
    NameRow("layers.{i}.feed_forward.w2.weight", "model.layers.{i}.mlp.down_proj.weight", "blk.{i}.ffn_down.weight"),
    NameRow("norm.weight", "model.norm.weight", "output_norm.weight"),
    NameRow("output.weight", "lm_head.weight", "output.weight"),  # dropped by writers when tied
)

# Native buffers that no other format stores: recomputed from rope_theta.
NATIVE_DROPPED = frozenset({"rope_cos", "rope_sin"})
# Prefixes left by torch.compile (`_orig_mod.`) and DistributedDataParallel (`module.`).
NATIVE_PREFIXES = ("_orig_mod.", "module.")
# Tied head names in each format: the embedding is stored, this one is not.
TIED_HEAD = {"native": "output.weight", "hf": "lm_head.weight", "gguf": "output.weight"}
# HF-side tensors that carry no information for us and may appear in older exports.
HF_IGNORED = re.compile(r"\.rotary_emb\.inv_freq$")

FORMATS = ("native", "hf", "gguf")
_LAYER = re.compile(r"\.(\d+)\.")


def _template(name: str) -> tuple[str, int | None]:
    """`layers.3.attention.wq.weight` -> (`layers.{i}.attention.wq.weight`, 3)."""
    match = _LAYER.search(name)
    if match is None:
        return name, None
    return name[: match.start()] + ".{i}." + name[match.end() :], int(match.group(1))


def _index(src: str) -> dict[str, NameRow]:
    return {getattr(row, src): row for row in TABLE}


_BY_FORMAT = {fmt: _index(fmt) for fmt in FORMATS}


def lookup(name: str, src: str) -> tuple[NameRow, int | None]:
    """Find the row for a tensor name in format `src`; raise MythosError naming unknown tensors."""
    template, layer = _template(name)
    row = _BY_FORMAT[src].get(template)
    if row is None:
        raise MythosError(
            f"unknown {src} tensor name {name!r}: it has no entry in the Mythos/Llama name table; "
            "remove it from the weights (only Mythos/Llama tensors convert)"
        )
    return row, layer


def convert_name(name: str, src: str, dst: str) -> str:
    """Map one tensor name between formats ('native', 'hf', 'gguf')."""
    row, layer = lookup(name, src)
    target = getattr(row, dst)
    return target.replace("{i}", str(layer)) if layer is not None else target


def transform_of(name: str, src: str) -> str | None:
    """The transform (`permute_q`/`permute_k`/None) a tensor needs between HF/native and GGUF."""
    return lookup(name, src)[0].transform


def strip_native_prefixes(name: str) -> str:
    """Remove any chain of `_orig_mod.` / `module.` prefixes."""
    changed = True
    while changed:
        changed = False
        for prefix in NATIVE_PREFIXES:
            if name.startswith(prefix):
                name, changed = name[len(prefix) :], True
    return name


def expected_names(fmt: str, n_layers: int, *, tied: bool = True) -> list[str]:
    """Every tensor name a complete model has in `fmt`, in table order, layers expanded."""
    names = []
    for row in TABLE:
        template = getattr(row, fmt)
        if tied and template == TIED_HEAD[fmt]:
            continue
        if "{i}" in template:
            names.extend(template.replace("{i}", str(i)) for i in range(n_layers))
        else:
            names.append(template)
    order = {n: k for k, n in enumerate(names)}
    return sorted(names, key=lambda n: (_template(n)[1] is not None, _template(n)[1] or 0, order[n]))
