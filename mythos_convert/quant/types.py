"""Which type each tensor of a GGUF file gets: llama.cpp's rules, for every file type we write.

A Q4_K_M file is not "every matrix at Q4_K": llama.cpp's quantizer (`llama_tensor_get_type` in
`src/llama-quant.cpp`) gives the tied embedding the output head's type, more bits to `attn_v`
and `ffn_down` in some layers, and falls back to a 32-block type where a row does not fit a
256 block. People compare our files with llama-quantize's, so the same rules pick the same types
here, for the legacy types too (llama.cpp's Q4_0 file stores a tied embedding as Q6_K).

Only what applies to a dense llama is kept: no experts, no Falcon, no 70B rule, no IQ types.
"""

from __future__ import annotations

from dataclasses import dataclass

import gguf

Q = gguf.GGMLQuantizationType
F = gguf.LlamaFileType

# llama.cpp's file type -> the type of its ordinary matrices (`llama_ftype_get_default_type`)
MAIN_TYPE: dict[gguf.LlamaFileType, gguf.GGMLQuantizationType] = {
    F.ALL_F32: Q.F32,
    F.MOSTLY_F16: Q.F16,
    F.MOSTLY_BF16: Q.BF16,
    F.MOSTLY_Q8_0: Q.Q8_0,
    F.MOSTLY_Q5_1: Q.Q5_1,
    F.MOSTLY_Q5_0: Q.Q5_0,
    F.MOSTLY_Q4_1: Q.Q4_1,
    F.MOSTLY_Q4_0: Q.Q4_0,
    F.MOSTLY_Q6_K: Q.Q6_K,
    F.MOSTLY_Q5_K_M: Q.Q5_K,
    F.MOSTLY_Q5_K_S: Q.Q5_K,
    F.MOSTLY_Q4_K_M: Q.Q4_K,
    F.MOSTLY_Q4_K_S: Q.Q4_K,
    F.MOSTLY_Q3_K_L: Q.Q3_K,
    F.MOSTLY_Q3_K_M: Q.Q3_K,
    F.MOSTLY_Q3_K_S: Q.Q3_K,
    F.MOSTLY_Q2_K: Q.Q2_K,
}
FLOAT_TYPES = (Q.F32, Q.F16, Q.BF16)

# A 256-block type whose block does not divide a row falls back to this 32-block type
# (`tensor_type_fallback`); if that does not divide either, to F16.
FALLBACK: dict[gguf.GGMLQuantizationType, gguf.GGMLQuantizationType] = {
    Q.Q2_K: Q.Q4_0,
    Q.Q3_K: Q.Q4_0,
    Q.Q4_K: Q.Q5_0,
    Q.Q5_K: Q.Q5_1,
    Q.Q6_K: Q.Q8_0,
}


def block_size(qtype: gguf.GGMLQuantizationType) -> int:
    return gguf.GGML_QUANT_SIZES[qtype][0]


def use_more_bits(i_layer: int, n_layers: int) -> bool:
    """The layers the _M mixes give more bits: the first and last eighth, then every third."""
    return i_layer < n_layers // 8 or i_layer >= 7 * n_layers // 8 or (i_layer - n_layers // 8) % 3 == 2


def _category(name: str) -> str:
    """llama.cpp's broad tensor category (`tensor_get_category`), for the names a llama has."""
    if name == "output.weight":
        return "output"
    if name == "token_embd.weight":
        return "token_embd"
    for part, category in (
        ("attn_v.weight", "attn_v"),
        ("attn_k.weight", "attn_k"),
        ("attn_q.weight", "attn_q"),
        ("attn_output.weight", "attn_output"),
        ("ffn_up", "ffn_up"),
        ("ffn_gate", "ffn_gate"),
        ("ffn_down", "ffn_down"),
    ):
        if part in name:
            return category
    return "other"


@dataclass(frozen=True)
class TypeChoice:
    """A tensor's type and, when a matrix's is not the file's main type, why."""

    qtype: gguf.GGMLQuantizationType
    why: str = ""


def _quantizable(name: str, shape: tuple[int, ...]) -> bool:
    """`tensor_allows_quantization` for a llama: 2-D weights that are not norms."""
    return len(shape) >= 2 and name.endswith("weight") and "_norm.weight" not in name


MORE_BITS = "more bits in the first and last eighth of the layers and every third between"


