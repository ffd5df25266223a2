"""The plan of a GGUF output: its `--outtype`, and every tensor's shape and type, from the config alone.

Every tensor's shape and type is known before any data is read, so the writer can lay out the
header and tensor table first and count the shards of a split output before writing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from math import prod

import gguf

from mythos_convert.errors import MythosError
from mythos_convert.model.config import MythosConfig
from mythos_convert.names import gguf_shapes
from mythos_convert.quant.types import MAIN_TYPE, choose_types

F = gguf.LlamaFileType
F32 = gguf.GGMLQuantizationType.F32


@dataclass(frozen=True)
class OutType:
    """One `--outtype` (llama-quantize's name for it) and the file type llama.cpp records."""

    name: str  # as typed on the command line; a searched file's target (`bpw4.50`, `size95MB`)
    file_type: gguf.LlamaFileType
    # a searched file's types (GGUF name -> type, every matrix; `quant/target.py`), None for a fixed mix
    recipe: dict[str, gguf.GGMLQuantizationType] | None = field(default=None, compare=False)

    @property
    def qtype(self) -> gguf.GGMLQuantizationType:
        """The type of the file's ordinary matrices; some tensors get others (`gguf_types`)."""
        return MAIN_TYPE[self.file_type]

    @property
    def label(self) -> str:  # as it appears in file names: F16, Q8_0, Q4_K_M, bpw4.50
        return self.name if self.recipe is not None else self.name.upper()


def searched_outtype(target: str, recipe: dict[str, gguf.GGMLQuantizationType]) -> OutType:
    """The output of a searched recipe. Its file type is Q8_0, what `llama-quantize --tensor-type ...
    IN OUT Q8_0` (`quant/recipe.command_line`) records: every matrix is overridden, so the base
    type only makes llama.cpp quantize; readers find the target under `mythos.quantize.target`."""
    return OutType(target, F.MOSTLY_Q8_0, dict(recipe))


# Every type llama.cpp runs for a dense llama that this package can quantize: the float and legacy
# types (gguf.quants, or kquants with an importance matrix) and the K-quant mixes (kquants). Left
# out: IQ types, TQ1_0/TQ2_0 (ternary-trained weights only), MXFP4 (MoE-only in llama.cpp).
OUTTYPES: dict[str, OutType] = {
    t.name: t
    for t in (
        OutType("f32", F.ALL_F32),
        OutType("f16", F.MOSTLY_F16),
        OutType("bf16", F.MOSTLY_BF16),
        OutType("q8_0", F.MOSTLY_Q8_0),
        OutType("q6_k", F.MOSTLY_Q6_K),
        OutType("q5_k_m", F.MOSTLY_Q5_K_M),
        OutType("q5_k_s", F.MOSTLY_Q5_K_S),
        OutType("q5_1", F.MOSTLY_Q5_1),
        OutType("q5_0", F.MOSTLY_Q5_0),
        OutType("q4_k_m", F.MOSTLY_Q4_K_M),
        OutType("q4_k_s", F.MOSTLY_Q4_K_S),
        OutType("q4_1", F.MOSTLY_Q4_1),
        OutType("q4_0", F.MOSTLY_Q4_0),
        OutType("q3_k_l", F.MOSTLY_Q3_K_L),
        OutType("q3_k_m", F.MOSTLY_Q3_K_M),
        OutType("q3_k_s", F.MOSTLY_Q3_K_S),
        OutType("q2_k", F.MOSTLY_Q2_K),
    )
}
ALL = "all"
QUANTIZATION_VERSION = 2  # gguf.GGML_QUANT_VERSION


def parse_outtypes(text: str) -> list[OutType]:
    """`f16`, `q8_0,q4_0` or `all` -> the output types, in the order given.

    Raises:
        MythosError: an unknown type (the message lists the valid ones).
    """
    names = list(OUTTYPES) if text.strip().lower() == ALL else [t.strip().lower() for t in text.split(",")]
    unknown = [n for n in names if n not in OUTTYPES]
    if unknown or not names:
        raise MythosError(f"unknown --outtype {text!r}: choose one of {', '.join(OUTTYPES)} or {ALL}")
    return [OUTTYPES[n] for n in dict.fromkeys(names)]


def parse_size(text: str | int | None) -> int:
    """`500M`, `2G`, `1500K` or a byte count -> bytes (decimal units, as llama.cpp's gguf-split)."""
    if text is None or text == "" or text == 0:
        return 0
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)B?\s*", str(text), re.IGNORECASE)
    if match is None:
        raise MythosError(f"cannot read size {text!r}: write it like 500M, 2G or a number of bytes")
    scale = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}[match.group(2).upper()]
    return int(float(match.group(1)) * scale)


@dataclass(frozen=True)
class TensorPlan:
    name: str
    shape: tuple[int, ...]  # numpy order
    qtype: gguf.GGMLQuantizationType
    note: str = ""  # why the type differs from the file's type, if it does

    @property
    def nbytes(self) -> int:
        block, size = gguf.GGML_QUANT_SIZES[self.qtype]
        return prod(self.shape[:-1]) * self.shape[-1] // block * size


def plan_tensors(config: MythosConfig, outtype: OutType, *, imatrix: bool = False) -> list[TensorPlan]:
    """Each tensor's type in a file of `outtype`, chosen by llama.cpp's rules (`gguf_types`).

    1-D tensors (norms) stay F32; the tied embedding takes the output head's type; the _S/_M/_L
    mixes give some layers more bits; a row that does not fit a type's block falls back (noted).
    """
    shapes = gguf_shapes(config)
    if outtype.recipe is not None:
        note = f"chosen by measurement for {outtype.name}"
        return [
            TensorPlan(name, shape, outtype.recipe[name], note) if len(shape) > 1 else TensorPlan(name, shape, F32)
            for name, shape in shapes.items()
        ]
    choices = choose_types(
        outtype.file_type,
        shapes,
        n_layers=config.n_layers,
        n_heads=config.n_heads,
        n_kv_heads=config.n_kv_heads,
        imatrix=imatrix,
    )
    return [TensorPlan(name, shape, choices[name].qtype, choices[name].why) for name, shape in shapes.items()]


def count_shards(config: MythosConfig, outtype: OutType, split_max_size: int) -> int:
    """How many files an output will have, computed as gguf-py splits (before writing)."""
    if not split_max_size:
        return 1
    shards, current = 1, 0
    for plan in plan_tensors(config, outtype):
        if current and current + plan.nbytes > split_max_size:
            shards, current = shards + 1, 0
        current += plan.nbytes
    return shards
