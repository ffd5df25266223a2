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
from mythos_convert.errors import MythosError
from mythos_convert.export.hf import plan_hf_export, write_hf_files
from mythos_convert.support.atomic import atomic_dir
from mythos_convert.support.ui import warn

if TYPE_CHECKING:
    from mythos_convert.evaluate.run import EvalReport
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
            max_shard_size, force, allow_nonfinite, temperature, top_p.

    Returns:
        HFExport with the folder, the files and the verify result (None when not verified).

    Raises:
        MythosError: any bad input (named), or a failed verification (the folder is still written,
            with the failure recorded in verify.json so `push` refuses it).
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
        raise MythosError(
            f"verification of {plan.out} failed ({'; '.join(result.get('failures', []))}): "
            "the folder was written with the failure in verify.json; report this as a bug"
        )
    return export


def export_gguf(
    src: str | Path, outtype: str = "f16", outfile: str | Path | None = None, *, verify: bool = True, **options: Any
) -> GGUFExport:
    """Write GGUF file(s) for an HF folder or a native checkpoint, then verify them in llama.cpp.

    Args:
        src: an HF folder written by `mythos-convert hf` (files go into it) or a ckpt.pt (files go beside it).
        outtype: one of `OUTTYPES`, a comma list, or `all` (every type from one pass over the weights).
        outfile: the output path (`{ftype}` is replaced by the type); default `{basename}-{size}-{TYPE}.gguf`.
        verify: run `verify_gguf` on each file and record it in the folder's verify.json.
        options: `export.gguf.write_gguf_export`'s keywords: force, tokenizer,
            config_yaml, split_max_size, modelfile, imatrix.

    Raises:
        MythosError: bad source, tokenizer, outtype, size or imatrix; existing output without force.
    """
    from mythos_convert.export.gguf import write_gguf_export  # torch only for a native checkpoint

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
    return export


def _rerender_card(folder: Path) -> None:
    """The card lists the GGUF files of its folder: render it again now that there are new ones."""
    try:
        write_card(folder)
    except MythosError as exc:
        warn(f"GGUF written, but the model card could not be re-rendered: {exc}")


def evaluate(paths: list[str | Path], **options: Any) -> EvalReport:
    """`evaluate.run.run_eval` (its keywords), then each folder's card rendered with the new figures."""
    from mythos_convert.evaluate.run import run_eval  # torch and the engines

    report = run_eval(paths, **options)
    for recorded in report.recorded:
        folder = Path(recorded).parent
        if (folder / CARD_FILE).is_file() and (folder / "config.json").is_file():
            try:
                write_card(folder)
            except MythosError as exc:
                warn(f"eval recorded, but the model card could not be re-rendered: {exc}")
    return report
