"""Checks a folder must pass before `push` publishes it; every failure is listed, not just the first.

A published repo is what people download, so it must load: the config and tokenizer through
transformers (locally, no network), weights consistent with their index and headers, a card whose
front matter the Hub will accept, and a last `verify` run that passed on these very files (their
sha256 as recorded in verify.json).
"""

from __future__ import annotations

import json
from pathlib import Path

from mythos_convert.card import CARD_FILE, card_problems
from mythos_convert.data.tokenizer import TOKENIZER_FILE, load_tokenizer
from mythos_convert.errors import MythosError
from mythos_convert.formats.gguf_files import is_later_shard
from mythos_convert.formats.hf_folder import CONFIG_FILE
from mythos_convert.formats.safetensors import INDEX_FILE, read_header, read_index
from mythos_convert.support.safe_paths import scan_folder
from mythos_convert.verify.record import RESULTS_FILE, Digests, changed_files, load_results, needs_verify


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def check_config(folder: Path) -> list[str]:
    if not (folder / CONFIG_FILE).is_file():
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
    if not (folder / TOKENIZER_FILE).is_file():
        return ["tokenizer.json is missing: export the folder with `mythos-convert hf`"]
    try:  # the checks every command's reader makes (e.g. one id given to two tokens)
        load_tokenizer(folder / TOKENIZER_FILE, fix="re-export the folder with `mythos-convert hf`")
    except MythosError as exc:
        return [str(exc)]
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


def _verify_command(folder: Path, target: str) -> str:
    """The command that re-verifies one target of verify.json."""
    return f"mythos-convert verify {folder if target == 'hf' else folder / target}"


def _target_uploaded(target: str, uploaded: set[str]) -> bool:
    """Does the push publish this verify target: the HF export, a GGUF file, or any file of a
    folder target (an MLX folder, recorded as `mlx-4bit/`)?"""
    if target == "hf" or target in uploaded:
        return True
    return target.endswith("/") and any(name.startswith(target) for name in uploaded)


def check_verify(folder: Path, uploaded: set[str] | None = None, digests: Digests | None = None) -> list[str]:
    """The last verify must exist, pass and still match the files, for the HF export and every GGUF uploaded.

    A result binds the sha256 of each file it checked (`verify.record`); each uploaded file is
    re-hashed (or its hash taken from `digests`, a push's copy hashed as it was made) and one
    changed since is refused, as is a result with no hashes (an older verify.json). With
    `uploaded` (the push's file list), a weight, config or tokenizer file that no passing result
    covers is listed as never verified.
    """
    try:
        results = load_results(folder, strict=True)
    except MythosError as exc:
        return [str(exc)]
    if not results:
        return [f"the folder was never verified (no {RESULTS_FILE}): run `mythos-convert verify` on it first"]
    problems = []
    covered: set[str] = set()
    reported: set[str] = set()  # targets already refused: their files are not listed again as unverified
    for target, entry in sorted(results.items()):
        if uploaded is not None and not _target_uploaded(target, uploaded):
            continue
        command = _verify_command(folder, target)
        if not isinstance(entry, dict) or entry.get("passed") is not True:
            detail = ""
            if isinstance(entry, dict) and entry.get("max_abs_diff") is not None:
                detail = f" (max abs diff {entry.get('max_abs_diff')} vs tolerance {entry.get('tolerance')})"
            problems.append(f"the last verify of {target} failed{detail}: fix the export and rerun verify")
            reported.add(target)
            continue
        files = entry.get("files")
        if not isinstance(files, dict) or not files:
            problems.append(
                f"the verify result of {target} records no file hashes ({RESULTS_FILE} from an older "
                f"mythos-convert): re-run verify, `{command}`"
            )
            reported.add(target)
            continue
        covered |= set(files)
        changed = changed_files(folder, files, None if uploaded is None else uploaded, digests)
        if changed:
            problems.append(f"{', '.join(changed)} changed since `verify` checked it ({target}): re-run `{command}`")
    for name in sorted(uploaded or ()):
        if name.endswith(".gguf") and name not in results and not is_later_shard(name):
            problems.append(f"{name} was never verified: run `mythos-convert verify` on it (or --exclude it)")
    refused_folders = tuple(t for t in reported if t.endswith("/"))  # their files are named by that refusal
    if "hf" not in reported:
        unverified = sorted(
            n
            for n in uploaded or ()
            if needs_verify(n) and not n.endswith(".gguf") and n not in covered and not n.startswith(refused_folders)
        )
        if unverified:
            verified = sorted(n for n in uploaded or () if n in covered)
            problems.append(
                f"{len(unverified)} file(s) were never verified: {', '.join(unverified)}"
                + (f" (verified: {', '.join(verified)})" if verified else "")
                + f": run `{_verify_command(folder, 'hf')}` (or --exclude them)"
            )
    return problems


def check_folder(folder: str | Path, uploaded: set[str] | None = None, digests: Digests | None = None) -> list[str]:
    """All problems that should stop a push ([] when the folder is fit to publish); `digests`: see check_verify."""
    folder = Path(folder)
    if not folder.is_dir():
        return [f"{folder} is not a folder"]
    problems: list[str] = []
    for check in (check_config, check_weights, check_tokenizer, check_card):
        problems += check(folder)
    problems += check_verify(folder, uploaded, digests)
    return problems


def check_inputs(folder: Path, uploaded: set[str]) -> list[str]:
    """The files of `folder` the checks read besides the uploaded ones: every file but the GGUF files
    not uploaded (no check reads a GGUF it does not publish). A push copies them with the upload."""
    files, _ = scan_folder(folder)
    return [rel for rel in files if rel not in uploaded and not rel.endswith(".gguf")]
