"""What a model card states, read from the folder: every figure from a file, none from a preset.

Parameter counts come from the safetensors headers (so GQA and tying are counted as stored),
training facts from `mythos.json` (the checkpoint's own record), parity from `verify.json` and
quality from `eval.json` (only results whose hashes match the files now), GGUF files from the
directory listing.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from mythos_convert.card.mlx_facts import mlx_rows, runtime_rows
from mythos_convert.data.tokenizer import TOKENIZER_FILE
from mythos_convert.errors import MythosError
from mythos_convert.evaluate.chart import CHART_FILE, INSTALL_HINT, have_matplotlib
from mythos_convert.evaluate.record import bound_eval, read_gguf_header
from mythos_convert.formats.hf_folder import CONFIG_FILE, META_FILE, Provenance
from mythos_convert.formats.safetensors import INDEX_FILE, TensorInfo, read_tensors
from mythos_convert.model.config import short_repr
from mythos_convert.names import CONFIG_KEYS, HF_KEY, TIED_HEAD, NameRow, convert_name, lookup
from mythos_convert.quant.types import recommended_rank
from mythos_convert.source import gguf_problems
from mythos_convert.support.ui import human_size
from mythos_convert.verify.record import is_bound, load_results


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON file as a dict; {} when missing or unreadable (optional files never crash the card)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


# config.json fields the card states, with the JSON types each may have (a damaged file must not
# become a card full of "None"): every key of the config table (sizes positive integers), and a few more.
CONFIG_FIELDS: dict[str, tuple[type, ...]] = {
    **{row.hf: (int,) if row.kind is int else (float, int) for row in CONFIG_KEYS},
    "hidden_act": (str,),
    "tie_word_embeddings": (bool,),
    "rope_parameters": (dict,),
}
# All but what config.json may leave out: head_dim (d_model / n_heads) and rope_theta (transformers' default).
REQUIRED_CONFIG_FIELDS = tuple(row.hf for row in CONFIG_KEYS if row.field not in ("head_dim", "rope_theta"))


def read_config(folder: Path) -> dict[str, Any]:
    """The folder's config.json checked field by field ({} when the folder has none).

    Unlike the optional files, a config.json that is present but damaged is refused: the card
    would state its architecture as "None" and still look like a card.
    """
    path = folder / CONFIG_FILE
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


# The parameter table's rows, by the module a native name names (`layers.{i}.<module>.` or `<module>.`).
_COMPONENTS = {
    "embedding": "embedding",
    "output": "lm_head",
    "attention": "attention",
    "feed_forward": "mlp",
    "attn_norm": "norm",
    "ffn_norm": "norm",
    "norm": "norm",
}


def _lookup(name: str) -> tuple[NameRow | None, int | None]:
    """An HF tensor name's row of the name table and layer; (None, None) outside the table."""
    try:
        return lookup(name, "hf")
    except MythosError:
        return None, None


def _component(row: NameRow | None) -> str:
    """Which row of the parameter table a tensor belongs to."""
    if row is None:
        return "other"
    parts = row.native.split(".")
    return _COMPONENTS[parts[2] if parts[1] == "{i}" else parts[0]]


