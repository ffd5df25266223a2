"""Results written as strict JSON: non-finite numbers kept, as the strings "NaN" / "Infinity".

JSON has no NaN, yet a NaN logit or perplexity is a result to record, not to drop; `json.dumps`
would write the bare token `NaN`, which strict readers (the Hub's, browsers') refuse. Every
record file (verify.json, eval.json) goes through `write_strict_json`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from mythos_convert.support.atomic import atomic_file


def strict(value: Any) -> Any:
    """`value` with every non-finite float (in dicts, lists and tuples too) as "NaN", "Infinity" or "-Infinity"."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict(v) for v in value]
    return value


def write_strict_json(path: Path, payload: Any, *, sort_keys: bool = False) -> Path:
    """`payload` as indented strict JSON with a final newline, written atomically; returns `path`."""
    with atomic_file(path) as tmp:
        text = json.dumps(strict(payload), indent=2, sort_keys=sort_keys, allow_nan=False)
        tmp.write_text(text + "\n", encoding="utf-8")
    return path
