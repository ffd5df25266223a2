"""Where verify results live: `verify.json` in the exported folder, one entry per target.

The card shows the last results, and `push` refuses a folder whose last verify failed. Schema:

    {"version": 1,
     "results": {"hf": {...}, "mythos-tiny-F16.gguf": {...}}}

Each result is a flat dict: `passed` (bool), `target`, `kind` ("hf" or "gguf"), `dtype`,
`max_abs_diff`, `mean_abs_diff`, `argmax_agreement` (0..1), `greedy_equal` (bool or null),
`tolerance`, `tokenizer_agreement` (0..1 or null), `n_tokens`, `checkpoint`, `timestamp` (ISO),
plus any extra fields the verifier adds.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mythos_convert.atomic import atomic_file

RESULTS_FILE = "verify.json"


def load_results(folder: str | Path) -> dict[str, dict[str, Any]]:
    """All recorded results of a folder (empty when it was never verified)."""
    path = Path(folder) / RESULTS_FILE
    if not path.is_file():
        return {}
    try:
        return dict(json.loads(path.read_text()).get("results", {}))
    except (json.JSONDecodeError, AttributeError):
        return {}


def record_result(folder: str | Path, target: str, result: dict[str, Any]) -> Path:
    """Store one target's result (replacing its previous one), atomically."""
    folder = Path(folder)
    results = load_results(folder)
    entry = dict(result)
    entry.setdefault("timestamp", datetime.now(timezone.utc).isoformat(timespec="seconds"))
    results[target] = entry
    path = folder / RESULTS_FILE
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps({"version": 1, "results": results}, indent=2, sort_keys=True) + "\n")
    return path
