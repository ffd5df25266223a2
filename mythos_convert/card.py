"""The model card: README.md of an exported folder, rendered from what the folder really holds.

Every figure comes from the folder, never from arithmetic on a preset: parameter counts from the
safetensors headers (so GQA and tying are counted as stored), training facts from `mythos.json`
(the checkpoint's own record), parity from `verify.json`, GGUF files from the directory listing.
The release's words (license, developer, prompts, limitations, citation) come from a metadata YAML
(`model_card/mythos.yaml`, or the user's `--meta FILE`). Rendering goes through huggingface_hub's
`ModelCardData` + `ModelCard.from_template`, so the front matter is the Hub's own YAML, not ours.
"""

from __future__ import annotations

import json
import math
import re
from importlib import resources
from pathlib import Path
from typing import Any

from mythos_convert.atomic import atomic_file
from mythos_convert.convert.gguf_types import recommended_rank
from mythos_convert.convert.safetensors import TensorInfo, read_tensors
from mythos_convert.errors import MythosError, UnsafePathError
from mythos_convert.evaluate.chart import CHART_FILE, INSTALL_HINT, have_matplotlib, write_chart
from mythos_convert.evaluate.record import bound_eval, read_gguf_header
from mythos_convert.metadata import load_meta
from mythos_convert.model.config import short_repr
from mythos_convert.safe_paths import refuse_output_over_inputs, refuse_unsafe, scan_folder
from mythos_convert.ui import human_size
from mythos_convert.verify.record import is_bound, load_results

CARD_FILE = "README.md"
PROVENANCE_FILE = "mythos.json"
TEMPLATE_NAME = "template.md.j2"
LOCAL_MODEL_REF = "path/to/this/folder"  # the quickstart's model id until the Hub repo is known
REQUIRED_FRONT_MATTER = ("language", "license", "library_name", "pipeline_tag", "tags")


def template_text() -> str:
    return resources.files("mythos_convert.model_card").joinpath(TEMPLATE_NAME).read_text(encoding="utf-8")


# ----------------------------------------------------------------------------- reading the folder


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON file as a dict; {} when missing or unreadable (optional files never crash the card)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


# config.json fields the card states, with the JSON types each may have (a damaged file must not
# become a card full of "None"); the first seven are sizes, so positive integers.
CONFIG_FIELDS: dict[str, tuple[type, ...]] = {
    "vocab_size": (int,),
    "hidden_size": (int,),
    "intermediate_size": (int,),
    "num_hidden_layers": (int,),
    "num_attention_heads": (int,),
    "num_key_value_heads": (int,),
    "max_position_embeddings": (int,),
    "head_dim": (int,),
    "rms_norm_eps": (float, int),
    "rope_theta": (float, int),
    "hidden_act": (str,),
    "tie_word_embeddings": (bool,),
    "rope_parameters": (dict,),
}
REQUIRED_CONFIG_FIELDS = (*tuple(CONFIG_FIELDS)[:7], "rms_norm_eps")


def read_config(folder: Path) -> dict[str, Any]:
    """The folder's config.json checked field by field ({} when the folder has none).

    Unlike the optional files, a config.json that is present but damaged is refused: the card
    would state its architecture as "None" and still look like a card.
    """
    path = folder / "config.json"
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise MythosError(
            f"{path} is not readable JSON ({str(exc)[:80]}): re-export the folder with `mythos-convert hf`"
        ) from exc
    if not isinstance(data, dict):
        raise MythosError(f"{path} holds a {type(data).__name__}, not a JSON object: re-export the folder")
    for key, kinds in CONFIG_FIELDS.items():
        value = data.get(key)
        if value is None:
            continue
        wrong = (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds)
        if wrong or (kinds == (int,) and value <= 0):
            kind = "a positive integer" if kinds == (int,) else " or ".join(t.__name__ for t in kinds)
            raise MythosError(
                f"{path} field {key} must be {kind}, got {short_repr(value)}: fix it or re-export the folder"
            )
    return data


def human_count(n: int) -> str:
    """153530112 -> '153.53 M' (the unit people quote, two decimals so GQA errors show)."""
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return str(n)


def _layer_of(name: str) -> int | None:
    match = re.search(r"\.layers\.(\d+)\.", name)
    return int(match.group(1)) if match else None


