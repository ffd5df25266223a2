"""Evaluate targets (native checkpoints, HF folders, GGUF files, MLX folders) on the same windows of held-out text.

Every target's perplexity is computed by the same scoring code (`perplexity.py`) from its own
engine's logits. Each GGUF file and MLX folder (and an HF folder, when a native checkpoint is also
given) is compared, position by position, with the float32 reference: the native engine on the
first native checkpoint among the targets, else on the weights of the HF folder the GGUF files and
MLX folders sit in (the weights they were quantized from). MLX folders run in mlx-lm (CPU) in the
Python `--mlx-python` names (`mlx.runtime`); without one, those found beside an HF export are
skipped with one line naming the install command. KL divergence KL(P_ref || P), its median, 99th percentile and
max, and top-1 agreement are `engines.divergence`'s, over the scored positions, as
`llama-perplexity --kl-divergence` reports them.

The steps: `targets` (open and check what is measured), the text, `measure` (every engine on
every window), `report` (rows, eval.json of each folder, table). Results are recorded in each
folder's `eval.json`, bound to the sha256 of the files measured; `api.evaluate` (what the CLI
runs) then renders the folder's card again so its "Files" table and chart show them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from mythos_convert.data.held_out import held_out_tokens, windows
from mythos_convert.engines.base import Engine
from mythos_convert.engines.hf import hf_engine
from mythos_convert.engines.llamacpp import gguf_engine, require_llama_cpp
from mythos_convert.engines.native import native_engine, native_from_hf
from mythos_convert.engines.threads import torch_threads
from mythos_convert.errors import MythosError
from mythos_convert.evaluate.measure import Measured, measure
from mythos_convert.evaluate.mlx_targets import with_mlx_runtime
from mythos_convert.evaluate.perplexity import method_text, scored_count
from mythos_convert.evaluate.report import EvalReport, record_report, report_row
from mythos_convert.evaluate.targets import (
    Target,
    check_vocabularies,
    pick_context,
    pick_tokenizer,
    reference_folder,
    resolve_targets,
    run_folder,
)
from mythos_convert.formats.safetensors import weight_files
from mythos_convert.mlx.engine import mlx_engine
from mythos_convert.mlx.folder import mlx_digests
from mythos_convert.source import ModelSource, open_source
from mythos_convert.support.ui import info
from mythos_convert.verify.record import HF_BOUND_NAMES, hash_files


@dataclass
class Plan:
    """What one `eval` run measures, settled before any model runs."""

    targets: list[Target]
    ref_target: Target | None  # the first native checkpoint: the reference, when there is one
    ref_folder: Path | None  # else the HF folder a GGUF file sits in, whose weights are the reference
    ref_source: ModelSource | None  # the reference's weights (either of the above)
    compare: set[str] = field(default_factory=set)  # the targets measured against the reference
    notes: list[str] = field(default_factory=list)  # why the others are not
    mlx_python: str | None = None  # the Python that runs mlx-lm, when an MLX folder is measured


def plan_eval(targets: list[Target], notes: list[str] | None = None, mlx_python: str | None = None) -> Plan:
    """The reference, and which targets get a KL divergence (and why the others do not); `notes`:
    lines said before those (the MLX skip line), `mlx_python`: the Python that runs MLX folders."""
    natives = [t for t in targets if t.kind == "native"]
    ref_target = natives[0] if natives else None
    ref_folder = reference_folder(targets)
    ref_source = ref_target.source if ref_target else None
    if ref_source is None and ref_folder is not None:  # the folder's own target's source, else opened here
        same = (t.source for t in targets if t.kind == "hf" and t.path.resolve() == ref_folder.resolve())
        ref_source = next(same, None) or open_source(ref_folder)
    plan = Plan(targets, ref_target, ref_folder, ref_source, notes=list(notes or []), mlx_python=mlx_python)
    for t in targets:
        if t is ref_target:
            continue
        if t.kind in ("gguf", "mlx") and ref_source is None:
            plan.notes.append(
                f"{t.shown}: perplexity only: no reference for KL divergence (no config.json and "
                "weights beside it); add the native checkpoint or HF folder as a TARGET"
            )
        elif t.kind == "hf" and ref_target is None:
            plan.notes.append(
                f"{t.shown}: perplexity only: no native checkpoint to compare it against for KL "
                "divergence; add the checkpoint it was exported from as a TARGET"
            )
        else:
            plan.compare.add(t.shown)
    return plan


def _vocab_rows(plan: Plan) -> int:
    """The reference's vocabulary rows (a GGUF file alone: its own vocabulary)."""
    if plan.ref_source is not None:
        return plan.ref_source.config.vocab_size
    first = plan.targets[0]
    return len(first.header.tokens) if first.header is not None else first.config.vocab_size


