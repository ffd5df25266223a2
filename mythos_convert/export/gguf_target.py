"""`gguf --target-bpw 3.5,4.5 --target-size 95MB`: one file per budget, its types chosen by measurement.

The budgets are read and checked against the sizes this model's files can have before anything
is measured. Then the native float32 model measures every matrix's sensitivity once on
calibration windows (`quant/sensitivity.py`, method `hybrid`), the knapsack (`quant/search.py`)
chooses a recipe per budget, and each recipe's mean KL from the float32 model is measured on
scoring windows: the windows after the calibration ones in the same text, never the same
tokens. The text is `--data`, else the run's validation split, else the embedded corpus's
(`data/held_out.py`), as `imatrix` and `eval` take it.

Each budget's size counts the file as the writer will write it: the key/value section is that of
a writer holding every key of this output (`gguf_header.add_keys`), the recipe added by the search.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import gguf
import numpy as np
from tokenizers import Tokenizer

from mythos_convert.errors import MythosError
from mythos_convert.export.gguf_header import GGUFMetadata, ImatrixInfo, add_keys
from mythos_convert.export.gguf_plan import OutType, parse_size, searched_outtype
from mythos_convert.export.gguf_vocab import GGUFVocab
from mythos_convert.names import GGUF_ARCH
from mythos_convert.source import ModelSource
from mythos_convert.support.ui import info

if TYPE_CHECKING:  # the search imports torch: only a run with a target loads it (`gguf` without one stays torch-free)
    from mythos_convert.quant.search import Choice, Layout

CTX = 128  # tokens per calibration / scoring window (capped at the model's context)
WINDOWS = 8  # calibration windows; as many scoring windows follow them


@dataclass(frozen=True)
class Target:
    """One requested budget: `label` names the file (`bpw4.50`, `size95MB`)."""

    label: str
    bpw: float | None = None
    size: int | None = None


@dataclass
class Searched:
    """One budget's answer: the output to write, the search's choice, its KL on the scoring windows
    (native float32 model with the file's weights dequantized), and the llama-quantize command
    that writes the same file (set once its name is known)."""

    target: Target
    outtype: OutType
    choice: Choice
    scored_kl: float
    calibration: str  # what text, which windows
    command: str = ""


def parse_targets(bpw: str | None, size: str | None) -> list[Target]:
    """`--target-bpw 3.5,4.5` and `--target-size 95MB,120M` -> the targets, in that order.

    Raises:
        MythosError: an item that is not a number of bits or a size.
    """
    targets: list[Target] = []
    for item in _items(bpw):
        try:
            value = float(item)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise MythosError(f"--target-bpw {item!r} is not a number of bits per weight: write e.g. --target-bpw 4.5")
        targets.append(Target(f"bpw{value:.2f}", bpw=value))
    for item in _items(size):
        nbytes = parse_size(item)
        targets.append(Target(f"size{_size_text(nbytes)}", size=nbytes))
    return list({t.label: t for t in targets}.values())


def _items(text: str | None) -> list[str]:
    return [item.strip() for item in (text or "").split(",") if item.strip()]


def _size_text(nbytes: int) -> str:
    """95000000 -> `95MB`, 1500 -> `1.5KB` (decimal, as --target-size and gguf-split read sizes)."""
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if nbytes >= scale:
            return f"{nbytes / scale:g}{unit}"
    return f"{nbytes}B"


def target_layout(
    source: ModelSource, vocab: GGUFVocab, meta: GGUFMetadata, target: Target, imatrix: ImatrixInfo | None
) -> Layout:
    """The file of `target` as the search counts it: its tensors and every key but the recipe."""
    from mythos_convert.quant import search

    writer = gguf.GGUFWriter(None, GGUF_ARCH)
    add_keys(writer, searched_outtype(target.label, {}), [], source.config, vocab, meta, imatrix)
    return search.model_layout(source.config, search.kv_section_bytes(writer))


def search_targets(
    source: ModelSource,
    tokenizer: Tokenizer,
    vocab: GGUFVocab,
    meta: GGUFMetadata,
    targets: list[Target],
    *,
    imatrix: ImatrixInfo | None = None,
    data: list | None = None,
) -> list[Searched]:
    """A recipe for each target (see the module docstring).

    Raises:
        MythosError: a budget outside what this model's files can be (naming the range), or too
            little text for one calibration and one scoring window.
    """
    from mythos_convert.quant import search

    layouts = [target_layout(source, vocab, meta, t, imatrix) for t in targets]
    budgets = [search.target_bytes(lay, bpw=t.bpw, size=t.size) for lay, t in zip(layouts, targets, strict=True)]
    calibration, scoring, described = _windows(tokenizer, source, data)
    info(f"type search: calibrating on {described}")
    import torch  # only when searching

    from mythos_convert.formats.checkpoint import load_model
    from mythos_convert.quant import sensitivity

    model = load_model(source.as_checkpoint(), torch.float32)
    weights = imatrix.weights if imatrix is not None else None
    sens = sensitivity.measure(model, layouts[0].matrices, calibration, weights)
    out = []
    for target, layout, budget in zip(targets, layouts, budgets, strict=True):
        choice = search.choose(layout, sens, budget)
        kl = sensitivity.file_kl(model, choice.recipe, scoring, weights)
        out.append(Searched(target, searched_outtype(target.label, choice.recipe), choice, kl, described))
    return out


def _windows(
    tokenizer: Tokenizer, source: ModelSource, data: list | None
) -> tuple[list[np.ndarray], list[np.ndarray], str]:
    """Calibration windows, then scoring windows from the text after them (at most WINDOWS each).

    Both come from the end of the text, because `eval` scores windows from its beginning: `eval`
    of the same text with fewer windows than it holds, less these, never scores text a searched
    file's types were chosen on.
    """
    from mythos_convert.data.held_out import held_out_tokens, windows

    text = held_out_tokens(tokenizer, data, source.run_folder)
    ctx = min(CTX, source.config.max_seq_len)
    cut = windows(text.tokens[-2 * WINDOWS * ctx :], ctx, 2 * WINDOWS, what="calibration")
    if len(cut) < 2:
        raise MythosError(
            f"the calibration text has {text.tokens.size} tokens: the type search needs two windows of {ctx} "
            f"(one to choose on, one to score on); pass a longer text with --data (at least {2 * ctx} tokens)"
        )
    half = len(cut) // 2
    described = (
        f"the last {len(cut) * ctx:,} tokens of {text.description}: "
        f"{half} windows of {ctx} to choose on, {len(cut) - half} to score on"
    )
    return cut[:half], cut[half:], described