def _component(name: str) -> str:
    """Which row of the parameter table a tensor belongs to (HF Llama names)."""
    if "embed_tokens" in name:
        return "embedding"
    if name.startswith("lm_head"):
        return "lm_head"
    if ".self_attn." in name:
        return "attention"
    if ".mlp." in name:
        return "mlp"
    if "norm" in name:
        return "norm"
    return "other"


def architecture_facts(config: dict[str, Any], tensors: dict[str, TensorInfo]) -> dict[str, Any]:
    """Sizes and counts from the stored tensors; the config only fills what tensors cannot tell."""
    total = sum(t.numel for t in tensors.values())
    by_component: dict[str, int] = {}
    for t in tensors.values():
        by_component[_component(t.name)] = by_component.get(_component(t.name), 0) + t.numel
    embedding = by_component.get("embedding", 0) + by_component.get("lm_head", 0)
    shape = {t.name.split(".layers.0.")[-1]: t.shape for t in tensors.values() if _layer_of(t.name) == 0}
    heads = config.get("num_attention_heads")
    embed = next((t.shape for t in tensors.values() if "embed_tokens" in t.name), None)
    q_rows = shape.get("self_attn.q_proj.weight", (None,))[0]
    k_rows = shape.get("self_attn.k_proj.weight", (None,))[0]
    head_dim = config.get("head_dim") or (q_rows // heads if q_rows and heads else None)
    layers = {_layer_of(t.name) for t in tensors.values()} - {None}
    dtypes = sorted({t.dtype for t in tensors.values()})
    rope = config.get("rope_parameters") or {}
    return {
        "params_total": total,
        "params_non_embedding": total - embedding,
        "params_embedding": embedding,
        "params_total_h": human_count(total),
        "params_non_embedding_h": human_count(total - embedding),
        "by_component": by_component,
        "n_layers": len(layers) or config.get("num_hidden_layers"),
        "hidden_size": embed[1] if embed else config.get("hidden_size"),
        "vocab_size": embed[0] if embed else config.get("vocab_size"),
        "n_heads": heads,
        "n_kv_heads": (k_rows // head_dim) if k_rows and head_dim else config.get("num_key_value_heads"),
        "head_dim": head_dim,
        "ffn_dim": shape.get("mlp.gate_proj.weight", (config.get("intermediate_size"),))[0],
        "context": config.get("max_position_embeddings"),
        "rope_theta": rope.get("rope_theta", config.get("rope_theta")),
        "rms_eps": config.get("rms_norm_eps"),
        "tied": "lm_head.weight" not in tensors and bool(config.get("tie_word_embeddings", True)),
        "activation": config.get("hidden_act"),
        "dtypes": dtypes,
        "layer_shapes": {k: list(v) for k, v in sorted(shape.items())},
        "embed_shape": list(embed) if embed else None,
    }


def tokenizer_facts(folder: Path) -> dict[str, Any]:
    """BOS/EOS as the exported tokenizer really applies them to a prompt (encoded here, not assumed)."""
    facts: dict[str, Any] = {"present": (folder / "tokenizer.json").is_file()}
    tok_config = _read_json(folder / "tokenizer_config.json")
    facts["bos"], facts["eos"] = tok_config.get("bos_token"), tok_config.get("eos_token")
    if not facts["present"]:
        return facts
    try:
        from tokenizers import Tokenizer

        from mythos_convert.data.tokenizer import special_tokens

        tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        roles = special_tokens(tok)
        ids = tok.encode("Once upon a time").ids
    except Exception:  # an unreadable tokenizer is reported by push's checks, the card just says less
        return facts
    facts.update(
        bos=roles.token("bos") or facts["bos"],
        eos=roles.token("eos") or facts["eos"],
        bos_id=roles.id("bos"),
        eos_id=roles.id("eos"),
        vocab_size=tok.get_vocab_size(),
        starts_with_bos=bool(ids) and ids[0] == roles.id("bos"),
        ends_with_eos=bool(ids) and ids[-1] == roles.id("eos"),
    )
    return facts


def gguf_facts(folder: Path) -> list[dict[str, Any]]:
    """The GGUF files that exist in the folder, with sizes: the recommended one first (the examples
    use it: Q4_K_M, else Q8_0, else F16), then by name."""
    files = sorted((p for p in folder.glob("*.gguf") if p.is_file()), key=lambda p: (recommended_rank(p.name), p.name))
    return [{"name": p.name, "size": p.stat().st_size, "size_h": human_size(p.stat().st_size)} for p in files]


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def file_rows(folder: Path, ggufs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The "Files" table: each GGUF's type and bits/weight (from its header) and, from the last eval
    whose hashes match the file, its perplexity, mean KL divergence and top-1 agreement (else None)."""
    evals = bound_eval(folder)
    rows = []
    for g in ggufs:
        try:
            header = read_gguf_header(folder / g["name"], tokens=False)
            label, bpw = header.label, header.bits_per_weight
        except MythosError:  # a foreign or torn file: listed with what is known
            label, bpw = None, None
        entry = evals.get(g["name"]) or {}
        kl = entry.get("kl") if isinstance(entry.get("kl"), dict) else {}
        rows.append(
            {
                **g,
                "type": label,
                "bits_per_weight": bpw,
                "perplexity": _number(entry.get("perplexity")),
                "mean_kl": _number(kl.get("mean_kl")),
                "top1": _number(kl.get("top1_agreement")),
                "dataset": entry.get("dataset"),
                "method": entry.get("method"),
            }
        )
    return rows


def eval_facts(folder: Path, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """What the card says about the eval behind its "Files" table: text, method, reference, chart."""
    evals = bound_eval(folder)
    measured = [evals[r["name"]] for r in rows if r["name"] in evals]
    first = measured[0] if measured else evals.get("hf") or {}
    reference = first.get("reference") if isinstance(first.get("reference"), dict) else {}
    with_kl = any(r["mean_kl"] is not None for r in rows)
    return {
        "dataset": first.get("dataset"),
        "method": first.get("method"),
        "reference": reference.get("name"),
        "reference_ppl": _number(reference.get("perplexity")),
        "hf": evals.get("hf"),
        "chart": CHART_FILE if with_kl and (folder / CHART_FILE).is_file() else None,
        "chart_note": None if not with_kl or have_matplotlib() else INSTALL_HINT,
    }


def weight_file_facts(folder: Path, tensors: dict[str, TensorInfo]) -> list[dict[str, Any]]:
    names = sorted({t.file for t in tensors.values()})
    return [{"name": n, "size_h": human_size((folder / n).stat().st_size)} for n in names if (folder / n).is_file()]


def training_facts(provenance: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's training record, flattened for the template (absent facts stay absent)."""
    training = dict(provenance.get("training") or {})
    if not training and not isinstance(provenance.get("step"), int):
        return {}
    data = training.get("data") if isinstance(training.get("data"), dict) else {}
    facts = {k: v for k, v in training.items() if k not in ("data", "train_config")}
    facts["data"] = data
    facts["train_config"] = training.get("train_config") if isinstance(training.get("train_config"), dict) else {}
    if isinstance(provenance.get("step"), int):
        facts["step"] = provenance["step"]
    if isinstance(facts.get("wall_seconds"), (int, float)):
        facts["wall_h"] = f"{facts['wall_seconds'] / 3600:.2f} h"
    for key in ("tokens_seen",):
        if isinstance(facts.get(key), int):
            facts[key + "_h"] = human_count(facts[key])
    return facts


def verify_rows(folder: Path) -> list[dict[str, Any]]:
    """verify.json as table rows (target order: hf first, then the GGUF files by name).

    Only results whose recorded file hashes match the folder's files now are shown: a figure for
    weights that have changed since (or from a verify.json without hashes) would be a claim the
    card cannot back.
    """
    results = load_results(folder)
    rows = []
    for target in sorted(results, key=lambda t: (t != "hf", t)):
        entry = results[target]
        if is_bound(folder, entry):
            rows.append({"target": target, **entry})
    return rows


def collect_facts(folder: str | Path) -> dict[str, Any]:
    """Everything the card states, read from the folder; missing optional files give empty sections."""
    folder = Path(folder)
    config = read_config(folder)
    try:
        tensors = read_tensors(folder)
    except UnsafePathError:
        raise
    except MythosError:
        tensors = {}
    provenance = _read_json(folder / PROVENANCE_FILE)
    ggufs = gguf_facts(folder)
    files = file_rows(folder, ggufs)
    return {
        "config": config,
        "arch": architecture_facts(config, tensors) if tensors else {},
        "weights": weight_file_facts(folder, tensors),
        "sharded": (folder / "model.safetensors.index.json").is_file(),
        "tokenizer": tokenizer_facts(folder),
        "gguf": ggufs,
        "files": files,
        "eval": eval_facts(folder, files),
        "modelfile": (folder / "Modelfile").is_file(),
        "training": training_facts(provenance),
        "provenance": {
            "source_checkpoint": Path(str(provenance.get("source_checkpoint") or "")).name or None,
            "tokenizer_source": Path(str(provenance.get("tokenizer_source") or "")).name or None,
            "mythos_convert_version": provenance.get("mythos_convert_version"),
        },
        "verify": verify_rows(folder),
    }


# ----------------------------------------------------------------------------- rendering


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
    entries += [(f"{name}, llama.cpp", {**r, "engine": "llama.cpp"}) for name, r in bound.items()]
    results = []
    for what, entry in entries:
        value = _number(entry.get("perplexity"))
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
    title = f"{folder.name}: what each GGUF type costs"
    return write_chart(
        folder, [{"type": r["type"] or r["name"], "size": r["size"], "mean_kl": r["mean_kl"]} for r in rows], title
    )


GGUF_REPO_MARKER = "<!-- gguf-repo -->"


def gguf_repo_line(repo_id: str, endpoint: str = "https://huggingface.co") -> str:
    """The main card's link to the repository holding the GGUF files."""
    return (
        f"The GGUF files, with a card of their own, are published in "
        f"[{repo_id}]({endpoint.rstrip('/')}/{repo_id}). {GGUF_REPO_MARKER}"
    )


def link_gguf_repo(folder: str | Path, repo_id: str, endpoint: str = "https://huggingface.co") -> bool:
    """Point the card's GGUF section at `repo_id` (before `push --gguf-repo`); the line that carries
    the marker is replaced, so pushing again to another repo does not leave two links. Returns
    whether the card changed."""
    path = Path(folder) / CARD_FILE
    if not path.is_file():
        return False
    text = path.read_text(encoding="utf-8")
    if GGUF_REPO_MARKER not in text:
        return False
    lines = [gguf_repo_line(repo_id, endpoint) if GGUF_REPO_MARKER in line else line for line in text.split("\n")]
    new = "\n".join(lines)
    if new == text:
        return False
    with atomic_file(path) as tmp:
        tmp.write_text(new, encoding="utf-8")
    return True


def point_quickstart_at(folder: str | Path, repo_id: str) -> bool:
    """Make the card's quickstart load `repo_id` instead of the local placeholder (before a push).

    Only the quoted placeholder in the body changes, so a card rendered with `hub_repo` or edited
    by hand is left alone. Returns whether the card changed.
    """
    path = Path(folder) / CARD_FILE
    if not path.is_file():
        return False
    text = path.read_text(encoding="utf-8")
    placeholder = f'"{LOCAL_MODEL_REF}"'
    if placeholder not in text:
        return False
    with atomic_file(path) as tmp:
        tmp.write_text(text.replace(placeholder, f'"{repo_id}"'), encoding="utf-8")
    return True


def card_problems(text: str) -> list[str]:
    """What is wrong with a card's front matter, checked locally (no network): [] when valid."""
    from huggingface_hub import ModelCard, ModelCardData

    try:
        card = ModelCard(text)
    except Exception as exc:  # huggingface_hub raises ValueError on bad YAML / missing metadata
        return [f"README.md front matter does not parse: {str(exc).splitlines()[0][:160]}"]
    data = card.data.to_dict()
    problems = [f"README.md front matter lacks `{key}`" for key in REQUIRED_FRONT_MATTER if not data.get(key)]
    try:
        again = ModelCardData(**data).to_dict()
    except Exception as exc:
        return [*problems, f"README.md front matter does not round-trip through ModelCardData: {exc}"]
    if again != data:
        problems.append("README.md front matter changes when round-tripped through ModelCardData")
    return problems
