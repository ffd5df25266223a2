"""Where eval results live: `eval.json` beside `verify.json`, one entry per target, bound to its files.

The card's "Files" table shows an entry only while the sha256 of every file it measured matches
the folder's files now (the binding `verify.record` uses for verify.json), so a re-quantized file
never inherits the old file's figures. Schema:

    {"version": 1,
     "results": {"hf": {...}, "mythos-tiny-Q4_K_M.gguf": {...}}}

An entry holds `kind` ("hf" or "gguf"), `engine`, `type`, `perplexity`, `mean_nll`, `scored_tokens`,
`windows`, `ctx`, `method`, `dataset`, `tokens_per_second`, `kl` (mean/median/p99/max/top-1, or
null), `delta_perplexity`, `reference` ({"name", "perplexity"} or null), `size`, `bits_per_weight`,
`timestamp` and `files` ({name: {"sha256", "size"}}). Non-finite numbers are stored as the strings
"NaN"/"Infinity" so the published file is strict JSON.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import gguf

from mythos_convert.errors import MythosError
from mythos_convert.formats.gguf_files import shard_names
from mythos_convert.names import CONFIG_KEY
from mythos_convert.quant.recipe import KEY_RECIPE, KEY_TARGET
from mythos_convert.source import gguf_readers
from mythos_convert.support.strict_json import write_strict_json
from mythos_convert.verify.record import is_bound

EVAL_FILE = "eval.json"
EVAL_VERSION = 1


@dataclass(frozen=True)
class GGUFHeader:
    """What eval and the card need from a GGUF file's header (and its shards')."""

    label: str  # F16, Q4_K_M, ...; a searched file's target (bpw4.50)
    context: int
    tokens: list[str]
    n_elements: int
    tensor_bytes: int
    shards: list[str]  # file names, the first one included
    recipe: tuple[str, ...] = ()  # a searched file's `NAME=TYPE` entries (`quant/recipe.py`)

    @property
    def recipe_summary(self) -> str | None:
        """A searched file's types and how many matrices have each, most first (`Q4_K x9, Q6_K x2`)."""
        counts: dict[str, int] = {}
        for entry in self.recipe:
            qtype = entry.rpartition("=")[2]
            counts[qtype] = counts.get(qtype, 0) + 1
        ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        return ", ".join(f"{qtype} x{n}" for qtype, n in ranked) or None

    @property
    def bits_per_weight(self) -> float:
        """Bits of tensor data per stored weight, as llama.cpp's loader prints its BPW."""
        return 8.0 * self.tensor_bytes / self.n_elements if self.n_elements else math.nan


def file_type_label(file_type: int) -> str:
    """llama.cpp's name of a file type as `--outtype` labels it (MOSTLY_Q4_K_M -> Q4_K_M), without
    importing the converter (and torch) for a card."""
    try:
        name = gguf.LlamaFileType(file_type).name
    except ValueError:
        return f"file_type {file_type}"
    return name.removeprefix("MOSTLY_").removeprefix("ALL_")


def _field(reader: gguf.GGUFReader, key: str) -> Any:
    found = reader.get_field(key)
    return found.contents() if found is not None else None


def read_gguf_header(path: str | Path, tokens: bool = True) -> GGUFHeader:
    """Type, context, vocabulary and tensor sizes of a GGUF file, read with gguf-py (no llama.cpp).

    Raises:
        MythosError: not a GGUF file, or one without the keys `mythos-convert gguf` writes.
    """
    path = Path(path)
    try:
        readers = gguf_readers(path)
        reader = readers[0]
        file_type = int(_field(reader, gguf.Keys.General.FILE_TYPE))
        arch = str(_field(reader, gguf.Keys.General.ARCHITECTURE))
        context = int(_field(reader, CONFIG_KEY["max_seq_len"].gguf_keys(arch)[0]))
        vocab = list(_field(reader, gguf.Keys.Tokenizer.LIST)) if tokens else []
        split = _field(reader, gguf.Keys.Split.LLM_KV_SPLIT_COUNT)
        target, recipe = _field(reader, KEY_TARGET), _field(reader, KEY_RECIPE)
    except Exception as exc:  # gguf-py raises ValueError, KeyError, struct errors... on a foreign file
        raise MythosError(
            f"{path} is not a GGUF model file mythos-convert can read ({type(exc).__name__}: {str(exc)[:80]}): "
            "pass a .gguf file written by `mythos-convert gguf`"
        ) from exc
    shards = shard_names(path.name, int(split) if split else 1)
    n_elements = sum(int(t.n_elements) for part in readers for t in part.tensors)
    tensor_bytes = sum(int(t.n_bytes) for part in readers for t in part.tensors)
    if target is not None:  # types chosen by measurement: the target names it (its file type is Q8_0)
        return GGUFHeader(str(target), context, vocab, n_elements, tensor_bytes, shards, tuple(map(str, recipe or ())))
    return GGUFHeader(file_type_label(file_type), context, vocab, n_elements, tensor_bytes, shards)


def load_eval(folder: str | Path) -> dict[str, dict[str, Any]]:
    """All recorded eval results of a folder; {} when there are none or eval.json is damaged
    (the card then shows no figures, and the next eval replaces the file)."""
    path = Path(folder) / EVAL_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        results = data["results"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return {k: v for k, v in results.items() if isinstance(v, dict)} if isinstance(results, dict) else {}


def record_eval(folder: str | Path, entries: dict[str, dict[str, Any]]) -> Path:
    """Store each target's result (replacing its previous one), atomically; return eval.json's path."""
    folder = Path(folder)
    results = load_eval(folder)
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    for name, entry in entries.items():
        results[name] = {"timestamp": stamp, **entry}
    path = folder / EVAL_FILE
    return write_strict_json(path, {"version": EVAL_VERSION, "results": dict(sorted(results.items()))}, sort_keys=True)


def bound_eval(folder: str | Path) -> dict[str, dict[str, Any]]:
    """The recorded results whose files all still match (sha256) the folder's files now."""
    return {name: entry for name, entry in load_eval(folder).items() if is_bound(folder, entry)}