def _text(
    targets: list[Target], tok: Tokenizer, data: list[str | Path] | None, tokens: np.ndarray | None
) -> tuple[np.ndarray, str]:
    """The token ids to score and their description: `tokens`, else `--data`, the run's validation
    split or the embedded corpus's (`held_out_tokens`), with no local path in the description."""
    if tokens is not None:
        tokens = np.asarray(tokens, dtype=np.int64).reshape(-1)
        return tokens, f"{tokens.size:,} given token ids"
    folder = run_folder(targets)
    text = held_out_tokens(tok, data, folder)
    dataset = text.description
    for local in [folder, *(data or [])]:  # eval.json and the card are published: no local paths
        if local is not None and Path(local).name:
            dataset = dataset.replace(str(local), Path(local).name)
    return text.tokens, dataset


def _bind(targets: list[Target]) -> None:
    """Hash each folder target's files before any engine reads them: the results bind what was measured."""
    for t in targets:
        if t.header is not None:
            t.files = hash_files(t.folder, t.header.shards)
        elif t.mlx is not None:
            t.files = mlx_digests(t.path)
        elif t.kind == "hf":
            names = weight_files(t.folder) + [n for n in HF_BOUND_NAMES if (t.folder / n).is_file()]
            t.files = hash_files(t.folder, sorted(names))


def _engine(t: Target, ctx: int, flash_attn: bool, repack: bool, mlx_python: str | None) -> Engine:
    info(f"loading {t.shown}")
    if t.mlx is not None and mlx_python is not None:
        return mlx_engine(t.shown, t.path, mlx_python, t.mlx.label, t.mlx.config.vocab_size)
    if t.kind == "native":
        return native_engine(t.shown, t.source.as_checkpoint())
    if t.kind == "hf":
        return hf_engine(t.shown, t.path, t.source.hf.stored_dtype())
    return gguf_engine(t.shown, t.path, t.header.label, len(t.header.tokens), ctx, flash_attn=flash_attn, repack=repack)


@dataclass
class Run:
    """The engines as run, each with its target (None: the reference on an HF folder's weights)."""

    engines: list[Engine]
    targets: dict[str, Target | None]
    reference: Engine | None
    reference_name: str | None
    results: dict[str, Measured]


def _run(plan: Plan, wins: list[np.ndarray], ctx: int, flash_attn: bool, repack: bool) -> Run:
    """Load every engine (and the reference), measure them all on the windows, close them."""
    engines: list[Engine] = []
    try:
        for t in plan.targets:
            engines.append(_engine(t, ctx, flash_attn, repack, plan.mlx_python))
        by_engine: dict[str, Target | None] = {e.target: t for e, t in zip(engines, plan.targets, strict=True)}
        reference, name = None, None
        if plan.ref_target is not None:
            reference = engines[plan.targets.index(plan.ref_target)]
            name = f"native engine, float32, on {plan.ref_target.path.name}"
        elif plan.ref_folder is not None and plan.compare:
            reference = native_from_hf(plan.ref_folder)
            name = f"native engine, float32, on the weights of {plan.ref_folder.name}/ (stored as {reference.dtype})"
            engines.insert(0, reference)
            by_engine[reference.target] = None
        if reference is not None:
            info(f"KL divergence reference: {name}")
        results = measure(engines, wins, reference, plan.compare)
    finally:
        for e in engines:
            e.close()
    return Run(engines, by_engine, reference, name, results)


