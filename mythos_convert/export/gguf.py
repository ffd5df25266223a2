"""The GGUF export as a library call: open a source, name the outputs, write them, report.

A source (`sources.ModelSource`) is an HF folder written by `mythos-convert hf` (the GGUF files go
into it) or a native checkpoint (the files go beside it): both stream the same checked tensors,
under native names, to the one writer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf
from tokenizers import Tokenizer

from mythos_convert.errors import MythosError
from mythos_convert.export.gguf_header import GGUFMetadata, ImatrixInfo, size_label
from mythos_convert.export.gguf_plan import OutType, parse_outtypes, parse_size, searched_outtype
from mythos_convert.export.gguf_target import Searched, parse_targets, search_targets
from mythos_convert.export.gguf_vocab import build_vocab
from mythos_convert.export.gguf_writer import WrittenGGUF, write_gguf
from mythos_convert.export.modelfile import write_modelfile
from mythos_convert.formats.metadata import load_meta
from mythos_convert.model.config import MythosConfig
from mythos_convert.quant.imatrix_file import read_imatrix
from mythos_convert.quant.recipe import command_line
from mythos_convert.quant.types import RECOMMENDED
from mythos_convert.source import ModelSource, open_source
from mythos_convert.support.atomic import check_output_file
from mythos_convert.support.safe_paths import refuse_output_over_inputs
from mythos_convert.support.ui import info, warn

Q = gguf.GGMLQuantizationType


def open_export_source(src: str | Path, config_yaml: str | Path | None = None) -> ModelSource:
    """The HF folder or native checkpoint a GGUF is written from (a GGUF is not re-quantized: its
    source is what verify compares the new file with)."""
    path = Path(src)
    if path.suffix == ".gguf" and path.is_file():
        raise MythosError(f"{path} is already a GGUF file: pass the HF folder or the ckpt.pt it was converted from")
    return open_source(path, config_yaml=config_yaml, arrays=True)  # an HF folder's tensors without torch


def load_metadata(config: MythosConfig, generation: dict[str, Any] | None = None) -> GGUFMetadata:
    """`general.*` from the release metadata (`model_card/mythos.yaml`), as the card uses it."""
    meta = load_meta()
    language = meta.get("language")
    languages = [language] if isinstance(language, str) else list(language or [])
    name = str(meta.get("model_name") or "Mythos")
    sampling = {}
    for ours, theirs in (("temp", "temperature"), ("top_p", "top_p"), ("top_k", "top_k")):
        value = (generation or {}).get(theirs)
        if value is None:
            value = (meta.get("inference") or {}).get(theirs)
        if value is not None:
            sampling[ours] = value
    return GGUFMetadata(
        name=name,
        basename=name.lower().replace(" ", "-"),
        size_label=size_label(config),
        license=meta.get("license"),
        author=meta.get("developer"),
        url=meta.get("repo_url"),
        description=" ".join(str(meta.get("description") or "").split()) or None,
        tags=list(meta.get("tags") or []),
        languages=languages,
        sampling=sampling,
    )


def output_paths(out_dir: Path, outtypes: list[OutType], meta: GGUFMetadata, outfile: str | Path | None):
    """outtype -> path: `{basename}-{size}-{TYPE}.gguf`, or --outfile (with `{ftype}` or a type suffix)."""
    if outfile is None:
        return {t.name: out_dir / f"{meta.basename}-{meta.size_label}-{t.label}.gguf" for t in outtypes}
    outfile = Path(outfile)
    if outfile.suffix != ".gguf":
        raise MythosError(f"--outfile {outfile} must end in .gguf: pass e.g. --outfile {outfile.with_suffix('.gguf')}")
    if "{ftype}" in outfile.name:
        return {t.name: outfile.with_name(outfile.name.replace("{ftype}", t.label)) for t in outtypes}
    if len(outtypes) == 1:
        return {outtypes[0].name: outfile}
    return {t.name: outfile.with_name(f"{outfile.stem}-{t.label}.gguf") for t in outtypes}


@dataclass
class GGUFExport:
    """What `export_gguf` wrote and found."""

    source: ModelSource
    tokenizer: Tokenizer
    written: list[WrittenGGUF]
    verify: dict[str, dict[str, Any]] = field(default_factory=dict)  # file name -> result
    modelfile: Path | None = None
    warnings: list[str] = field(default_factory=list)
    searched: list[Searched] = field(default_factory=list)  # the --target-* files' searches, in order

    @property
    def passed(self) -> bool:
        return all(r.get("passed", False) for r in self.verify.values())


def write_gguf_export(
    src: str | Path,
    outtype: str | None = "f16",
    outfile: str | Path | None = None,
    *,
    force: bool = False,
    tokenizer: str | Path | None = None,
    config_yaml: str | Path | None = None,
    split_max_size: str | int | None = None,
    modelfile: bool = False,
    imatrix: str | Path | None = None,
    target_bpw: str | None = None,
    target_size: str | None = None,
    data: list[str | Path] | None = None,
) -> GGUFExport:
    """Write GGUF file(s) for an HF folder or a native checkpoint (`release.export_gguf` verifies them).

    Args:
        src: an HF folder written by `mythos-convert hf` (files go into it) or a ckpt.pt (files go beside it).
        outtype: one of `OUTTYPES`, a comma list, or `all` (every type from one pass over the weights).
        outfile: the output path (`{ftype}` is replaced by the type); default `{basename}-{size}-{TYPE}.gguf`.
        force: replace existing files.
        split_max_size: e.g. `2G`: shards named like llama.cpp's gguf-split.
        modelfile: also write an Ollama `Modelfile` beside the GGUF.
        imatrix: an importance matrix file (`mythos-convert imatrix`, or llama-imatrix's GGUF one)
            to weight the quantizers by, checked against the model first.
        target_bpw / target_size: comma lists of budgets (`4.5`, `95MB`): one file each, its tensor
            types chosen by measurement (`gguf_target`), named `{basename}-{size}-bpw4.50.gguf`.
            `outtype` None with a target writes only the searched files.
        data: the text the search calibrates and scores on (default: the run's validation split).

    Raises:
        MythosError: bad source, tokenizer, outtype or size; existing output without force.
    """
    targets = parse_targets(target_bpw, target_size)
    types = parse_outtypes(outtype) if outtype is not None or not targets else []
    max_size = parse_size(split_max_size)
    if targets and max_size:
        raise MythosError("--target-bpw/--target-size files are one file each: leave out --split-max-size")
    source, tok, vocab = _opened(src, config_yaml, tokenizer)
    warnings = [w for w in [vocab.normalizer_warning()] if w]
    meta = load_metadata(source.config, source.generation)
    outtypes = types + [searched_outtype(t.label, {}) for t in targets]
    inputs = [("source file", p) for p in source.inputs] + [("tokenizer", tokenizer), ("config", config_yaml)]
    inputs += [("importance matrix", imatrix), *(("data", d) for d in data or [])]
    paths = _checked_paths(source.out_dir, outtypes, meta, outfile, inputs, force=force, before_search=bool(targets))
    weights = _imatrix_info(imatrix, source.config) if imatrix is not None else None
    searched = search_targets(source, tok, vocab, meta, targets, imatrix=weights, data=data) if targets else []
    options = dict(split_max_size=max_size, force=force, imatrix=weights, searched=[s.outtype for s in searched])
    written = write_gguf(source.tensors(), source.config, vocab, meta, paths, **options)
    warnings += [line for w in written if (line := _all_fell_back(w))]
    for line in warnings:  # after the write: a refused input gets its error alone
        warn(line)
    export = GGUFExport(source, tok, written, warnings=warnings, searched=searched)
    _name_commands(searched, written[len(types) :], meta, imatrix)
    if modelfile:
        target = _modelfile_target(written).path
        export.modelfile = write_modelfile(target, tok, source.generation, source.config.max_seq_len, force=force)
    return export


def _opened(src: str | Path, config_yaml: str | Path | None, tokenizer: str | Path | None) -> tuple:
    """The source, its tokenizer and the GGUF vocabulary built from it (said on the console)."""
    source = open_export_source(src, config_yaml)
    tok, where = source.tokenizer(tokenizer)
    step = f" (step {source.checkpoint.step})" if source.checkpoint is not None else ""
    info(f"{'checkpoint' if source.kind == 'native' else 'HF folder'} {source.path}{step}, tokenizer from {where}")
    return source, tok, build_vocab(tok, source.config.vocab_size)


def _checked_paths(
    out_dir: Path,
    outtypes: list,
    meta: Any,
    outfile: str | Path | None,
    inputs: list,
    *,
    force: bool,
    before_search: bool,
) -> dict:
    """Each output's path, refused when it lies over an input; with a type search, existing files are
    refused now, before the search's minutes, not after (the writer checks again)."""
    paths = output_paths(out_dir, outtypes, meta, outfile)
    for path in paths.values():
        refuse_output_over_inputs(path, inputs)
        if before_search:
            check_output_file(path, force)
    return paths


def _name_commands(searched: list, written: list[WrittenGGUF], meta: Any, imatrix: str | Path | None) -> None:
    """The llama-quantize command that writes each searched file's bytes from our F32 file."""
    f32 = f"{meta.basename}-{meta.size_label}-F32.gguf"
    for found, w in zip(searched, written, strict=True):
        found.command = command_line(found.choice.recipe, f32, w.path.name, imatrix and Path(imatrix).name)


def _all_fell_back(written: WrittenGGUF) -> str:
    """A warning when no matrix of a quantized file has its main type (rows too short for 256-blocks)."""
    if written.outtype.recipe is not None:  # a searched file has no main type: its recipe chose each one
        return ""
    main = written.outtype.qtype
    matrices = [p for p in written.plans if len(p.shape) > 1]
    if main in (Q.F32, Q.F16, Q.BF16) or any(p.qtype == main for p in matrices):
        return ""
    counts: dict[str, int] = {}
    for p in matrices:
        counts[p.qtype.name] = counts.get(p.qtype.name, 0) + 1
    instead = ", ".join(f"{name} x{n}" for name, n in counts.items())
    return (
        f"{written.path.name}: no matrix of this model fits {main.name}'s {gguf.GGML_QUANT_SIZES[main][0]}-blocks "
        f"(rows of {sorted({p.shape[-1] for p in matrices})}), so it holds {instead} instead, as llama.cpp would "
        "write it; a model with rows of a multiple of 256 gets the real mix"
    )


def _imatrix_info(path: str | Path, config: MythosConfig) -> ImatrixInfo:
    """Read and check an imatrix file for this model (one error naming the first mismatch)."""
    stats = read_imatrix(path, config)
    info(f"importance matrix {path}: {len(stats.sums)} matrices, {stats.chunk_count} chunks")
    return ImatrixInfo(stats.weights(), Path(path).name, stats.datasets[0] if stats.datasets else "", stats.chunk_count)


def _modelfile_target(written: list[WrittenGGUF]) -> WrittenGGUF:
    """The file a Modelfile points at: the first of `RECOMMENDED` written (Q4_K_M, Q8_0, F16), else the first."""
    ranked = [w for w in written if w.outtype.label in RECOMMENDED]
    return min(ranked, key=lambda w: RECOMMENDED.index(w.outtype.label)) if ranked else written[0]


def render_export(export: GGUFExport) -> list:
    """What `gguf` prints, in order: the table of each file (type, size, bits per weight, parity) and
    of every tensor stored at another type than its file's main one, grouped by type and reason
    (llama.cpp's rules); then each searched file's figures and llama-quantize command; the Modelfile."""
    lines: list = [_export_tables(export)]
    for found in export.searched:
        choice = found.choice
        lines.append(
            f"{found.target.label}: {choice.file_bytes:,} bytes ({choice.bpw:.3f} bits/weight, budget "
            f"{choice.target_bytes:,}), mean KL {found.scored_kl:.4g} on held-apart text ({found.calibration})"
        )
        lines.append(f"  same file with llama.cpp: {found.command}")
    if export.modelfile is not None:
        lines.append(f"Ollama: ollama create mythos -f {export.modelfile}")
    return lines


def _export_tables(export: GGUFExport):
    from rich.console import Group
    from rich.table import Table

    table = Table(title=f"GGUF from {export.source.path}")
    # a file or tensor name that does not fit breaks across lines (folds): cut short, it says nothing
    for column in ("file", "size", "bits/weight", "other types", "max |diff|", "top-1", "greedy", "result"):
        table.add_column(column, overflow="fold" if column == "file" else "ellipsis")
    differing = Table(title="tensors not at their file's type (llama.cpp's rules)")
    for column in ("file", "type", "tensors", "why"):
        differing.add_column(column, overflow="fold" if column in ("file", "tensors") else "ellipsis")
    for w in export.written:
        groups = _differing_groups(w)
        others = other_types(groups)
        r = export.verify.get(w.path.name)
        if r is None:
            cells = ["-", "-", "-", "not verified"]
        else:
            cells = [
                f"{r['max_abs_diff']:.3g}" if isinstance(r.get("max_abs_diff"), float) else str(r.get("max_abs_diff")),
                f"{r['argmax_agreement'] * 100:.1f}%",
                "yes" if r["greedy_equal"] else "no",
                "[green]pass[/green]" if r["passed"] else "[red]FAIL[/red]",
            ]
        names = "\n".join(p.name for p in w.paths)
        table.add_row(names, f"{w.nbytes / 1e6:.1f} MB", f"{_bits_per_weight(w):.2f}", others, *cells)
        for (qtype, why), tensors in groups.items():
            differing.add_row(w.path.name, qtype, _compact(tensors, _n_layers(w)), why)
    return Group(table, differing) if differing.row_count else table


def other_types(groups: dict[tuple[str, str], list[str]]) -> str:
    """The table's "other types" cell: how many tensors each type other than the file's holds, a
    type once however many reasons put tensors at it (`Q6_K x3, Q4_K x2`), or "-"."""
    counts: dict[str, int] = {}
    for (qtype, _), names in groups.items():
        counts[qtype] = counts.get(qtype, 0) + len(names)
    return ", ".join(f"{qtype} x{n}" for qtype, n in counts.items()) or "-"


def _differing_groups(written: WrittenGGUF) -> dict[tuple[str, str], list[str]]:
    groups: dict[tuple[str, str], list[str]] = {}
    for plan in written.special:
        groups.setdefault((plan.qtype.name, plan.note), []).append(plan.name)
    return groups


def _bits_per_weight(written: WrittenGGUF) -> float:
    weights = sum(math.prod(p.shape) for p in written.plans)
    return 8 * sum(p.nbytes for p in written.plans) / weights if weights else 0.0


def _n_layers(written: WrittenGGUF) -> int:
    return len({p.name.split(".")[1] for p in written.plans if p.name.startswith("blk.")})


def _compact(names: list[str], n_layers: int) -> str:
    """`blk.0.attn_v.weight, blk.1.attn_v.weight` -> `blk.{0,1}.attn_v.weight` (one entry per kind),
    `blk.*.attn_v.weight` when every layer's is listed."""
    by_kind: dict[str, list[str]] = {}
    for name in names:
        parts = name.split(".", 2)
        if len(parts) == 3 and parts[0] == "blk" and parts[1].isdigit():
            by_kind.setdefault(f"blk.{{}}.{parts[2]}", []).append(parts[1])
        else:
            by_kind.setdefault(name, [])

    def spelled(kind: str, layers: list[str]) -> str:
        if not layers:
            return kind
        return kind.format("*" if len(layers) == n_layers else "{" + ",".join(layers) + "}")

    return ", ".join(spelled(kind, layers) for kind, layers in by_kind.items())
