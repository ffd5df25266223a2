"""The release steps `hf` and `gguf` run: write -> verify -> card, with one failure policy.

The writers (`export.hf`, `export.gguf`) only write; the verifiers only compare; the card
only renders. This is the one module that imports all three, so every import still points down.

- `export_hf`: plan (read and check every input, before anything is written), then in a temporary
  folder beside the output: write the files, verify them against the native model (verify.json),
  render the card; then one rename puts the folder in place. A failed verification still
  publishes the folder, with the failure in verify.json so `push` refuses it, and raises.
- `export_gguf`: write the GGUF file(s), verify each in llama.cpp (recorded in verify.json of its
  folder), and re-render the card of an HF folder that received them.
- `evaluate`: `eval`'s measurements (recorded in eval.json), then the card of every folder they
  were recorded in, whose Files table and chart show them.

Every failure a user can cause is a `MythosError`; the CLI turns it into one line and exit 2.
The verifiers and the GGUF writer import torch, so they are imported where they run: `hf
--no-verify` exports without torch (seconds saved). No cycle is hidden by that; nothing below
imports this module.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mythos_convert.card import CARD_FILE, write_card
from mythos_convert.errors import MythosError, VerificationFailed
from mythos_convert.export.hf import plan_hf_export, write_hf_files
from mythos_convert.formats.hf_folder import CONFIG_FILE
from mythos_convert.support.atomic import atomic_dir, check_output_file
from mythos_convert.support.safe_paths import refuse_output_over_inputs, require_file
from mythos_convert.support.ui import info, warn

if TYPE_CHECKING:
    from tokenizers import Tokenizer

    from mythos_convert.evaluate.report import EvalReport
    from mythos_convert.export.gguf import GGUFExport


@dataclass
class HFExport:
    """What `export_hf` produced."""

    folder: Path
    dtype: str
    files: list[str]
    seconds: float
    verify: dict[str, Any] | None = None
    timings: dict[str, float] = field(default_factory=dict)


def export_hf(ckpt: str | Path, out: str | Path, *, verify: bool = True, card: bool = True, **options: Any) -> HFExport:
    """Convert a native checkpoint into an HF Llama folder `out`, then verify it against the native model.

    Args:
        ckpt: native checkpoint (ours or the reference's).
        out: output folder; a non-empty one needs `force=True` (then it is replaced atomically).
        verify: run the parity check (and record verify.json) before the folder is put in place.
            Without it, a checkpoint whose weights need no cast is exported without torch.
        card: write README.md.
        options: `export.hf.plan_hf_export`'s keywords: tokenizer, config_yaml, dtype,
            max_shard_size (`5GB`, `500MB`, or bytes as a number or a digit string), force,
            allow_nonfinite, temperature, top_p.

    Returns:
        HFExport with the folder, the files and the verify result (None when not verified).

    Raises:
        MythosError: any bad input (named).
        VerificationFailed: a failed verification (the folder is still written, with the failure
            recorded in verify.json so `push` refuses it; the export is its `output`).
    """
    started = time.perf_counter()
    plan = plan_hf_export(ckpt, out, torch_free=not verify, **options)
    timings: dict[str, float] = {}
    result = None
    with atomic_dir(plan.out, options.get("force", False)) as tmp:
        files = write_hf_files(plan, tmp)
        plan.weights = {}  # written: drop this reference before verify loads two models (not .clear(): may be shared)
        timings["write"] = time.perf_counter() - started
        if verify:
            from mythos_convert.verify.hf import verify_hf  # torch: only when verifying

            t0 = time.perf_counter()
            result = verify_hf(tmp, plan.source, tokenizer=plan.tokenizer, name=plan.out.name)
            timings["verify"] = time.perf_counter() - t0
        if card:
            write_card(tmp)
            files.append("README.md")
    export = HFExport(plan.out, plan.dtype, files, time.perf_counter() - started, result, timings)
    if result is not None and not result["passed"]:
        raise VerificationFailed(
            f"verification of {plan.out} failed ({'; '.join(result.get('failures', []))}): "
            "the folder was written with the failure in verify.json; report this as a bug",
            {"hf": result},
            export,
        )
    return export


def export_gguf(
    src: str | Path,
    outtype: str | None = None,
    outfile: str | Path | None = None,
    *,
    verify: bool = True,
    **options: Any,
) -> GGUFExport:
    """Write GGUF file(s) for an HF folder or a native checkpoint, then verify them in llama.cpp.

    Args:
        src: an HF folder written by `mythos-convert hf` (files go into it) or a ckpt.pt (files go beside it).
        outtype: one of `OUTTYPES`, a comma list, or `all` (every type from one pass over the weights);
            default `f16`, or with `target_bpw`/`target_size` only the searched files.
        outfile: the output path (`{ftype}` is replaced by the type); default `{basename}-{size}-{TYPE}.gguf`.
        verify: run `verify_gguf` on each file and record it in the folder's verify.json.
        options: `export.gguf.write_gguf_export`'s keywords: force, tokenizer,
            config_yaml, split_max_size, modelfile, imatrix, target_bpw, target_size, data.

    Raises:
        MythosError: bad source, tokenizer, outtype, size or imatrix; existing output without force.
        VerificationFailed: a file failed its check (every file is still written, the failure in
            verify.json; the export is its `output`).
    """
    from mythos_convert.export.gguf import write_gguf_export  # torch only for a native checkpoint

    if outtype is None and not (options.get("target_bpw") or options.get("target_size")):
        outtype = "f16"
    export = write_gguf_export(src, outtype, outfile, **options)
    source = export.source
    if verify and export.written:
        from mythos_convert.verify.gguf import verify_gguf  # torch and llama.cpp
        from mythos_convert.verify.reference import native_reference

        # the native side once for every file: the source opened and hashed, its logits and greedy tokens
        ref = native_reference(export.written[0].path, source.path, tokenizer_obj=export.tokenizer)
        for w in export.written:  # verify_gguf records each result in the file's folder (verify.json)
            export.verify[w.path.name] = verify_gguf(w.path, reference=ref, show=False)
    if source.kind == "hf" and all(w.path.parent.resolve() == source.path.resolve() for w in export.written):
        _rerender_card(source.path)
    failed = [name for name, r in export.verify.items() if not r.get("passed")]
    if failed:
        reasons = "; ".join(export.verify[failed[0]].get("failures") or ["past tolerance"])
        raise VerificationFailed(
            f"verification of {', '.join(failed)} failed: {reasons}; the files were written with the failure "
            "in verify.json: report this as a bug",
            export.verify,
            export,
        )
    return export


def verify(
    target: str | Path,
    ckpt: str | Path | None = None,
    *,
    tokenizer: str | Path | None = None,
    config_yaml: str | Path | None = None,
    mode: str = "auto",
    **kwargs: Any,
) -> dict[str, Any]:
    """Verify an exported HF folder (`verify.hf`) or GGUF file (`verify.gguf`) against its native model.

    Args:
        target: an HF folder written by `mythos-convert hf`, or a `.gguf` file.
        ckpt: the native checkpoint (default: the source recorded at export time, if it still exists).
        tokenizer: tokenizer.json of the native model (default: beside ckpt, else inside it).
        config_yaml: YAML `model:` config for checkpoints without an embedded config.
        mode: "whole" (both models, logits and greedy), "layerwise" (block by block, `verify.layerwise`;
            not recorded in verify.json) or "auto" (layerwise where whole would not fit, `verify.fit`).
        kwargs: the verifier's own keywords (record, show, ...).

    Returns:
        The result dict, also recorded in the folder's verify.json.

    Raises:
        MythosError: a target that is neither, or a bad checkpoint or tokenizer.
        VerificationFailed: past tolerance (recorded as failed in verify.json; the result attached).
    """
    target = Path(target)
    if _verify_mode(target, mode) == "layerwise":
        from mythos_convert.verify.layerwise import verify_layerwise

        result = verify_layerwise(
            target, ckpt, tokenizer=tokenizer, config_yaml=config_yaml, show=kwargs.get("show", True)
        )
    else:
        result = _verified(target, ckpt, tokenizer, config_yaml, **kwargs)
    if not result.get("passed"):
        reasons = "; ".join(result.get("failures") or []) or "past tolerance"
        raise VerificationFailed(
            f"verification of {target} failed: {reasons}; check that --ckpt is the checkpoint it was exported from, "
            "then re-export it (report a bug if it still fails)",
            {target.name if target.suffix == ".gguf" else "hf": result},
            result,
        )
    return result


def _verify_mode(target: Path, mode: str) -> str:
    """Whole or layerwise, said in the output (auto: by what fits, `verify.fit`)."""
    from mythos_convert.source import open_source
    from mythos_convert.verify.fit import MODES, choose_mode

    if mode not in MODES:
        raise MythosError(f"verify mode {mode!r} is not one of {', '.join(MODES)}")
    if mode == "auto" and not target.exists():
        return "whole"  # its verifier names what is missing
    try:
        chosen, why = choose_mode(target, mode, lambda: open_source(target).config)
    except MythosError:
        return "whole"  # a target that does not open: its verifier names what is wrong, in its own words
    info(f"verify: {chosen} ({why})")
    return chosen


def _verified(target: Path, ckpt: str | Path | None, tokenizer: Any, config_yaml: Any, **kwargs: Any) -> dict[str, Any]:
    """The verifier's result for `target`, whichever it is (HF folder or GGUF file)."""
    if target.suffix == ".gguf":
        require_file(target, "GGUF file", "pass the path of a .gguf file")
        from mythos_convert.verify.gguf import verify_gguf

        return verify_gguf(target, ckpt, tokenizer=tokenizer, config_yaml=config_yaml, **kwargs)
    if not target.is_dir():
        raise MythosError(f"{target} is neither an exported folder nor a .gguf file: pass what `hf`/`gguf` wrote")
    from mythos_convert.verify.digests import Digests

    # hashing starts before torch and transformers are imported: it runs on the other core meanwhile
    with Digests(target, source=ckpt) as digests:
        from mythos_convert.data.tokenizer import load_tokenizer
        from mythos_convert.verify.hf import verify_hf

        tok = load_tokenizer(tokenizer) if tokenizer is not None else None
        return verify_hf(target, ckpt, tokenizer=tok, config_yaml=config_yaml, digests=digests, **kwargs)


def _rerender_card(folder: Path) -> None:
    """The card lists the GGUF files of its folder: render it again now that there are new ones."""
    try:
        write_card(folder)
    except MythosError as exc:
        warn(f"GGUF written, but the model card could not be re-rendered: {exc}")


def evaluate(
    paths: list[str | Path], *, report_json: str | Path | None = None, force: bool = False, **options: Any
) -> EvalReport:
    """`evaluate.run.run_eval` (its keywords), then each folder's card rendered with the new figures.

    `report_json`: also write the whole report there (strict JSON); an existing file needs `force`,
    and it may not be one of the inputs (checked before anything runs).
    """
    from mythos_convert.evaluate.report import write_report_json
    from mythos_convert.evaluate.run import run_eval  # torch and the engines

    if report_json is not None:
        check_output_file(report_json, force)
        inputs = [("target", t) for t in paths] + [("data", d) for d in options.get("data") or []]
        inputs += [("tokenizer", options.get("tokenizer")), ("config", options.get("config_yaml"))]
        refuse_output_over_inputs(report_json, inputs)
    report = run_eval(paths, **options)
    for recorded in report.recorded:
        folder = Path(recorded).parent
        if (folder / CARD_FILE).is_file() and (folder / CONFIG_FILE).is_file():
            try:
                write_card(folder)
            except MythosError as exc:
                warn(f"eval recorded, but the model card could not be re-rendered: {exc}")
    if report_json is not None:
        write_report_json(report, report_json)
    return report


def render_card(folder: str | Path, meta: str | Path | None = None) -> Path:
    """(Re)write an exported folder's README.md (`card.write_card`); return its path.

    Raises:
        MythosError: a folder with no config.json, or one lacking a field the card states (a card
            for no model, or for a damaged config, would mislead); see `write_card`.
    """
    from mythos_convert.card import REQUIRED_CONFIG_FIELDS, read_config

    folder = Path(folder)
    if folder.is_dir():
        if not (folder / CONFIG_FILE).is_file():
            raise MythosError(f"{folder} has no config.json: pass the folder `mythos-convert hf` wrote")
        missing = [key for key in REQUIRED_CONFIG_FIELDS if key not in read_config(folder)]
        if missing:
            raise MythosError(
                f"{folder / 'config.json'} lacks {missing}, which the card states: re-export the folder with "
                "`mythos-convert hf`"
            )
    return write_card(folder, meta)


def train_tokenizer_file(
    out: str | Path,
    data: list[str | Path] | None = None,
    *,
    vocab_size: int = 2048,
    normalizer: str = "none",
    force: bool = False,
) -> Tokenizer:
    """Train the reference's ByteLevel BPE on `data` (cleaned as `train` cleans it; default: the
    embedded corpus) and save it as `out` (tokenizer.json, atomically).

    Raises:
        MythosError: an existing `out` without `force`, an `out` over one of the data files, no
            usable text, a bad vocabulary size or normalizer.
    """
    from mythos_convert.data.corpus import load_corpus
    from mythos_convert.data.pipeline import prepare_documents
    from mythos_convert.data.tokenizer import save_tokenizer, train_tokenizer

    check_output_file(out, force)
    refuse_output_over_inputs(out, [("data", d) for d in data or []])
    texts, report = prepare_documents(load_corpus(data))
    info(report.description)
    tok = train_tokenizer(texts, vocab_size, normalizer)
    save_tokenizer(tok, out, force=force)
    return tok
