"""Tensor types chosen by measurement: the smallest summed cost for a file-size budget.

llama.cpp's mixes (Q4_K_M, Q3_K_M, ...) give a tensor its type by its name and layer
(`llama_tensor_get_type_impl` in `src/llama-quant.cpp`). Here each matrix gets the type that
minimises the model's summed sensitivity (`quant/sensitivity.py`) under a budget on the whole
file, counted as llama.cpp's file is: the GGUF header, the key/value section (with this
search's own recipe key, `quant/recipe.py`), the tensor infos, every tensor's data padded to
the 32-byte alignment, the F32 norms.

The allocation is a multiple-choice knapsack, solved exactly by dynamic programming over bytes
in units of 1/32768 of the model's range (the F16 file minus the smallest one): each tensor's
extra bytes over its cheapest type are rounded *up* to units and the budget *down*, so the
chosen file always meets the budget, loses at most one unit per tensor to rounding (~0.5% of
the range for 170 tensors), and, because a larger budget only ever allows more choices, a
larger budget never gives a larger summed cost. A greedy pass over marginal cost per byte
(the Lagrangian relaxation) would be optimal only at the breakpoints of each tensor's convex
hull and can lose that monotonicity when it fills leftover bytes; the DP costs ~0.1 s.

Candidate types are llama.cpp's K-quants, legacy types, Q8_0 and F16, each after llama.cpp's
row-size fallback: the types llama-quantize would really write with `--tensor-type`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import gguf
import numpy as np

from mythos_convert.errors import MythosError
from mythos_convert.model.config import MythosConfig
from mythos_convert.model.model import Mythos
from mythos_convert.names import convert_name, expected_names, native_shapes
from mythos_convert.quant import recipe as recipes
from mythos_convert.quant.sensitivity import Sensitivity, candidate_types, measure

Q = gguf.GGMLQuantizationType
ALIGNMENT = gguf.GGUF_DEFAULT_ALIGNMENT  # 32: llama.cpp and gguf-py pad each tensor's data to it
HEADER_BYTES = 4 + 4 + 8 + 8  # magic, version, tensor count, key/value count
RESOLUTION = 1 << 15  # DP units across the model's size range


def pad(n: int) -> int:
    return -(-n // ALIGNMENT) * ALIGNMENT


def data_bytes(shape: tuple[int, ...], qtype: gguf.GGMLQuantizationType) -> int:
    """A tensor's data in the file, padded: rows of `shape[-1]` values in blocks of the type."""
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    return pad(math.prod(shape[:-1]) * shape[-1] // block * size)


def kv_section_bytes(writer: gguf.GGUFWriter) -> int:
    """Bytes of the key/value section a GGUFWriter holding its metadata will write (gguf-py's packing)."""
    total = 0
    for key, val in writer.kv_data[0].items():
        total += len(writer._pack_val(key, gguf.GGUFValueType.STRING, add_vtype=False))
        total += len(writer._pack_val(val.value, val.type, add_vtype=True, sub_type=val.sub_type))
    return total


@dataclass(frozen=True)
class Layout:
    """A GGUF file's tensors (GGUF name -> numpy shape, in file order) and its other metadata's size.

    `kv_bytes` is the key/value section without the recipe key (`kv_section_bytes` of the
    writer before the recipe is added). Matrices are chosen for; 1-D tensors stay F32.
    """

    shapes: dict[str, tuple[int, ...]]
    kv_bytes: int

    @property
    def matrices(self) -> list[str]:
        return [name for name, shape in self.shapes.items() if len(shape) >= 2]

    @property
    def n_weights(self) -> int:
        return sum(math.prod(shape) for shape in self.shapes.values())

    def _head_bytes(self) -> int:
        """Header, key/value section with the recipe key (entries not counted), tensor infos."""
        infos = sum(8 + len(name) + 4 + 8 * len(shape) + 4 + 8 for name, shape in self.shapes.items())
        return HEADER_BYTES + self.kv_bytes + recipes.key_bytes() + infos

    def _vector_bytes(self) -> int:
        return sum(data_bytes(shape, Q.F32) for shape in self.shapes.values() if len(shape) < 2)

    def fixed_bytes(self) -> int:
        """Everything but the matrices' data and recipe entries, with the header's alignment
        padding counted at its worst (31 bytes): the chosen file never exceeds the budget."""
        return self._head_bytes() + ALIGNMENT - 1 + self._vector_bytes()

    def tensor_bytes(self, name: str, qtype: gguf.GGMLQuantizationType) -> int:
        """What giving `name` the type `qtype` adds to the file: its data and its recipe entry."""
        return data_bytes(self.shapes[name], qtype) + recipes.entry_bytes(name, qtype)

    def file_bytes(self, recipe: dict[str, gguf.GGMLQuantizationType]) -> int:
        """The exact size of the file with `recipe` (and the recipe key) written."""
        head = self._head_bytes() + sum(recipes.entry_bytes(name, qtype) for name, qtype in recipe.items())
        return pad(head) + sum(data_bytes(shape, recipe.get(name, Q.F32)) for name, shape in self.shapes.items())

    def options(self, name: str) -> list[gguf.GGMLQuantizationType]:
        """The types `name` can get (after llama.cpp's row-size fallback), fewest bytes first."""
        return sorted(candidate_types(self.shapes[name][-1]), key=lambda q: self.tensor_bytes(name, q))


def model_layout(config: MythosConfig, kv_bytes: int) -> Layout:
    """The tensors of the tied GGUF file `mythos-convert gguf` writes for `config`, in its order."""
    native = native_shapes(config)
    names = expected_names("gguf", config.n_layers)
    return Layout({name: native[convert_name(name, "gguf", "native")] for name in names}, kv_bytes)


@dataclass(frozen=True)
class Choice:
    """One budget's answer: the recipe, the file's exact size and the summed predicted cost."""

    recipe: dict[str, gguf.GGMLQuantizationType]
    target_bytes: int
    file_bytes: int
    cost: float
    bpw: float


def reachable(layout: Layout) -> tuple[int, int]:
    """The smallest budget the candidate types meet, and the all-F16 file (the largest that makes sense)."""
    low = layout.fixed_bytes() + sum(layout.tensor_bytes(n, layout.options(n)[0]) for n in layout.matrices)
    return low, layout.file_bytes(dict.fromkeys(layout.matrices, Q.F16))


def target_bytes(layout: Layout, *, bpw: float | None = None, size: int | None = None) -> int:
    """A budget in bytes from bits per weight (over every weight in the file, header included) or a size.

    Raises:
        MythosError: neither or both given, or a budget outside what the file can be.
    """
    if (bpw is None) == (size is None):
        raise MythosError("pass one of --target-bpw or --target-size for each searched file")
    if bpw is not None and not math.isfinite(bpw):
        raise MythosError(f"--target-bpw {bpw} is not a number of bits per weight: pass e.g. --target-bpw 4.5")
    target = int(bpw * layout.n_weights / 8) if bpw is not None else int(size)
    low, high = reachable(layout)
    if not low <= target <= high:
        asked = f"{bpw} bits per weight ({target:,} bytes)" if bpw is not None else f"{target:,} bytes"
        raise MythosError(
            f"a target of {asked} is out of reach: this model's files can be {low:,} to {high:,} bytes "
            f"({_bpw(layout, low):.3f} to {_bpw(layout, high):.3f} bits per weight, smallest types to F16); "
            "pass a target in that range"
        )
    return target


def _bpw(layout: Layout, nbytes: int) -> float:
    return 8 * nbytes / layout.n_weights


def choose(layout: Layout, sens: Sensitivity, budget: int) -> Choice:
    """The recipe of least summed cost whose file is at most `budget` bytes (`target_bytes` checks it)."""
    names = layout.matrices
    options = [layout.options(name) for name in names]
    sizes = [np.array([layout.tensor_bytes(n, q) for q in opts]) for n, opts in zip(names, options, strict=True)]
    costs = [np.array([sens.costs[n][q] for q in opts]) for n, opts in zip(names, options, strict=True)]
    spare = budget - layout.fixed_bytes() - sum(int(s[0]) for s in sizes)
    if spare < 0:
        raise MythosError(f"a target of {budget:,} bytes is below the smallest file this model allows")
    span = sum(int(s[-1] - s[0]) for s in sizes)
    unit = max(1, -(-span // RESOLUTION))
    picks = _knapsack([-(-(s - s[0]) // unit) for s in sizes], costs, spare // unit)
    recipe = {name: opts[k] for name, opts, k in zip(names, options, picks, strict=True)}
    nbytes = layout.file_bytes(recipe)
    assert nbytes <= budget, (nbytes, budget)
    cost = float(sum(c[k] for c, k in zip(costs, picks, strict=True)))
    return Choice(recipe, budget, nbytes, cost, _bpw(layout, nbytes))


def _knapsack(units: Sequence[np.ndarray], costs: Sequence[np.ndarray], capacity: int) -> list[int]:
    """Multiple-choice knapsack: one option per item, summed units <= capacity, least summed cost.

    best[b] is the least cost of the items so far using exactly b units; `took` records each
    item's option per b for the walk back.
    """
    best = np.full(capacity + 1, np.inf)
    best[0] = 0.0
    took = []
    for item_units, item_costs in zip(units, costs, strict=True):
        new = np.full(capacity + 1, np.inf)
        pick = np.zeros(capacity + 1, dtype=np.int16)
        for k, (u, c) in enumerate(zip(item_units.tolist(), item_costs.tolist(), strict=True)):
            if u > capacity:
                continue
            trial = best[: capacity + 1 - u] + c
            better = trial < new[u:]
            new[u:][better], pick[u:][better] = trial[better], k
        best = new
        took.append(pick)
    b = int(np.argmin(best))
    if not np.isfinite(best[b]):
        raise ValueError("no choice fits the capacity: every item needs an option of 0 units")
    picks = []
    for item_units, pick in zip(reversed(units), reversed(took), strict=True):
        k = int(pick[b])
        picks.append(k)
        b -= int(item_units[k])
    return picks[::-1]


def search(
    model: Mythos,
    layout: Layout,
    calibration: Sequence[np.ndarray],
    budgets: Sequence[int],
    imatrix: dict[str, np.ndarray] | None = None,
    *,
    method: str = "hybrid",
) -> list[Choice]:
    """Measure every matrix's sensitivity once on `calibration` windows, then choose a recipe per
    budget (bytes, from `target_bytes`). Score the choices on other text (`sensitivity.file_kl`)."""
    sens = measure(model, layout.matrices, calibration, imatrix, method=method)
    return [choose(layout, sens, budget) for budget in budgets]
