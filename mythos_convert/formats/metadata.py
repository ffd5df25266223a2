"""The release's own words: the metadata YAML a card and a GGUF's `general.*` keys are made from.

License, developer, widget prompts, sampling settings, limitations and citation come from
`model_card/mythos.yaml` (packaged) or the user's `--meta FILE`. A hostile or careless file is
refused here, once, for every user: YAML aliases are bounded (no billion laughs), keys are known,
every value has its type. Below both `card` and `convert` (the GGUF writer reads it too).
"""

from __future__ import annotations

import math
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from mythos_convert.errors import MythosError
from mythos_convert.model.config import bounded_yaml_load, short_repr
from mythos_convert.support.safe_paths import require_file

DEFAULT_META_NAME = "mythos.yaml"

# The keys a metadata YAML may hold, with the types each accepts (None = may be null).
META_SCHEMA: dict[str, tuple[type, ...]] = {
    "model_name": (str,),
    "description": (str, type(None)),
    "developer": (str, type(None)),
    "license": (str,),
    "language": (str, list),
    "repo_url": (str, type(None)),
    "hub_repo": (str, type(None)),
    "gguf_repo": (str, type(None)),
    "base_model": (str, list, type(None)),
    "datasets": (list, type(None)),
    "dataset_name": (str, type(None)),
    "tags": (list, type(None)),
    "widget": (list, type(None)),
    "inference": (dict, type(None)),
    "limitations": (list, str, type(None)),
    "citation": (str, type(None)),
}
INFERENCE_KEYS = {"temperature": float, "top_p": float, "max_new_tokens": int}
# Keys whose list form must hold strings only (the template prints each entry as text).
LIST_OF_STRINGS = ("language", "base_model", "datasets", "tags", "widget", "limitations")
DEFAULT_META: dict[str, Any] = {"model_name": "Mythos", "license": "apache-2.0", "language": "en"}


def default_meta_path() -> Path:
    """The release metadata shipped in the package (found in editable and normal installs)."""
    return Path(str(resources.files("mythos_convert.model_card").joinpath(DEFAULT_META_NAME)))


def load_meta(path: str | Path | None = None) -> dict[str, Any]:
    """Read and validate a card metadata YAML (the packaged `mythos.yaml` when `path` is None).

    Returns the defaults overlaid with the file's keys. Raises MythosError for a missing file,
    bad YAML, unknown keys or wrong types, naming the file and the key.
    """
    path = Path(path) if path is not None else default_meta_path()
    require_file(path, "card metadata", "pass --meta with a YAML file")
    try:
        data = bounded_yaml_load(path.read_text(encoding="utf-8"), f"card metadata {path}")
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        mark, problem = getattr(exc, "problem_mark", None), getattr(exc, "problem", None) or str(exc)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        reason = " ".join(str(problem).split())[:120]
        raise MythosError(f"card metadata {path} is not valid YAML{where} ({reason}): fix the file") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise MythosError(
            f"card metadata {path} must be a YAML mapping of keys, got {type(data).__name__}: "
            "write `key: value` lines (see mythos_convert/model_card/mythos.yaml)"
        )
    unknown = sorted(set(map(str, data)) - set(META_SCHEMA))
    if unknown:
        raise MythosError(
            f"card metadata {path} has unknown key(s) {short_repr(unknown)}: remove or rename them; "
            f"known keys: {sorted(META_SCHEMA)}"
        )
    for key, value in data.items():
        if not isinstance(value, META_SCHEMA[key]):
            kinds = " or ".join("null" if t is type(None) else t.__name__ for t in META_SCHEMA[key])
            raise MythosError(f"card metadata {path}: {key} must be {kinds}, got {type(value).__name__}: fix {key}")
    _check_inference(path, data.get("inference"))
    for key in LIST_OF_STRINGS:
        if isinstance(data.get(key), list) and any(not isinstance(v, str) for v in data[key]):
            raise MythosError(f"card metadata {path}: every entry of {key} must be a string: quote or fix them")
    return {**DEFAULT_META, **{k: v for k, v in data.items() if v is not None}}


def _check_inference(path: Path, inference: dict | None) -> None:
    if not inference:
        return
    unknown = sorted(set(inference) - set(INFERENCE_KEYS))
    if unknown:
        raise MythosError(
            f"card metadata {path}: unknown inference key(s) {short_repr(unknown)}: remove them; "
            f"known: {sorted(INFERENCE_KEYS)}"
        )
    for key, kind in INFERENCE_KEYS.items():
        value = inference.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise MythosError(
                f"card metadata {path}: inference.{key} must be a number, got {short_repr(value)}: fix inference.{key}"
            )
        if value is not None and not math.isfinite(value):
            raise MythosError(f"card metadata {path}: inference.{key} must be finite, got {value}: fix inference.{key}")
        if value is not None and kind is int and int(value) != value:
            raise MythosError(
                f"card metadata {path}: inference.{key} must be a whole number, got {value!r}: fix inference.{key}"
            )
