"""Rendering the card: front matter through huggingface_hub's `ModelCardData`, body from the template.

The release's words (license, developer, prompts, limitations, citation) come from the metadata
YAML (`model_card/mythos.yaml`, or the user's `--meta FILE`); the figures from `card.facts`.
`ModelCard.from_template` renders both, so the front matter is the Hub's own YAML, not ours.
"""

from __future__ import annotations

import math
import re
from importlib import resources
from pathlib import Path
from typing import Any

from mythos_convert.card.facts import collect_facts, file_rows, gguf_facts, number
from mythos_convert.card.mlx_facts import mlx_rows
from mythos_convert.errors import MythosError
from mythos_convert.evaluate.chart import write_chart
from mythos_convert.formats.metadata import load_meta
from mythos_convert.support.atomic import atomic_file
from mythos_convert.support.safe_paths import refuse_output_over_inputs, refuse_unsafe, scan_folder

CARD_FILE = "README.md"
TEMPLATE_NAME = "template.md.j2"
LOCAL_MODEL_REF = "path/to/this/folder"  # the quickstart's model id until the Hub repo is known


def template_text() -> str:
    return resources.files("mythos_convert.model_card").joinpath(TEMPLATE_NAME).read_text(encoding="utf-8")


def architecture_tags(arch: dict[str, Any], config: dict[str, Any], has_gguf: bool) -> list[str]:
    """Tags derived from what the model is (gqa only when kv heads < heads, gguf only when present)."""
    tags = ["llama", "from-scratch", "rope", "rmsnorm"]
    if config.get("hidden_act", "silu") == "silu":
        tags.append("swiglu")
    heads, kv = arch.get("n_heads"), arch.get("n_kv_heads")
    if heads and kv and kv < heads:
        tags.append("gqa")
    if has_gguf:
        tags.append("gguf")
    return tags


def eval_results(facts: dict[str, Any], meta: dict[str, Any]) -> list:
    """model-index entries for the validation loss and perplexity the trainer recorded."""
    from huggingface_hub import EvalResult

    training = facts["training"]
    dataset = _dataset_name(facts, meta)
    dataset_type = (meta.get("datasets") or [dataset])[0]
    results = []
    for key, metric_type, name in (
        ("val_loss", "loss", "Validation loss (nats/token)"),
        ("val_ppl", "perplexity", "Validation perplexity"),
    ):
        value = training.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            results.append(
                EvalResult(
                    task_type="text-generation",
                    task_name="Text Generation",
                    dataset_type=dataset_type,
                    dataset_name=dataset,
                    dataset_split="validation",
                    metric_type=metric_type,
                    metric_value=round(float(value), 4),
                    metric_name=name,
                )
            )
    return results + measured_results(facts)


def measured_results(facts: dict[str, Any], ggufs_only: bool = False) -> list:
    """model-index entries for the perplexity `eval` measured (the HF folder's, then each GGUF's), each
    naming the text and its token count, the engine and the method."""
    from huggingface_hub import EvalResult

    entries = [] if ggufs_only or not facts["eval"]["hf"] else [("transformers, float32", facts["eval"]["hf"])]
    bound = {r["name"]: r for r in facts["files"] if r["perplexity"] is not None}
    entries += [(f"{name}, {r.get('engine') or 'llama.cpp'}", r) for name, r in bound.items()]
    results = []
    for what, entry in entries:
        value = number(entry.get("perplexity"))
        if value is None or not math.isfinite(value) or not entry.get("dataset"):
            continue
        results.append(
            EvalResult(
                task_type="text-generation",
                task_name="Text Generation",
                dataset_type="text",
                dataset_name=str(entry["dataset"]),
                metric_type="perplexity",
                metric_value=round(value, 4),
                metric_name=f"Perplexity ({what})",
                metric_args={"method": str(entry.get("method") or "")},
            )
        )
    return results


def _dataset_name(facts: dict[str, Any], meta: dict[str, Any]) -> str:
    data = facts["training"].get("data") or {}
    return str(data.get("name") or meta.get("dataset_name") or "held-out split of the training corpus")


def card_data(facts: dict[str, Any], meta: dict[str, Any]):
    """The front matter as a ModelCardData (validated by huggingface_hub itself)."""
    from huggingface_hub import ModelCardData

    tags = architecture_tags(facts["arch"], facts["config"], bool(facts["gguf"]))
    tags += [t for t in meta.get("tags") or [] if t not in tags]
    inference = {k: v for k, v in (meta.get("inference") or {}).items() if v is not None}
    evals = eval_results(facts, meta)
    return ModelCardData(
        language=meta.get("language"),
        license=meta.get("license"),
        library_name="transformers",
        pipeline_tag="text-generation",
        tags=tags,
        base_model=meta.get("base_model"),
        datasets=meta.get("datasets") or None,
        model_name=meta.get("model_name") if evals else None,  # model-index needs it; alone it is noise
        eval_results=evals or None,
        widget=[{"text": prompt} for prompt in meta.get("widget") or []] or None,
        inference={"parameters": inference} if inference else None,
    )


def build_card(folder: str | Path, meta_path: str | Path | None = None):
    """Render the card of a folder (a huggingface_hub ModelCard) without writing it."""
    from huggingface_hub import ModelCard

    folder = Path(folder)
    if not folder.is_dir():
        raise MythosError(f"{folder} is not a folder: pass the folder `mythos-convert hf` wrote")
    meta = load_meta(meta_path)
    facts = collect_facts(folder)
    data = card_data(facts, meta)
    limitations = meta.get("limitations") or []
    card = ModelCard.from_template(
        data,
        template_str=template_text(),
        meta=meta,
        facts=facts,
        limitations=[limitations] if isinstance(limitations, str) else limitations,
        model_ref=meta.get("hub_repo") or LOCAL_MODEL_REF,
        dataset=_dataset_name(facts, meta),
        inference=meta.get("inference") or {},
    )
    # Optional sections leave runs of blank lines behind; markdown-wise one is enough.
    return ModelCard(re.sub(r"\n{3,}", "\n\n", str(card)))


def write_card(folder: Path, meta_path: Path | None = None) -> Path:
    """Write `folder/README.md` atomically from the folder's contents and the metadata; return its path.

    Called by `mythos-convert card`, and by the hf and gguf exporters after they write a folder.
    Optional files (mythos.json, verify.json, GGUF files, tokenizer) may be missing. A folder
    holding a symlink or special file is refused: the card would describe what it points at.
    """
    folder = Path(folder)
    path = folder / CARD_FILE
    refuse_unsafe(folder, scan_folder(folder)[1])
    refuse_output_over_inputs(path, [("metadata file", meta_path)])
    write_card_chart(folder)
    card = build_card(folder, meta_path)
    with atomic_file(path) as tmp:
        tmp.write_text(str(card), encoding="utf-8")
    return path


def write_card_chart(folder: Path) -> Path | None:
    """The chart of the "Files" table (size against mean KL divergence), from the bound eval results."""
    rows = [r for r in file_rows(folder, gguf_facts(folder)) if r["mean_kl"] is not None]
    mlx = [r for r in mlx_rows(folder) if r["mean_kl"] is not None]
    title = f"{folder.name}: what each {'format' if mlx else 'GGUF type'} costs"
    points = [
        {"type": r["type"] or r["name"], "size": r["size"], "mean_kl": r["mean_kl"], "searched": bool(r["recipe"])}
        for r in rows
    ]
    points += [{"type": r["type"], "size": r["size"], "mean_kl": r["mean_kl"], "format": "MLX"} for r in mlx]
    return write_chart(folder, points, title)