def _mix(
    ftype: gguf.LlamaFileType, category: str, i_layer: int, n_layers: int, gqa: int, imatrix: bool, default
) -> tuple[gguf.GGMLQuantizationType, str]:
    """`llama_tensor_get_type_impl`'s choice for one tensor of a dense llama (before the fallback),
    and why, worded without the layer number so that a mix's tensors group by reason."""
    if category == "attn_v":
        if ftype == F.MOSTLY_Q2_K:
            return (Q.Q4_K, "attn_v with GQA >= 4:1") if gqa >= 4 else (Q.Q3_K, "attn_v in Q2_K files")
        if ftype == F.MOSTLY_Q3_K_M:
            return (Q.Q5_K, "attn_v in the first 2 layers") if i_layer < 2 else (Q.Q4_K, "attn_v in Q3_K_M files")
        if ftype == F.MOSTLY_Q3_K_L:
            return Q.Q5_K, "attn_v in Q3_K_L files"
        if ftype in (F.MOSTLY_Q4_K_M, F.MOSTLY_Q5_K_M) and use_more_bits(i_layer, n_layers):
            return Q.Q6_K, f"attn_v: {MORE_BITS}"
        if ftype == F.MOSTLY_Q4_K_S and i_layer < 4:
            return Q.Q5_K, "attn_v in the first 4 layers"
    elif category == "ffn_down":
        if ftype == F.MOSTLY_Q2_K:
            return Q.Q3_K, "ffn_down in Q2_K files"
        if ftype == F.MOSTLY_Q3_K_M:
            if i_layer < n_layers // 16:
                return Q.Q5_K, "ffn_down in the first sixteenth of the layers"
            return Q.Q4_K, "ffn_down in Q3_K_M files"
        if ftype == F.MOSTLY_Q3_K_L:
            return Q.Q5_K, "ffn_down in Q3_K_L files"
        if ftype in (F.MOSTLY_Q4_K_M, F.MOSTLY_Q5_K_M) and use_more_bits(i_layer, n_layers):
            return Q.Q6_K, f"ffn_down: {MORE_BITS}"
        if ftype == F.MOSTLY_Q4_K_S and i_layer < n_layers // 8:
            return Q.Q5_K, "ffn_down in the first eighth of the layers"
        if ftype in (F.MOSTLY_Q4_0, F.MOSTLY_Q5_0) and imatrix and i_layer < n_layers // 8:
            better = Q.Q4_1 if ftype == F.MOSTLY_Q4_0 else Q.Q5_1
            return better, "ffn_down in the first eighth of the layers, with an imatrix"
    elif category == "attn_output":
        better = {F.MOSTLY_Q2_K: Q.Q3_K, F.MOSTLY_Q3_K_M: Q.Q4_K, F.MOSTLY_Q3_K_L: Q.Q5_K}.get(ftype)
        if better is not None:
            return better, f"attn_output in {ftype.name.removeprefix('MOSTLY_')} files"
    return default, ""


def row_fallback(qtype: gguf.GGMLQuantizationType, row: int) -> tuple[gguf.GGMLQuantizationType, str]:
    """`tensor_type_fallback`: a type whose block does not divide the row length."""
    if row % block_size(qtype) == 0:
        return qtype, ""
    fallback = FALLBACK.get(qtype, qtype)
    why = f"rows of {row} do not fit {qtype.name}'s {block_size(qtype)}-blocks"
    if row % block_size(fallback) != 0:
        return Q.F16, f"{why} nor 32-blocks: F16"
    return fallback, f"{why}: {fallback.name}"


def choose_types(
    ftype: gguf.LlamaFileType,
    shapes: dict[str, tuple[int, ...]],
    *,
    n_layers: int,
    n_heads: int,
    n_kv_heads: int,
    imatrix: bool = False,
) -> dict[str, TypeChoice]:
    """Every tensor's type in a file of `ftype`, as llama.cpp's quantizer would choose it.

    `shapes` holds GGUF names and numpy shapes (the row length is the last dimension, ggml's
    `ne[0]`), in file order: the per-category counters advance in that order, as llama.cpp's do.
    A model without `output.weight` has a tied embedding, which takes the output head's rule.
    """
    default = MAIN_TYPE[ftype]
    tied = "output.weight" not in shapes
    gqa = n_heads // n_kv_heads
    seen = {"attn_v": 0, "ffn_down": 0}
    out: dict[str, TypeChoice] = {}
    for name, shape in shapes.items():
        if len(shape) < 2:
            out[name] = TypeChoice(Q.F32)  # norms: F32 in every file, nothing to explain
            continue
        if not _quantizable(name, shape) or default in FLOAT_TYPES:
            out[name] = TypeChoice(default)
            continue
        row, category = shape[-1], _category(name)
        qtype, why = default, ""
        if category == "output" or (tied and category == "token_embd"):
            head = "output head" if category == "output" else "embedding (= tied output head)"
            if row % block_size(default) != 0:
                qtype, why = Q.Q8_0, f"{head}: Q8_0 (rows do not fit {default.name})"
            elif default != Q.Q8_0:
                qtype, why = Q.Q6_K, f"{head}: Q6_K"
        else:
            i_layer = seen.get(category, 0)
            if category in seen:
                seen[category] += 1
            qtype, why = _mix(ftype, category, i_layer, n_layers, gqa, imatrix, default)
        qtype, fell = row_fallback(qtype, row)
        out[name] = TypeChoice(qtype, f"{why}; {fell}" if why and fell else why or fell)
    return out


# What people download first (llama.cpp's and Ollama's usual default), then near-lossless, then
# exact: the file a Modelfile and the card's examples point at, of those written.
RECOMMENDED = ("Q4_K_M", "Q8_0", "F16")


def recommended_rank(file_name: str) -> int:
    """Sort key: the position of the file's type (from its `...-TYPE.gguf` name) in RECOMMENDED."""
    stem = file_name.upper().removesuffix(".GGUF")
    for rank, label in enumerate(RECOMMENDED):
        if stem.endswith(f"-{label}") or f"-{label}-0" in stem:
            return rank
    return len(RECOMMENDED)