def _rows(run: Run, plan: Plan) -> tuple[list[dict], float | None]:
    """The report's rows, the reference first, and the reference's perplexity."""
    reference = run.reference
    ref_ppl = run.results[reference.target].perplexity.perplexity if reference is not None else None
    folder = plan.ref_folder
    ref_size = sum((folder / n).stat().st_size for n in weight_files(folder)) if folder is not None else 0
    rows = [
        report_row(e, run.targets[e.target], run.results[e.target], reference, ref_ppl, ref_size)
        for e in sorted(run.engines, key=lambda e: e is not reference)
    ]
    return rows, ref_ppl


def _n_params(plan: Plan) -> int:
    """The reference's parameters, else the largest target's: what sizes torch's thread count."""
    n = plan.ref_source.config.num_parameters() if plan.ref_source is not None else 0
    return n or max(t.header.n_elements if t.header else t.config.num_parameters() for t in plan.targets)


def run_eval(
    paths: list[str | Path],
    *,
    data: list[str | Path] | None = None,
    tokens: np.ndarray | None = None,
    ctx: int | None = None,
    chunks: int | None = None,
    tokenizer: str | Path | None = None,
    config_yaml: str | Path | None = None,
    record: bool = True,
    flash_attn: bool = True,
    repack: bool = True,
    mlx_python: str | Path | None = None,
) -> EvalReport:
    """Perplexity of every target and, for each GGUF, its divergence from the float32 reference.

    `flash_attn` runs llama.cpp with flash attention, llama.cpp's own default on CPU (its engine is
    named so in every row); off, an F32 file computes float32 exactly, as in verify. `repack` runs
    the types of `engines.REPACKED_TYPES` on llama.cpp's repacked weights (named so too); off, every
    file in llama.cpp's plain buffer, as in verify (both off: llama.cpp exactly as verify runs it).
    `mlx_python`: the Python with mlx-lm that runs MLX folders (`mlx.runtime.mlx_python`).
    `tokens` (ids) replaces the text lookup (`--data`, the run's validation split, the embedded
    corpus's) when given. The tokenizer is `tokenizer`, else the first target's that holds one.
    Raises MythosError for bad targets, a vocabulary mismatch, a `--ctx` above a model's context
    or a text shorter than one window, before any model runs.
    """
    if chunks is not None and chunks < 1:
        raise MythosError(f"--chunks {chunks} must be at least 1: pass how many windows to score, or leave it out")
    targets, skipped, mlx_interpreter = with_mlx_runtime(resolve_targets(paths, config_yaml), mlx_python)
    if any(t.kind == "gguf" for t in targets):
        require_llama_cpp()
    plan = plan_eval(targets, skipped, mlx_interpreter)
    tok = pick_tokenizer(targets, tokenizer)
    n_rows = _vocab_rows(plan)
    check_vocabularies(targets, tok, n_rows)
    ctx = pick_context(targets, ctx)
    tokens, dataset = _text(targets, tok, data, tokens)
    if tokens.size and (tokens.min() < 0 or tokens.max() >= n_rows):
        raise MythosError(f"token ids outside the vocabulary of {n_rows}: the text was tokenized for another model")
    wins = windows(tokens, ctx, chunks)
    _bind(targets)
    with torch_threads(_n_params(plan)):
        info(f"evaluation text: {dataset}")
        run = _run(plan, wins, ctx, flash_attn, repack)
    rows, ref_ppl = _rows(run, plan)
    report = EvalReport(
        rows=rows,
        dataset=dataset,
        text_tokens=int(tokens.size),
        ctx=ctx,
        windows=len(wins),
        scored_tokens=scored_count(len(wins), ctx),
        method=method_text(ctx),
        reference=run.reference_name,
        notes=plan.notes,
    )
    if record:
        report.recorded = record_report(report, targets, ref_ppl)
    return report
