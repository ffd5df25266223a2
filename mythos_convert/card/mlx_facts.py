"""What the card states about the MLX folders beside the export, and which runtimes were checked how.

The MLX rows join the GGUF rows of the "Files" table and the chart: each folder's type, size and
bits/weight from its files, and perplexity, mean KL divergence and top-1 agreement from the last
eval whose sha256 binding still matches its files (eval.json under `mlx-<bits>bit/`).

The runtime table says, for each runtime the card names, how this folder was checked in it: run
with parity figures (the verify.json results bound to the files now), checked statically, or not
checked. Runtimes checked by the test suite rather than on this folder say so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mythos_convert.errors import MythosError
from mythos_convert.evaluate.record import bound_eval
from mythos_convert.mlx.folder import mlx_subfolders, read_mlx_folder
from mythos_convert.support.ui import human_size


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def mlx_rows(folder: Path) -> list[dict[str, Any]]:
    """One row per MLX folder (`mlx-4bit/`, `mlx-8bit/`), shaped as `facts.file_rows`'s GGUF rows."""
    evals = bound_eval(folder)
    rows = []
    for path in mlx_subfolders(folder):
        try:
            mlx = read_mlx_folder(path)
        except MythosError:  # a config that does not map: the card lists only what it can describe
            continue
        entry = evals.get(f"{path.name}/") or {}
        kl = entry.get("kl") if isinstance(entry.get("kl"), dict) else {}
        rows.append(
            {
                "name": f"{path.name}/",
                "format": "MLX",
                "type": mlx.label,
                "bits": mlx.bits,
                "size": mlx.size,
                "size_h": human_size(mlx.size),
                "bits_per_weight": mlx.bits_per_weight,
                "perplexity": _number(entry.get("perplexity")),
                "mean_kl": _number(kl.get("mean_kl")),
                "top1": _number(kl.get("top1_agreement")),
                "engine": entry.get("engine"),
            }
        )
    return rows


def runtime_rows(verify: list[dict[str, Any]], has_gguf: bool, has_modelfile: bool) -> list[dict[str, str]]:
    """The runtime table: (runtime, files, how checked), from the bound verify rows (`facts.verify_rows`)."""
    hf = next((r for r in verify if r["target"] == "hf"), None)
    ggufs = [r for r in verify if r["target"].endswith(".gguf")]
    mlx = [r for r in verify if r.get("runtime") == "mlx-lm" and r.get("passed")]
    rows = [
        {
            "runtime": "transformers 4.46 to 5.x",
            "files": "`model.safetensors`, config, tokenizer",
            "checked": (
                f"run: logits against the original model, max abs diff {hf['max_abs_diff']:.3g}, "
                f"greedy text {'equal' if hf.get('greedy_equal') else 'not compared'}"
                if hf and hf.get("passed") and isinstance(hf.get("max_abs_diff"), (int, float))
                else "not verified on these files yet (`mythos-convert verify`)"
            )
            + "; 4.46 and 4.57 by the test suite in side environments",
        },
        {
            "runtime": "vLLM (CPU)",
            "files": "`model.safetensors`, config, tokenizer",
            "checked": "run by the test suite on an export of the same format (served and queried), not on these files",
        },
    ]
    if has_gguf:
        passed = [r for r in ggufs if r.get("passed")]
        rows.append(
            {
                "runtime": "llama.cpp",
                "files": "the `.gguf` files",
                "checked": f"run: {len(passed)} of the GGUF files verified against the original model (Parity below)"
                if passed
                else "not verified on these files yet (`mythos-convert verify`)",
            }
        )
        rows.append(
            {
                "runtime": "Ollama",
                "files": "the `.gguf` files" + (", `Modelfile`" if has_modelfile else ""),
                "checked": "checked statically, not run: its releases that run llama.cpp read the files as llama.cpp "
                "does; a port of its Go engine's tokenizer splits them as transformers does",
            }
        )
    kls = [r["mean_kl"] for r in mlx if isinstance(r.get("mean_kl"), (int, float))]
    if kls:
        rows.append(
            {
                "runtime": "MLX (mlx-lm, CPU)",
                "files": ", ".join(f"`{r['target']}`" for r in mlx),
                "checked": f"run: KL divergence from the original model, mean at most {max(kls):.3g} (Parity below)",
            }
        )
    rows.append({"runtime": "any other", "files": "-", "checked": "not checked, not supported"})
    return rows
