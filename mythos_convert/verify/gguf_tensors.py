"""Where a GGUF file goes wrong: its header against the source config, and every tensor against the source.

A failed logit comparison says that a file is wrong, not where. This module compares every tensor
of the file, dequantised with the q/k row permutation undone (`sources.open_gguf`), with the
source tensor, naming each tensor whose relative error is above its type's
bound, and recognising the usual mistakes: q/k rows not permuted, k permuted with the query head
count, a tensor scaled, NaN/Inf stored. The header check names a hyperparameter that differs from
the checkpoint's (`llama.attention.head_count_kv` and friends), which llama.cpp would otherwise
either refuse with a shape error or run with silently.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from mythos_convert.formats.dtypes import float32_array
from mythos_convert.formats.permute import head_count, permute_rows
from mythos_convert.model.config import MythosConfig
from mythos_convert.names import CONFIG_KEYS, GGUF_OPTIONAL, convert_name, same_value, transform_of
from mythos_convert.source import ModelSource

if TYPE_CHECKING:
    import gguf

# Relative RMS error ||dequantised - source|| / ||source|| a tensor of each ggml type may have.
# Float types: their rounding (F32 exact; F16 2^-11 and BF16 2^-8 per element at worst). Quantized
# types: 3x the worst measured by benchmarks/measure_gates.py over its random configs and the
# reference fixture (docs/parity.md); they name tensors when the logits fail, they do not gate alone.
TENSOR_BOUNDS: dict[str, float] = {  # measured worst in the comments
    "F32": 1e-7,  # 0
    "F16": 5e-4,  # 2.1e-4
    "BF16": 4e-3,  # 1.7e-3
    "Q8_0": 0.017,  # 5.6e-3
    "Q6_K": 0.054,  # 0.0178
    "Q5_K": 0.11,  # 0.0363
    "Q5_1": 0.12,  # 0.039
    "Q5_0": 0.13,  # 0.0442
    "Q4_K": 0.22,  # 0.0717
    "Q4_1": 0.24,  # 0.080
    "Q4_0": 0.27,  # 0.0896
    "Q3_K": 0.46,  # 0.152
    "Q2_K": 0.9,  # 0.298
}
FLOAT_TYPES = ("F32", "F16", "BF16")  # exact up to rounding: any excess fails verify on its own


def header_problems(reader: gguf.GGUFReader, config: MythosConfig) -> list[str]:
    """One line per header hyperparameter (`names.CONFIG_KEYS`) that differs from the source config
    (a missing one too); floats are compared as the file stores them, in float32.

    `reader` is the file's, already open: verify reads the header once for every check.
    """
    problems = []
    for row in CONFIG_KEYS:
        attr, want = row.field, getattr(config, row.field)
        for key in row.gguf_keys():
            field = reader.get_field(key)
            if field is None:
                if attr not in GGUF_OPTIONAL:
                    problems.append(f"the GGUF header has no {key}; the checkpoint's {attr} is {want}")
                continue
            got = field.contents()
            if isinstance(got, bool) or not isinstance(got, (int, float)):
                problems.append(f"the GGUF header's {key} is {got!r}, not a number; the checkpoint's {attr} is {want}")
            elif not same_value(row, got, want, float32=True):
                problems.append(f"the GGUF header's {key} is {got}, the checkpoint's {attr} is {want}")
    return problems


@dataclass(frozen=True)
class TensorCheck:
    """One tensor of the file against its source: relative RMS error, its bound, and a diagnosis."""

    name: str
    ggml_type: str
    rel_error: float  # NaN when the file's tensor holds NaN/Inf
    bound: float
    cause: str | None = None  # set when the error is above the bound

    @property
    def bad(self) -> bool:
        return not self.rel_error <= self.bound  # NaN is bad

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.ggml_type, "rel_error": self.rel_error, "bound": self.bound}


def _rel_error(got: np.ndarray, want: np.ndarray) -> float:
    if not np.isfinite(got).all():
        return math.nan
    norm = float(np.linalg.norm(want.astype(np.float64)))
    err = float(np.linalg.norm(got.astype(np.float64) - want))
    return err / norm if norm > 0 else (0.0 if err == 0 else math.inf)


def _head_counts(rows: int, head_dim: int) -> list[int]:
    """Head counts a q/k matrix of `rows` rows could have been permuted with (even rows per head)."""
    return [h for h in range(1, rows // 2 + 1) if rows % (2 * h) == 0 and h != rows // head_dim]


def _diagnose(name: str, got: np.ndarray, src: np.ndarray, heads: int | None, bound: float, head_dim: int) -> str:
    """The likely cause of a tensor's excess error, as a sentence naming the tensor."""
    if not np.isfinite(got).all():
        bad = ~np.isfinite(got)
        kind = "NaN" if np.isnan(got).any() else "Inf"
        rows = np.unique(np.nonzero(bad.reshape(bad.shape[0], -1).any(-1))[0])
        return f"{name} holds {kind} ({int(bad.sum())} value(s), row(s) {', '.join(map(str, rows[:4]))})"
    if heads is not None:
        if _rel_error(got, src) <= bound:
            return f"{name} matches the source not permuted (q/k rows must be interleaved per head for llama.cpp)"
        for h in _head_counts(src.shape[0], head_dim):
            if _rel_error(got, permute_rows(src, h)) <= bound:
                return f"{name} matches the source permuted with {h} heads, not {heads}"
        permuted = permute_rows(src, heads)
    else:
        permuted = src
    denom = float(np.vdot(permuted.astype(np.float64), permuted))
    if denom > 0:
        scale = float(np.vdot(got.astype(np.float64), permuted)) / denom
        if abs(scale - 1) > bound and _rel_error(got, scale * permuted) <= bound:
            return f"{name} is the source scaled by {scale:.4g}"
    return f"{name} differs from the source: relative error {_rel_error(got, permuted):.3g} > {bound:g}"


def check_tensors(file: ModelSource, source: dict[str, np.ndarray], config: MythosConfig) -> list[TensorCheck]:
    """Every tensor of a GGUF source (all its shards, dequantised, q/k rows back in the half-split
    layout) against `source` (GGUF names, the reference's tensors in float32)."""
    out = []
    for name in file.stored.values():
        type_name = file.ggml_types[name]
        bound = TENSOR_BOUNDS.get(type_name, 1.0)
        got, src = file.get(name), source[name]
        transform = transform_of(name, "gguf")
        heads = head_count(transform, config) if transform is not None else None
        error = _rel_error(got, src)
        if error <= bound:
            out.append(TensorCheck(name, type_name, error, bound))
            continue
        stored = permute_rows(got, heads) if heads else got  # the rows as the file holds them
        out.append(
            TensorCheck(name, type_name, error, bound, _diagnose(name, stored, src, heads, bound, config.head_dim))
        )
    return out


def source_tensors(source: ModelSource) -> dict[str, np.ndarray]:
    """A reference source's tensors under their GGUF names (float32 numpy, q/k half-split as stored)."""
    return {convert_name(name, "native", "gguf"): float32_array(tensor) for name, tensor in source.tensors()}