def architecture_facts(config: dict[str, Any], tensors: dict[str, TensorInfo]) -> dict[str, Any]:
    """Sizes and counts from the stored tensors; the config only fills what tensors cannot tell."""
    total = sum(t.numel for t in tensors.values())
    by_component: dict[str, int] = {}
    native: dict[str, tuple[int, ...]] = {}  # the table's tensors' shapes by native name
    layers: set[int] = set()
    shape: dict[str, tuple[int, ...]] = {}  # layer 0's tensors, by their HF name within the layer
    for t in tensors.values():
        row, layer = _lookup(t.name)
        by_component[_component(row)] = by_component.get(_component(row), 0) + t.numel
        if row is not None:
            native[convert_name(t.name, "hf", "native")] = t.shape
            layers |= {layer} if layer is not None else set()
            if layer == 0:
                shape[row.hf.split("{i}.", 1)[1]] = t.shape
    embedding = by_component.get("embedding", 0) + by_component.get("lm_head", 0)
    heads = config.get(HF_KEY["n_heads"])
    embed = native.get("embedding.weight")
    q_rows, k_rows, gate_rows = (
        native.get(f"layers.0.{m}.weight", (None,))[0] for m in ("attention.wq", "attention.wk", "feed_forward.w1")
    )
    head_dim = config.get(HF_KEY["head_dim"]) or (q_rows // heads if q_rows and heads else None)
    dtypes = sorted({t.dtype for t in tensors.values()})
    rope = config.get("rope_parameters") or {}
    theta = HF_KEY["rope_theta"]
    return {
        "params_total": total,
        "params_non_embedding": total - embedding,
        "params_embedding": embedding,
        "params_total_h": human_count(total),
        "params_non_embedding_h": human_count(total - embedding),
        "by_component": by_component,
        "n_layers": len(layers) or config.get(HF_KEY["n_layers"]),
        "hidden_size": embed[1] if embed else config.get(HF_KEY["d_model"]),
        "vocab_size": embed[0] if embed else config.get(HF_KEY["vocab_size"]),
        "n_heads": heads,
        "n_kv_heads": (k_rows // head_dim) if k_rows and head_dim else config.get(HF_KEY["n_kv_heads"]),
        "head_dim": head_dim,
        "ffn_dim": gate_rows or config.get(HF_KEY["ffn_dim"]),
        "context": config.get(HF_KEY["max_seq_len"]),
        "rope_theta": rope.get(theta, config.get(theta)),
        "rms_eps": config.get(HF_KEY["norm_eps"]),
        "tied": TIED_HEAD["native"] not in native and bool(config.get("tie_word_embeddings", True)),
        "activation": config.get("hidden_act"),
        "dtypes": dtypes,
        "layer_shapes": {k: list(v) for k, v in sorted(shape.items())},
        "embed_shape": list(embed) if embed else None,
    }


def tokenizer_facts(folder: Path) -> dict[str, Any]:
    """BOS/EOS as the exported tokenizer really applies them to a prompt (encoded here, not assumed)."""
    facts: dict[str, Any] = {"present": (folder / TOKENIZER_FILE).is_file()}
    tok_config = _read_json(folder / "tokenizer_config.json")
    facts["bos"], facts["eos"] = tok_config.get("bos_token"), tok_config.get("eos_token")
    if not facts["present"]:
        return facts
    try:
        from tokenizers import Tokenizer

        from mythos_convert.data.tokenizer import special_tokens

        tok = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
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
    use it: Q4_K_M, else Q8_0, else F16), then by name.

    Raises:
        MythosError: a GGUF file that is torn, foreign or lacks tensors (the check eval and verify
            open it with): the card would tell people to download and run it.
    """
    problems = gguf_problems(folder)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise MythosError(
            f"{problems[0]}{more}; the card lists every .gguf in {folder}: re-convert or remove it, then rerun card"
        )
    files = sorted((p for p in folder.glob("*.gguf") if p.is_file()), key=lambda p: (recommended_rank(p.name), p.name))
    return [{"name": p.name, "size": p.stat().st_size, "size_h": human_size(p.stat().st_size)} for p in files]


def number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def file_rows(folder: Path, ggufs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The "Files" table: each GGUF's type and bits/weight (from its header) and, from the last eval
    whose hashes match the file, its perplexity, mean KL divergence and top-1 agreement (else None)."""
    evals = bound_eval(folder)
    rows = []
    for g in ggufs:
        try:
            header = read_gguf_header(folder / g["name"], tokens=False)
            label, bpw, recipe = header.label, header.bits_per_weight, header.recipe_summary
        except MythosError:  # a foreign or torn file: listed with what is known
            label, bpw, recipe = None, None, None
        entry = evals.get(g["name"]) or {}
        kl = entry.get("kl") if isinstance(entry.get("kl"), dict) else {}
        rows.append(
            {
                **g,
                "type": label,
                "recipe": recipe,  # a searched file's types (its `type` is its target)
                "bits_per_weight": bpw,
                "perplexity": number(entry.get("perplexity")),
                "mean_kl": number(kl.get("mean_kl")),
                "top1": number(kl.get("top1_agreement")),
                "dataset": entry.get("dataset"),
                "method": entry.get("method"),
                "engine": entry.get("engine"),
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
        "gguf_engine": _engines_text(rows),
        "reference": reference.get("name"),
        "reference_ppl": number(reference.get("perplexity")),
        "hf": evals.get("hf"),
        "chart": CHART_FILE if with_kl and (folder / CHART_FILE).is_file() else None,
        "chart_note": None if not with_kl or have_matplotlib() else INSTALL_HINT,
    }


def _engines_text(rows: list[dict[str, Any]]) -> str | None:
    """The engine(s) the measured GGUF files ran in: one name, or each with its types (eval runs some
    types on llama.cpp's repacked weights)."""
    by_engine: dict[str, list[str]] = {}
    for r in rows:
        if r.get("engine"):
            by_engine.setdefault(r["engine"], []).append(r.get("type") or r["name"])
    if len(by_engine) <= 1:
        return next(iter(by_engine), None)
    return "; ".join(f"{engine} ({', '.join(types)})" for engine, types in by_engine.items())


def weight_file_facts(folder: Path, tensors: dict[str, TensorInfo]) -> list[dict[str, Any]]:
    names = sorted({t.file for t in tensors.values()})
    return [{"name": n, "size_h": human_size((folder / n).stat().st_size)} for n in names if (folder / n).is_file()]


# Older checkpoints say "1 process(es) on CPU (...)"; the card states the process count itself.
_HARDWARE_PROCESSES = re.compile(r"^\d+ process\(es\) on ")
_DATA_STEPS = (
    ("documents_read", "read"),
    ("documents_usable", "after cleaning"),
    ("documents_exact_dedup", "after exact deduplication"),
    ("documents_near_dedup", "after near-duplicate removal (MinHash)"),
)


def data_documents(data: dict[str, Any]) -> str | None:
    """How many documents each preparation step kept, from the counts the trainer recorded."""
    steps = [f"{data[key]:,} {words}" for key, words in _DATA_STEPS if isinstance(data.get(key), int)]
    return "; ".join(steps) or None


def data_summary(data: dict[str, Any]) -> str | None:
    """The data's name, with its description only where that adds words.

    The trainer's description starts with the name and repeats the counts the card lists in rows of
    their own, so it is left out; a description written by hand (not starting with the name) is kept.
    """
    name = data.get("name") if isinstance(data.get("name"), str) else ""
    description = data.get("description") if isinstance(data.get("description"), str) else ""
    if description and not (name and description.startswith(name)):
        return f"{name}: {description}" if name else description
    return name or None


def training_facts(provenance: Provenance) -> dict[str, Any]:
    """The checkpoint's training record, flattened for the template (absent facts stay absent)."""
    training = dict(provenance.training)
    if not training and provenance.step is None:
        return {}
    data = training.get("data") if isinstance(training.get("data"), dict) else {}
    facts = {k: v for k, v in training.items() if k not in ("data", "train_config")}
    facts["data"] = data
    facts["train_config"] = training.get("train_config") if isinstance(training.get("train_config"), dict) else {}
    if provenance.step is not None:
        facts["step"] = provenance.step
    if isinstance(facts.get("hardware"), str):
        facts["hardware"] = _HARDWARE_PROCESSES.sub("", facts["hardware"])  # the process count has its own words
    facts["data_summary"] = data_summary(data)
    facts["data_documents"] = data_documents(data)
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
    tensors = read_tensors(folder)  # a corrupt header is refused, naming the file: the card would describe it
    provenance = Provenance.from_dict(_read_json(folder / META_FILE))
    ggufs = gguf_facts(folder)
    files = file_rows(folder, ggufs)
    verify = verify_rows(folder)
    return {
        "config": config,
        "arch": architecture_facts(config, tensors) if tensors else {},
        "weights": weight_file_facts(folder, tensors),
        "sharded": (folder / INDEX_FILE).is_file(),
        "tokenizer": tokenizer_facts(folder),
        "gguf": ggufs,
        "files": files,
        "eval": eval_facts(folder, files),
        "modelfile": (folder / "Modelfile").is_file(),
        "training": training_facts(provenance),
        "provenance": {
            "source_checkpoint": Path(provenance.source_checkpoint or "").name or None,
            "tokenizer_source": Path(provenance.tokenizer_source or "").name or None,
            "mythos_convert_version": provenance.mythos_convert_version,
        },
        "verify": verify,
        "mlx": mlx_rows(folder),
        "runtimes": runtime_rows(verify, bool(ggufs), (folder / "Modelfile").is_file()),
    }
