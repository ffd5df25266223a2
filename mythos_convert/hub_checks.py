"""Checks a folder must pass before `push` publishes it; every failure is listed, not just the first.

A published repo is what people download, so it must load: the config and tokenizer through
transformers (locally, no network), weights consistent with their index and headers, a card whose
front matter the Hub will accept, and a last `verify` run that passed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from mythos_convert.card import CARD_FILE, card_problems
from mythos_convert.errors import MythosError
from mythos_convert.verify.record import RESULTS_FILE, load_results
from mythos_convert.weights_index import INDEX_FILE, read_header, read_index

_SPLIT_PART = re.compile(r"-(?!00001)\d{5}-of-\d{5}\.gguf$")  # a later shard of a split GGUF: verified via the first


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def check_config(folder: Path) -> list[str]:
    if not (folder / "config.json").is_file():
        return ["config.json is missing: export the folder with `mythos-convert hf`"]
    try:
        from transformers import AutoConfig

        AutoConfig.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:
        return [f"config.json does not load with transformers AutoConfig: {_first_line(exc)}"]
    return []


def _file_problems(folder: Path, name: str) -> tuple[dict[str, dict], list[str]]:
    """Header of one weights file plus problems: unreadable, or shorter than its header promises."""
    path = folder / name
    if not path.is_file():
        return {}, [f"weights file {name} is missing"]
    try:
        header = read_header(path)
    except MythosError as exc:
        return {}, [str(exc)]
    end = max((int(t["data_offsets"][1]) for t in header.values() if "data_offsets" in t), default=0)
    with path.open("rb") as fh:
        header_len = int.from_bytes(fh.read(8), "little")
    if path.stat().st_size < 8 + header_len + end:
        return header, [
            f"weights file {name} is truncated ({path.stat().st_size} bytes, header needs {8 + header_len + end})"
        ]
    return header, []


def check_weights(folder: Path) -> list[str]:
    """Every index entry's file exists and holds that tensor; every stored tensor is indexed; sizes add up."""
    index = folder / INDEX_FILE
    if not index.is_file():
        files = sorted(p.name for p in folder.glob("*.safetensors"))
        if not files:
            return ["no model weights: the folder has no *.safetensors file"]
        problems: list[str] = []
        for name in files:
            problems += _file_problems(folder, name)[1]
        return problems
    try:
        weight_map = read_index(folder)
    except MythosError as exc:
        return [str(exc)]
    problems = []
    stored: dict[str, str] = {}
    total = 0
    for name in sorted(set(weight_map.values())):
        header, file_problems = _file_problems(folder, name)
        problems += file_problems
        for tensor, entry in header.items():
            stored[tensor] = name
            total += int(entry["data_offsets"][1]) - int(entry["data_offsets"][0])
    if not any(p.startswith("weights file") and "missing" in p for p in problems):
        missing = sorted(t for t, f in weight_map.items() if stored.get(t) != f)
        if missing:
            problems.append(f"{INDEX_FILE} lists {len(missing)} tensor(s) not in their shard, e.g. {missing[0]}")
    unindexed = sorted(set(stored) - set(weight_map))
    if unindexed:
        problems.append(f"{len(unindexed)} stored tensor(s) are not in {INDEX_FILE}, e.g. {unindexed[0]}")
    declared = json.loads(index.read_text()).get("metadata", {}).get("total_size")
    if isinstance(declared, int) and declared != total and not problems:
        problems.append(f"{INDEX_FILE} declares total_size {declared} but the shards hold {total} bytes")
    return problems


def check_tokenizer(folder: Path) -> list[str]:
    if not (folder / "tokenizer.json").is_file():
        return ["tokenizer.json is missing: export the folder with `mythos-convert hf`"]
    try:
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:
        return [f"the tokenizer does not load with transformers AutoTokenizer: {_first_line(exc)}"]
    return []


def check_card(folder: Path) -> list[str]:
    path = folder / CARD_FILE
    if not path.is_file():
        return [f"{CARD_FILE} (the model card) is missing: run `mythos-convert card {folder}`"]
    return card_problems(path.read_text(encoding="utf-8"))


def check_verify(folder: Path, uploaded: set[str] | None = None) -> list[str]:
    """The last verify must exist and pass, for the HF export and for every GGUF that will be uploaded."""
    results = load_results(folder)
    if not results:
        return [f"the folder was never verified (no {RESULTS_FILE}): run `mythos-convert verify` on it first"]
    problems = []
    for target, entry in sorted(results.items()):
        if uploaded is not None and target != "hf" and target not in uploaded:
            continue
        if not isinstance(entry, dict) or entry.get("passed") is not True:
            detail = ""
            if isinstance(entry, dict) and entry.get("max_abs_diff") is not None:
                detail = f" (max abs diff {entry.get('max_abs_diff')} vs tolerance {entry.get('tolerance')})"
            problems.append(f"the last verify of {target} failed{detail}: fix the export and rerun verify")
    for name in sorted(uploaded or ()):
        if name.endswith(".gguf") and name not in results and not _SPLIT_PART.search(name):
            problems.append(f"{name} was never verified: run `mythos-convert verify` on it (or --exclude it)")
    return problems


def check_folder(folder: str | Path, uploaded: set[str] | None = None) -> list[str]:
    """All problems that should stop a push ([] when the folder is fit to publish)."""
    folder = Path(folder)
    if not folder.is_dir():
        return [f"{folder} is not a folder"]
    problems: list[str] = []
    for check in (check_config, check_weights, check_tokenizer, check_card):
        problems += check(folder)
    problems += check_verify(folder, uploaded)
    return problems
