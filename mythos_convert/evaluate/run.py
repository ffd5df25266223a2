"""Evaluate targets (native checkpoints, HF folders, GGUF files) on the same windows of held-out text.

Every target's perplexity is computed by the same scoring code (`perplexity.py`) from its own
engine's logits. Each GGUF file (and an HF folder, when a native checkpoint is also given) is
compared, position by position, with the float32 reference: the native engine on the first native
checkpoint among the targets, else on the weights of the HF folder the GGUF files sit in (the
weights they were quantized from). KL divergence KL(P_ref || P), its median, 99th percentile and
max, and top-1 agreement are `engines.divergence`'s, over the scored positions, as
`llama-perplexity --kl-divergence` reports them.

Results are recorded in each folder's `eval.json`, bound to the sha256 of the files measured;
`release.evaluate` (what the CLI runs) then renders the folder's card again so its "Files" table
and chart show them.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table
from tokenizers import Tokenizer

from mythos_convert.data.held_out import held_out_tokens, windows
from mythos_convert.data.tokenizer import load_tokenizer, resolve_tokenizer
from mythos_convert.engines.base import Engine
from mythos_convert.engines.divergence import DivergenceAccumulator, LogProbs, log_probs
from mythos_convert.engines.hf import hf_engine
from mythos_convert.engines.llamacpp import gguf_engine, require_llama_cpp
from mythos_convert.engines.native import native_engine, native_from_hf
from mythos_convert.engines.threads import torch_threads
from mythos_convert.errors import MythosError
from mythos_convert.evaluate.perplexity import (
    PerplexityAccumulator,
    method_text,
    scored_count,
    scored_logits,
)
from mythos_convert.evaluate.record import GGUFHeader, read_gguf_header, record_eval
from mythos_convert.formats.checkpoint import load_checkpoint
from mythos_convert.formats.gguf_files import is_later_shard
from mythos_convert.formats.hf_read import read_hf_folder
from mythos_convert.source import open_gguf
from mythos_convert.support.atomic import atomic_file
from mythos_convert.support.safe_paths import require_file
from mythos_convert.support.ui import human_size, info, progress_task
from mythos_convert.verify.record import hash_files, hf_bound_files

DEFAULT_CTX = 512  # llama-perplexity's default context


@dataclass
class Target:
    """One thing to evaluate, as resolved from the command line."""

    kind: str  # "native", "hf" or "gguf"
    path: Path
    key: str  # recorded under: "hf", the GGUF file name, the checkpoint's file name
    shown: str  # as the table names it
    header: GGUFHeader | None = None
    source: Any = None  # NativeCheckpoint or HFSource
    files: dict[str, dict[str, Any]] = field(default_factory=dict)  # bound files (hf/gguf)

    @property
    def folder(self) -> Path | None:
        """The folder whose eval.json records this target (None for a checkpoint)."""
        return None if self.kind == "native" else (self.path if self.kind == "hf" else self.path.parent)

    @property
    def context(self) -> int:
        if self.kind == "gguf":
            return self.header.context
        return int(self.source.config.max_seq_len)

    @property
    def size(self) -> int:
        if self.kind == "gguf":
            return sum((self.path.parent / n).stat().st_size for n in self.header.shards)
        if self.kind == "hf":
            return sum(f["size"] for n, f in self.files.items() if n.endswith(".safetensors"))
        return self.path.stat().st_size


def resolve_targets(paths: list[str | Path], config_yaml: str | Path | None = None) -> list[Target]:
    """Targets from paths: a folder means its HF model (if it has config.json) plus every GGUF in it.

    Raises:
        MythosError: a missing path, a folder with no model in it, no targets at all.
    """
    if not paths:
        raise MythosError("no TARGET given: pass a checkpoint, an HF folder or GGUF files, e.g. `eval out/`")
    targets: list[Target] = []
    seen: set[Path] = set()

    def add(kind: str, path: Path) -> None:
        if path.resolve() in seen:
            return
        seen.add(path.resolve())
        if kind == "gguf":
            open_gguf(path)  # refuses a torn file, or one lacking tensors, naming what is wrong
            t = Target(kind, path, path.name, str(path), header=read_gguf_header(path))
        elif kind == "hf":
            t = Target(kind, path, "hf", f"{path}/", source=read_hf_folder(path))
        else:
            t = Target(kind, path, path.name, str(path), source=load_checkpoint(path, config_yaml))
        targets.append(t)

    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            ggufs = sorted(p for p in path.glob("*.gguf") if p.is_file() and not is_later_shard(p.name))
            if not (path / "config.json").is_file() and not ggufs:
                raise MythosError(
                    f"{path} holds neither an HF model (config.json) nor .gguf files: pass the folder "
                    "`mythos-convert hf` wrote, GGUF files or a checkpoint"
                )
            if (path / "config.json").is_file():
                add("hf", path)
            for p in ggufs:
                add("gguf", p)
        else:
            require_file(path, "TARGET", "pass a checkpoint, an HF folder or a .gguf file")
            add("gguf" if path.suffix == ".gguf" else "native", path)
    return targets


# ----------------------------------------------------------------------------- tokenizer, reference, checks


def _tokenizer(targets: list[Target], explicit: str | Path | None) -> Tokenizer:
    """--tokenizer, else the first checkpoint's, else the first folder's tokenizer.json."""
    if explicit is not None:
        return load_tokenizer(explicit)
    for t in targets:
        if t.kind == "native":
            return resolve_tokenizer(t.source)[0]
    for t in targets:
        candidate = t.folder / "tokenizer.json" if t.folder is not None else None
        if candidate is not None and candidate.is_file():
            return load_tokenizer(candidate)
    raise MythosError(
        "no tokenizer for the evaluation text: pass --tokenizer with the tokenizer.json the model was trained with"
    )


def _run_folder(targets: list[Target]) -> Path | None:
    """Where `train` left the validation split: beside the checkpoint (or the one an HF folder came from)."""
    for t in targets:
        if t.kind == "native":
            return t.path.parent
    for t in targets:
        if t.kind == "hf" and t.source.provenance is not None and t.source.provenance.source_folder is not None:
            return t.source.provenance.source_folder
    return None


def _vocab_problem(what: str, tokens: list[str], vocab: dict[str, int], n_rows: int) -> str | None:
    """Why `tokens` (a GGUF's, by id) is not the reference tokenizer's vocabulary (None: it is)."""
    if len(tokens) != n_rows:
        return f"{what} has {len(tokens)} tokens, the reference {n_rows}"
    for token, token_id in sorted(vocab.items(), key=lambda kv: kv[1]):
        if token_id >= len(tokens) or tokens[token_id] != token:
            theirs = tokens[token_id] if token_id < len(tokens) else "nothing"
            return f"{what} has {theirs!r} at id {token_id} where the reference has {token!r}"
    return None


def _check_vocabularies(targets: list[Target], tok: Tokenizer, n_rows: int) -> None:
    """All targets must number the same tokens alike: their token ids are the same text, or nothing compares."""
    vocab = tok.get_vocab(with_added_tokens=True)
    for t in targets:
        problem = None
        if t.kind == "gguf":
            problem = _vocab_problem(t.path.name, t.header.tokens, vocab, n_rows)
        elif t.source.config.vocab_size != n_rows:
            problem = f"{t.shown} has {t.source.config.vocab_size} vocabulary rows, the reference {n_rows}"
        elif t.kind == "hf" and t.source.tokenizer_path is not None:
            theirs = load_tokenizer(t.source.tokenizer_path).get_vocab(with_added_tokens=True)
            if theirs != vocab:
                problem = f"{t.shown}tokenizer.json has another vocabulary than the reference tokenizer"
        if problem:
            raise MythosError(
                f"vocabulary mismatch: {problem}; the same ids would be other text, so neither perplexity nor "
                "KL divergence compares: evaluate each model with the tokenizer and reference it was made from"
            )


def _context(targets: list[Target], ctx: int | None) -> int:
    smallest = min(targets, key=lambda t: t.context)
    if ctx is None:
        return min(DEFAULT_CTX, smallest.context)
    if ctx < 2:
        raise MythosError(f"--ctx {ctx} is too small: pass at least 2 (llama-perplexity uses 512)")
    if ctx > smallest.context:
        raise MythosError(
            f"--ctx {ctx} is above the model's context of {smallest.context} tokens ({smallest.shown}): "
            f"pass --ctx {smallest.context} or less"
        )
    return ctx


# ----------------------------------------------------------------------------- the measurement


@dataclass
class Measured:
    """One engine's figures over the windows."""

    perplexity: PerplexityAccumulator
    divergence: DivergenceAccumulator | None


BLOCK_BYTES = 256 << 20  # reference log-probabilities held at once: windows are run in blocks of about this much


def measure(
    engines: list[Engine], wins: list[np.ndarray], reference: Engine | None = None, compare: set[str] | None = None
) -> dict[str, Measured]:
    """Run every engine on every window; KL divergence against `reference` (one of `engines`) for
    the engines named in `compare` (default: all the others).

    Windows go in blocks: the reference runs a block and the float64 log-softmax of its scored
    logits is kept (about BLOCK_BYTES), then each engine runs the whole block in turn. Each
    engine's log-softmax is computed once per window, for its cross-entropy and its KL divergence
    alike, and the reference's once for all the engines compared with it. Switching engine at every window
    made each pay for the other's idle threads spinning (OpenMP's, llama.cpp's): on mythos-172m,
    2 cores (load 3.5), llama.cpp Q4_K_M ran at 90 tokens/s interleaved against 722 alone.
    """
    if compare is None:
        compare = {e.target for e in engines if e is not reference} if reference is not None else set()
    results = {
        e.target: Measured(PerplexityAccumulator(), DivergenceAccumulator() if e.target in compare else None)
        for e in engines
    }
    order = sorted(engines, key=lambda e: e is not reference)
    ctx = wins[0].size if wins else 1
    block = max(1, BLOCK_BYTES // max(1, ctx * _vocab_rows(engines) * 8))  # float64
    with progress_task(f"eval: {len(engines)} model(s) x {len(wins)} windows", len(wins) * len(engines)) as advance:
        for first in range(0, len(wins), block):
            kept: dict[int, LogProbs] = {}
            for engine in order:
                measured = results[engine.target]
                for i in range(first, min(first + block, len(wins))):
                    logits, targets = scored_logits(engine.logits(wins[i]), wins[i], i)
                    lp = log_probs(logits)
                    if engine is reference:
                        kept[i] = lp
                    measured.perplexity.add_log_probs(lp, targets)
                    if measured.divergence is not None and i in kept:
                        measured.divergence.add_log_probs(kept[i], lp)
                    advance(1)
    return results


def _vocab_rows(engines: list[Engine]) -> int:
    """The widest logits among the engines."""
    return max(engine.vocab for engine in engines) if engines else 1


# ----------------------------------------------------------------------------- the report


@dataclass
class EvalReport:
    """What `eval` found: one row per target (the reference's too), and what they were measured on."""

    rows: list[dict[str, Any]]
    dataset: str
    text_tokens: int
    ctx: int
    windows: int
    scored_tokens: int
    method: str
    reference: str | None
    notes: list[str]
    recorded: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _bits(t: Target) -> float | None:
    if t.kind == "gguf":
        return t.header.bits_per_weight
    dtype = t.source.stored_dtype() if t.kind == "hf" else "float32"
    return {"float32": 32.0, "bfloat16": 16.0, "float16": 16.0}.get(dtype)


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
) -> EvalReport:
    """Perplexity of every target and, for each GGUF, its divergence from the float32 reference.

    `flash_attn` runs llama.cpp with flash attention, llama.cpp's own default on CPU (its engine is
    named so in every row); off, an F32 file computes float32 exactly, as in verify. `repack` runs
    the types of `engines.REPACKED_TYPES` on llama.cpp's repacked weights (named so too); off, every
    file in llama.cpp's plain buffer, as in verify (both off: llama.cpp exactly as verify runs it).
    `tokens` (ids) replaces the text lookup (`--data`, the run's validation split, the embedded
    corpus's) when given. Raises MythosError for bad targets, a vocabulary mismatch, a `--ctx`
    above a model's context or a text shorter than one window, before any model runs.
    """
    if chunks is not None and chunks < 1:
        raise MythosError(f"--chunks {chunks} must be at least 1: pass how many windows to score, or leave it out")
    targets = resolve_targets(paths, config_yaml)
    if any(t.kind == "gguf" for t in targets):
        require_llama_cpp()
    natives = [t for t in targets if t.kind == "native"]
    ref_folder = next((t.folder for t in targets if t.kind == "gguf" and (t.folder / "config.json").is_file()), None)
    ref_target = natives[0] if natives else None
    notes: list[str] = []
    ref_source = ref_target.source if ref_target else (read_hf_folder(ref_folder) if ref_folder else None)
    tok = _tokenizer(targets, tokenizer)
    if ref_source is not None:
        n_rows = ref_source.config.vocab_size
    elif targets[0].kind == "gguf":  # a GGUF file alone: its own vocabulary
        n_rows = len(targets[0].header.tokens)
    else:
        n_rows = targets[0].source.config.vocab_size
    _check_vocabularies(targets, tok, n_rows)
    ctx = _context(targets, ctx)
    if tokens is None:
        run_folder = _run_folder(targets)
        text = held_out_tokens(tok, data, run_folder)
        tokens, dataset = text.tokens, text.description
        for local in [run_folder, *(data or [])]:  # eval.json and the card are published: no local paths
            if local is not None and Path(local).name:
                dataset = dataset.replace(str(local), Path(local).name)
    else:
        tokens = np.asarray(tokens, dtype=np.int64).reshape(-1)
        dataset = f"{tokens.size:,} given token ids"
    if tokens.size and (tokens.min() < 0 or tokens.max() >= n_rows):
        raise MythosError(f"token ids outside the vocabulary of {n_rows}: the text was tokenized for another model")
    wins = windows(tokens, ctx, chunks)
    for t in targets:  # hashed before any engine reads them: the results bind what was measured
        if t.kind == "gguf":
            t.files = hash_files(t.folder, t.header.shards)
        elif t.kind == "hf":
            t.files = hash_files(t.folder, hf_bound_files(t.folder))

    # which targets get a KL divergence, and why the others do not
    compare: set[str] = set()
    for t in targets:
        if t is ref_target:
            continue
        if t.kind == "gguf" and ref_source is None:
            notes.append(
                f"{t.shown}: perplexity only: no reference for KL divergence (no config.json and "
                "weights beside it); add the native checkpoint or HF folder as a TARGET"
            )
        elif t.kind == "hf" and ref_target is None:
            notes.append(
                f"{t.shown}: perplexity only: no native checkpoint to compare it against for KL "
                "divergence; add the checkpoint it was exported from as a TARGET"
            )
        else:
            compare.add(t.shown)

    n_params = ref_source.config.num_parameters() if ref_source is not None else 0
    n_params = n_params or max(t.header.n_elements if t.header else t.source.config.num_parameters() for t in targets)
    with torch_threads(n_params):
        engines: list[Engine] = []
        try:
            info(f"evaluation text: {dataset}")
            for t in targets:
                info(f"loading {t.shown}")
                if t.kind == "native":
                    engines.append(native_engine(t.shown, t.source))
                elif t.kind == "hf":
                    engines.append(hf_engine(t.shown, t.path, t.source.stored_dtype()))
                else:
                    label, vocab = t.header.label, len(t.header.tokens)
                    engines.append(
                        gguf_engine(t.shown, t.path, label, vocab, ctx, flash_attn=flash_attn, repack=repack)
                    )
            by_engine: dict[str, Target | None] = {e.target: t for e, t in zip(engines, targets, strict=True)}
            reference, reference_name = None, None
            if ref_target is not None:
                reference = engines[targets.index(ref_target)]
                reference_name = f"native engine, float32, on {ref_target.path.name}"
            elif ref_folder is not None and compare:
                reference = native_from_hf(ref_folder)
                reference_name = (
                    f"native engine, float32, on the weights of {ref_folder.name}/ (stored as {reference.dtype})"
                )
                engines.insert(0, reference)
                by_engine[reference.target] = None
            if reference is not None:
                info(f"KL divergence reference: {reference_name}")
            results = measure(engines, wins, reference, compare)
        finally:
            for e in engines:
                e.close()
    ref_ppl = results[reference.target].perplexity.perplexity if reference is not None else None
    rows = []
    for engine in sorted(engines, key=lambda e: e is not reference):
        t, m = by_engine[engine.target], results[engine.target]
        kl = m.divergence.summary().as_dict() if m.divergence is not None else None
        size = (
            t.size
            if t is not None
            else sum(
                (ref_folder / n).stat().st_size for n in ref_source.weight_map.values() if (ref_folder / n).is_file()
            )
        )
        rows.append(
            {
                "target": engine.target,
                "key": t.key if t is not None else None,
                "kind": engine.kind,
                "engine": engine.engine,
                "type": engine.dtype,
                "reference": engine is reference,
                "perplexity": m.perplexity.perplexity,
                "mean_nll": m.perplexity.mean_nll,
                "scored_tokens": m.perplexity.count,
                "kl": kl,
                "delta_perplexity": m.perplexity.perplexity - ref_ppl
                if kl is not None and ref_ppl is not None
                else None,
                "size": size,
                "bits_per_weight": _bits(t) if t is not None else {"float32": 32.0}.get(engine.dtype, 16.0),
                "tokens_per_second": engine.tokens_per_second,
                "seconds": engine.seconds,
            }
        )
    report = EvalReport(
        rows=rows,
        dataset=dataset,
        text_tokens=int(tokens.size),
        ctx=ctx,
        windows=len(wins),
        scored_tokens=scored_count(len(wins), ctx),
        method=method_text(ctx),
        reference=reference_name,
        notes=notes,
    )
    if record:
        report.recorded = _record(report, targets, ref_ppl, reference_name)
    return report


def _record(report: EvalReport, targets: list[Target], ref_ppl: float | None, reference: str | None) -> list[str]:
    """Each folder's results into its eval.json (`release.evaluate` then renders its card again)."""
    by_folder: dict[Path, dict[str, dict[str, Any]]] = {}
    rows = {r["target"]: r for r in report.rows}
    for t in targets:
        if t.folder is None:
            continue
        row = rows[t.shown]
        entry = {k: v for k, v in row.items() if k not in ("target", "key", "reference", "seconds")}
        entry.update(
            ctx=report.ctx,
            windows=report.windows,
            method=report.method,
            dataset=f"{report.dataset}; {report.scored_tokens:,} tokens scored",
            reference={"name": reference, "perplexity": ref_ppl} if row["kl"] is not None else None,
            files=t.files,
        )
        by_folder.setdefault(t.folder, {})[t.key] = entry
    written = []
    for folder, entries in by_folder.items():
        written.append(str(record_eval(folder, entries)))
    return written


# ----------------------------------------------------------------------------- output


def _num(value: float | None, fmt: str) -> str:
    if value is None:
        return "-"
    return "NaN" if isinstance(value, float) and math.isnan(value) else format(value, fmt)


def report_table(report: EvalReport) -> Table:
    """The rich table `eval` prints: one row per model, the reference first."""
    table = Table(title=f"perplexity on {report.scored_tokens:,} tokens ({report.windows} windows of {report.ctx})")
    columns = (
        "target",
        "engine",
        "type",
        "size",
        "bits/w",
        "perplexity",
        "Δ ppl",
        "mean KL",
        "median KL",
        "p99 KL",
        "max KL",
        "top-1",
        "tokens/s",
    )
    for column in columns:
        table.add_column(column, justify="left" if column in ("target", "engine", "type") else "right")
    for r in report.rows:
        kl = r["kl"] or {}
        table.add_row(
            r["target"] + (" (reference)" if r["reference"] else ""),
            r["engine"],
            r["type"],
            human_size(r["size"]),
            _num(r["bits_per_weight"], ".2f"),
            _num(r["perplexity"], ".4f"),
            _num(r["delta_perplexity"], "+.4f"),
            _num(kl.get("mean_kl"), ".3g"),
            _num(kl.get("median_kl"), ".3g"),
            _num(kl.get("p99_kl"), ".3g"),
            _num(kl.get("max_kl"), ".3g"),
            "-" if not kl else _num(100 * kl["top1_agreement"], ".2f") + "%",
            _num(r["tokens_per_second"], ",.0f"),
        )
    return table


def report_lines(report: EvalReport) -> list[str]:
    """What the table was measured on, and what it could not measure."""
    lines = [f"text: {report.dataset}", f"method: {report.method}"]
    if report.reference:
        lines.append(f"KL divergence: KL(P_ref || P) per scored position, reference: {report.reference}")
    lines += report.notes
    lines += [f"recorded in {path}" for path in report.recorded]
    return lines


def _strict(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_strict(v) for v in value]
    return value


def write_report_json(report: EvalReport, path: str | Path) -> Path:
    """The whole report as strict JSON (non-finite numbers as strings), written atomically."""
    path = Path(path)
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(_strict(report.as_dict()), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return path
