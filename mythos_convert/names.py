"""The one name table: native Mythos <-> transformers Llama <-> llama.cpp GGUF, and the one check.

Every converter in every direction maps names through `TABLE`. A row may name the transform the
GGUF side needs (`permute_q`/`permute_k`: half-split RoPE rows to llama.cpp's interleaved layout).
Layer indices are found with `\\.(\\d+)\\.` only, because native names contain `w1`/`w2`/`w3`.

`CONFIG_KEYS` is the same for config values: each MythosConfig value's config.json key, its GGUF
key (gguf-py's `gguf.Keys`, formatted for the llama architecture) and how it is compared. The HF
and GGUF writers, both readers, verify's config checks and the card all go through it.

`check_tensors` is the one check of a set of stored tensors against a config (unknown, beyond the
layers, misshapen, missing), and `check_tied` the one check that a stored head is the embedding:
every reader (native checkpoint, HF folder, GGUF file) and so every writer goes through them.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import gguf

from mythos_convert.errors import MythosError
from mythos_convert.model.config import MythosConfig
from mythos_convert.support.torch_free import is_torch_tensor


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


def native_shapes(cfg: MythosConfig) -> dict[str, tuple[int, ...]]:
    """Shape of every native tensor for `cfg`, in the model's state_dict order, rope buffers included.

    Computed, not read off a model built on the meta device: that costs seconds of imports. Every
    other format stores the same shapes under its own names (GGUF lists the dims reversed).
    """
    d, hd, ffn = cfg.d_model, cfg.head_dim, cfg.ffn_dim
    q, kv = cfg.n_heads * hd, cfg.n_kv_heads * hd
    layer = {
        "attn_norm.weight": (d,),
        "attention.wq.weight": (q, d),
        "attention.wk.weight": (kv, d),
        "attention.wv.weight": (kv, d),
        "attention.wo.weight": (d, q),
        "ffn_norm.weight": (d,),
        "feed_forward.w1.weight": (ffn, d),
        "feed_forward.w2.weight": (d, ffn),
        "feed_forward.w3.weight": (ffn, d),
    }
    shapes: dict[str, tuple[int, ...]] = {"embedding.weight": (cfg.vocab_size, d)}
    for i in range(cfg.n_layers):
        shapes.update({f"layers.{i}.{name}": shape for name, shape in layer.items()})
    shapes.update({"norm.weight": (d,), "output.weight": (cfg.vocab_size, d)})
    shapes.update({"rope_cos": (cfg.max_seq_len, hd), "rope_sin": (cfg.max_seq_len, hd)})
    return shapes


# --- config keys ------------------------------------------------------------------------------

GGUF_ARCH = gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA]  # "llama": the architecture llama.cpp runs us as
SHAPE = "shape"  # changes the tensors: a difference means other weights
COMPUTE = "compute"  # changes the computation, not the tensors: a folder differing here still loads
DERIVED = "derived"  # follows from other fields (head_dim = d_model / n_heads): written, only checked back


@dataclass(frozen=True)
class ConfigKey:
    """One config value in every format, and how it is compared.

    `field` is a MythosConfig attribute or property: the exports store the SwiGLU width `ffn_dim`,
    which readers map back to `d_ff`. Integers compare exactly; floats (`kind` float) are stored as
    float32 in GGUF, so a GGUF value is compared, and read back, through float32. `dropout`, a
    training setting, has no row: no export stores it (readers set 0.0).
    """

    field: str
    hf: str  # config.json key
    gguf_templates: tuple[str, ...]  # gguf.Keys constants ("{arch}.context_length"), all holding the value
    kind: type  # int or float
    role: str  # SHAPE, COMPUTE or DERIVED
    limit: str | None = None  # the `LIMITS` entry that bounds a size read from a file

    def gguf_keys(self, arch: str = GGUF_ARCH) -> tuple[str, ...]:
        """The GGUF header key(s) for `arch` (ours: llama)."""
        return tuple(template.format(arch=arch) for template in self.gguf_templates)


# In config.json's order (the shape fields, then what only changes the computation).
CONFIG_KEYS: tuple[ConfigKey, ...] = (
    ConfigKey("vocab_size", "vocab_size", (gguf.Keys.LLM.VOCAB_SIZE,), int, SHAPE, "vocab_size"),
    ConfigKey("d_model", "hidden_size", (gguf.Keys.LLM.EMBEDDING_LENGTH,), int, SHAPE, "d_model"),
    ConfigKey("ffn_dim", "intermediate_size", (gguf.Keys.LLM.FEED_FORWARD_LENGTH,), int, SHAPE, "d_ff"),
    ConfigKey("n_layers", "num_hidden_layers", (gguf.Keys.LLM.BLOCK_COUNT,), int, SHAPE, "n_layers"),
    ConfigKey("n_heads", "num_attention_heads", (gguf.Keys.Attention.HEAD_COUNT,), int, SHAPE, "n_heads"),
    ConfigKey("n_kv_heads", "num_key_value_heads", (gguf.Keys.Attention.HEAD_COUNT_KV,), int, SHAPE, "n_kv_heads"),
    ConfigKey(  # llama.cpp refuses `invalid n_rot` unless rope dims == key length == head_dim
        "head_dim",
        "head_dim",
        (gguf.Keys.Rope.DIMENSION_COUNT, gguf.Keys.Attention.KEY_LENGTH, gguf.Keys.Attention.VALUE_LENGTH),
        int,
        DERIVED,
        "d_model",
    ),
    ConfigKey("max_seq_len", "max_position_embeddings", (gguf.Keys.LLM.CONTEXT_LENGTH,), int, COMPUTE, "max_seq_len"),
    ConfigKey("norm_eps", "rms_norm_eps", (gguf.Keys.Attention.LAYERNORM_RMS_EPS,), float, COMPUTE),
    ConfigKey("rope_theta", "rope_theta", (gguf.Keys.Rope.FREQ_BASE,), float, COMPUTE),
)
# Fields a GGUF header may lack: llama.cpp takes the vocabulary size from the token list.
GGUF_OPTIONAL = ("vocab_size",)
CONFIG_KEY = {row.field: row for row in CONFIG_KEYS}
HF_KEY = {row.field: row.hf for row in CONFIG_KEYS}
# Field -> config.json key, by role. A folder whose config.json differs from its checkpoint in a
# shape field holds other weights (verify refuses it); in a compute field it still loads, so verify
# reports the field (and runs) instead of refusing the folder.
SHAPE_FIELDS = {row.field: row.hf for row in CONFIG_KEYS if row.role == SHAPE}
COMPUTE_FIELDS = {row.field: row.hf for row in CONFIG_KEYS if row.role == COMPUTE}
# The order llama.cpp's own converter writes the hyperparameters in: every GGUF's bytes follow it.
GGUF_ORDER = (
    "max_seq_len",
    "d_model",
    "n_layers",
    "ffn_dim",
    "n_heads",
    "n_kv_heads",
    "norm_eps",
    "rope_theta",
    "head_dim",
    "vocab_size",
)


def config_values(cfg: MythosConfig) -> dict[str, int | float]:
    """Field -> the value every export stores for it (ints as int, floats as float), table order."""
    return {row.field: row.kind(getattr(cfg, row.field)) for row in CONFIG_KEYS}


def gguf_header(cfg: MythosConfig) -> list[tuple[str, int | float]]:
    """(GGUF key, value) of every hyperparameter, in `GGUF_ORDER`: ints are uint32, floats float32."""
    values = config_values(cfg)
    return [(key, values[field]) for field in GGUF_ORDER for key in CONFIG_KEY[field].gguf_keys()]


def same_value(row: ConfigKey, a: Any, b: Any, *, float32: bool = False) -> bool:
    """Do two values of `row` agree (floats through float32 when one side was stored in GGUF)?"""
    if row.kind is float and float32:
        import numpy as np

        return bool(np.float32(a) == np.float32(b))
    return row.kind(a) == row.kind(b)


def same_architecture(a: MythosConfig, b: MythosConfig) -> bool:
    """Do two configs build the same tensors and computation (d_ff may differ if widths agree)?"""
    return all(getattr(a, f) == getattr(b, f) for f in (*SHAPE_FIELDS, *COMPUTE_FIELDS))


# What each kind of source tells its user to do when its tensors do not fit its config.
FIXES = {
    "native": "re-save it, or pass the --config that matches it",
    "hf": "fix config.json or re-export the folder",
    "gguf": "re-convert the GGUF file",
}


def check_tensors(
    stored: Mapping[str, Sequence[int]], cfg: MythosConfig, src: str, *, what: str = "the weights"
) -> dict[str, str]:
    """The one check of stored tensors (name in `src` naming -> shape) against `cfg`.

    Names are mapped through the table (`_orig_mod.`/`module.` prefixes and HF's `inv_freq` are
    the reader's business); shapes are compared in native order, so a GGUF reader passes its dims
    reversed back. Returns native name -> stored name for the tensors to convert, in
    `expected_names` order (the order writers plan shards in), without the rope buffers and the
    head (see `check_tied`).

    Raises:
        MythosError: the first unknown tensor, one beyond the config's layers, a wrong shape (both
            shapes), or a missing tensor, each named in `src` naming with the fix.
    """
    shapes = native_shapes(cfg)
    fix = FIXES[src]
    found: dict[str, str] = {}
    for name in stored:
        native = name if src == "native" and name in NATIVE_DROPPED else convert_name(name, src, "native")
        if native not in shapes:  # convert_name raised on names outside the table
            raise MythosError(
                f"tensor {name} is beyond the config's {cfg.n_layers} layers: the config does not describe "
                f"these weights; {fix}"
            )
        found[native] = name
    position = {n: k for k, n in enumerate(shapes)}
    for native in sorted(found, key=lambda n: (n in NATIVE_DROPPED, position[n])):
        name = found[native]
        if tuple(stored[name]) != shapes[native]:  # the model's order: the embedding's size speaks first
            raise MythosError(
                f"tensor {name} has shape {tuple(stored[name])} but the config expects {shapes[native]}: "
                f"the config does not describe these weights; {fix}"
            )
    wanted = expected_names("native", cfg.n_layers, tied=True)
    for native in wanted:
        if native not in found:
            name = native if src == "native" else convert_name(native, "native", src)
            raise MythosError(
                f"{what} lacks tensor {name}, which its config (n_layers={cfg.n_layers}) requires: "
                f"the weights are incomplete; {fix}"
            )
    return {native: found[native] for native in wanted}


def _same_values(a: Any, b: Any) -> bool:
    """Equal shape and values, for torch tensors (shared storage short-cuts) or anything numpy reads."""
    if dataclasses.is_dataclass(a):  # a torch_zip.TensorRef: the same bytes of the same file
        return a == b
    if is_torch_tensor(a) and is_torch_tensor(b):
        import torch

        if a.shape != b.shape:
            return False
        return (a.data_ptr() == b.data_ptr() and a.stride() == b.stride()) or torch.equal(a, b)
    import numpy as np

    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and np.array_equal(a, b)


def check_tied(head: Any, embedding: Any, src: str) -> None:
    """Refuse a stored output head that is not the embedding: Mythos ties them, and so does every export.

    Raises:
        MythosError: naming the head in `src` naming.
    """
    if head is embedding or _same_values(head, embedding):
        return
    embed_name = convert_name("embedding.weight", "native", src)
    raise MythosError(
        f"{TIED_HEAD[src]} differs from the embedding ({embed_name}): Mythos ties its output head to the "
        "embedding, and an untied lm_head is not supported; convert a model whose head is its embedding"
    )


def gguf_shapes(config: MythosConfig) -> dict[str, tuple[int, ...]]:
    """GGUF name -> numpy shape ([out, in] as in HF; ggml's order is the reverse), tied model.

    The shapes are the native ones: neither HF nor GGUF transposes, the q/k permutation keeps shapes.
    """
    native = native_shapes(config)
    return {name: native[convert_name(name, "gguf", "native")] for name in expected_names("gguf", config.n_layers)}
