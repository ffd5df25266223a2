"""Verify a GGUF file in llama.cpp (through llama-cpp-python) against the native Mythos model.

Both sides get the same token ids (`verify.inputs.sequences`). Logits are compared at every
position, greedy 32-token generations of two prompts are compared, llama.cpp's tokenization of a
text set is compared with the tokenizer's, every tensor is compared with the source's, and the file
is also loaded in transformers (`gguf_file=`). The native side (`verify.reference.NativeReference`)
is computed once per invocation and shared by every file verified.

AMX: llama.cpp's AMX matmul path crashes (llama.cpp issue 20824); the llama.cpp engine loads every
model with extra buffer types off (`engines.llama_buffers`), so a stock `pip install
llama-cpp-python` verifies on every CPU; it costs speed on AMX machines only.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from mythos_convert.engines.base import Engine
from mythos_convert.engines.divergence import DivergenceAccumulator
from mythos_convert.engines.hf import hf_logits, transformers_from_gguf
from mythos_convert.engines.llamacpp import llama_engine_of, load_llama
from mythos_convert.errors import MythosError
from mythos_convert.export.gguf_plan import OUTTYPES
from mythos_convert.export.gguf_vocab import NORMALIZER_PROBES
from mythos_convert.source import ModelSource, gguf_readers, open_gguf
from mythos_convert.support.safe_paths import require_file
from mythos_convert.support.ui import info, result
from mythos_convert.verify.gates import (
    GGUF_TOLERANCES,
    SEARCHED_GATE_MIXES,
    TRANSFORMERS_F32_TOLERANCE,
    Tolerance,
    describe_tolerance,
    scaled_tolerance,
    searched_gate,
)
from mythos_convert.verify.gguf_tensors import FLOAT_TYPES, TensorCheck, check_tensors, header_problems
from mythos_convert.verify.inputs import GREEDY_TOKENS, PROMPTS, TOKENIZER_TEXTS
from mythos_convert.verify.parity import (
    check,
    compare_logits,
    merge_comparisons,
    nan_max,
    nonfinite_reasons,
    render_table,
)
from mythos_convert.verify.record import hash_files, record_result
from mythos_convert.verify.reference import NativeReference, native_reference

ENGINE = "llama.cpp via llama-cpp-python, F32 KV cache, extra buffer types off (AMX workaround)"


def tokenization_diffs(llm, tokenizer, texts: tuple[str, ...] | list[str]) -> tuple[float, list[dict[str, Any]]]:
    """Compare llama.cpp's tokenization with the tokenizer's (content ids, specials parsed in both).

    A difference is `expected` when the tokenizer's normalizer changes the text (llama.cpp runs no
    normalizer) and llama.cpp agrees on the normalized text; any other difference is a bug.
    """
    normalizer = tokenizer.normalizer
    diffs, same = [], 0
    for text in texts:
        ours = tokenizer.encode(text, add_special_tokens=False).ids
        theirs = list(llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)) if text else []
        if ours == theirs:
            same += 1
            continue
        normalized = normalizer.normalize_str(text) if normalizer is not None else text
        expected = normalized != text and list(
            llm.tokenize(normalized.encode("utf-8"), add_bos=False, special=True)
        ) == (ours)
        diffs.append({"text": text, "expected": bool(expected), "tokenizer": ours, "llama_cpp": theirs})
    return same / max(1, len(texts)), diffs


def _tensor_failures(tensors: list[TensorCheck], logits_failed: bool) -> list[str]:
    """The tensor checks that fail verify: NaN/Inf and float-type excess always, any excess when the logits failed.

    A quantized tensor's bound is measured, not proven, so on its own it only localises a logit
    failure; a float type's bound is its rounding, and NaN in a tensor can hide behind finite logits
    (llama.cpp quantizes activations to 8 bits before a quantized matmul).
    """
    out = []
    for t in tensors:
        if t.bad and (logits_failed or math.isnan(t.rel_error) or t.ggml_type in FLOAT_TYPES):
            out.append(t.cause or f"{t.name}: relative error {t.rel_error:.3g} > {t.bound:g}")
    return out


def _tensor_summary(tensors: list[TensorCheck]) -> dict[str, Any]:
    """Worst relative error per ggml type and every tensor above its bound (for verify.json)."""
    worst: dict[str, float] = {}
    for t in tensors:
        worst[t.ggml_type] = nan_max([worst.get(t.ggml_type, 0.0), t.rel_error])
    return {"worst_rel_error": worst, "above_bound": [{**t.as_dict(), "cause": t.cause} for t in tensors if t.bad]}


def _file_type(source: ModelSource) -> str:
    """The file type label (F16, Q4_K_M, ...) its header states."""
    import gguf

    try:
        file_type = int(source.gguf_reader.get_field(gguf.Keys.General.FILE_TYPE).contents())
    except Exception as exc:  # gguf-py raises AttributeError, ValueError... on a foreign header
        raise MythosError(
            f"{source.path} is not a GGUF file mythos-convert can read ({type(exc).__name__}: {str(exc)[:80]}): "
            "pass a .gguf file written by `mythos-convert gguf`"
        ) from exc
    labels = {int(t.file_type): t.label for t in OUTTYPES.values()}
    return labels.get(file_type, f"file_type {file_type}")


def _searched(source: ModelSource) -> tuple[str, str] | None:
    """A searched file's target (`mythos.quantize.target`) and the mix whose gate it gets; None for a fixed mix."""
    from mythos_convert.export.gguf_plan import plan_tensors
    from mythos_convert.quant.recipe import KEY_TARGET

    field = source.gguf_reader.get_field(KEY_TARGET)
    if field is None:
        return None
    tensors = [t for reader in gguf_readers(source.path, source.gguf_reader) for t in reader.tensors]
    file_bpw = 8 * sum(int(t.n_bytes) for t in tensors) / sum(int(t.n_elements) for t in tensors)
    mix_bpw = {}
    for label in SEARCHED_GATE_MIXES:
        plans = plan_tensors(source.config, OUTTYPES[label.lower()])
        mix_bpw[label] = 8 * sum(p.nbytes for p in plans) / sum(math.prod(p.shape) for p in plans)
    return str(field.contents()), searched_gate(file_bpw, mix_bpw)


@dataclasses.dataclass
class _File:
    """What is read of a GGUF file before llama.cpp runs it."""

    label: str  # its file type, or a searched file's target
    gate: Tolerance | None  # what its logits must meet (before scaling by the logits' spread)
    shards: int
    files: dict[str, Any]  # sha256/size per file, taken before llama.cpp reads them
    tensors: list[TensorCheck]
    header: list[str]  # header keys that contradict the reference's config
    gate_of: str = ""  # a searched file's: the fixed mix whose gate it gets


def _read_file(gguf_path: Path, ref: NativeReference) -> _File:
    """Open the file with the reference's config, hash it, check its tensors and header.

    Nothing of it is held afterwards: its memory map is not kept while llama.cpp and transformers run.
    """
    src = open_gguf(gguf_path, ref.config)
    label = _file_type(src)
    gate = GGUF_TOLERANCES.get(label)
    searched = _searched(src)
    if searched is not None:  # the target names it; its gate is a fixed mix's (`gates.searched_gate`)
        label, gate = searched[0], GGUF_TOLERANCES[searched[1]]
    files = hash_files(gguf_path.parent, [p.name for p in src.inputs])
    tensors = check_tensors(src, ref.tensors, ref.config)
    header = header_problems(src.gguf_reader, ref.config)
    return _File(label, gate, len(src.inputs), files, tensors, header, searched[1] if searched else "")


def verify_gguf(
    gguf_path: str | Path,
    ckpt: str | Path | None = None,
    *,
    tokenizer: str | Path | None = None,
    config_yaml: str | Path | None = None,
    tokenizer_obj=None,
    check_transformers: bool = True,
    record: bool = True,
    show: bool = True,
    reference: NativeReference | None = None,
) -> dict[str, Any]:
    """Compare a GGUF file run by llama.cpp with the native model; return (and record) the result.

    Args:
        gguf_path: the file (the first shard of a split file).
        ckpt: the native checkpoint; default: the HF folder holding the file (its weights in the
            native engine).
        tokenizer / tokenizer_obj: the tokenizer (path or loaded); default: the folder's or the checkpoint's.
        check_transformers: also load the file with transformers (`gguf_file=`) and compare.
        record: store the result in the folder's verify.json under the file's name.
        reference: the native side, already computed (`native_reference`), for several files of
            one source; `ckpt` and the tokenizer are then not read.

    A failed comparison is returned with `passed: False` and `failures`, not raised.
    """
    gguf_path = Path(gguf_path)
    require_file(gguf_path, "GGUF file", "pass the path of a .gguf file")
    if reference is None:
        _require_gguf(gguf_path)  # a foreign file is named before any reference is looked for
    ref = reference or native_reference(
        gguf_path, ckpt, config_yaml=config_yaml, tokenizer=tokenizer, tokenizer_obj=tokenizer_obj
    )
    file = _read_file(gguf_path, ref)
    info(f"verifying {gguf_path.name} ({file.label}) in llama.cpp against the {ref.description}")
    if file.header:  # llama.cpp would refuse the shapes or silently compute something else: name the key instead
        out = _failed_early(gguf_path, file, ref)
        _report(out, [], [], gguf_path, ref.description, show=show, record=record, early=True)
        return out
    out, rows = _run_llama(gguf_path, file, ref)
    if check_transformers and file.shards == 1:
        rows.append(_transformers_row(gguf_path, ref, file.label, out))
    _report(out, rows, out["tokenizer_differences"], gguf_path, ref.description, show=show, record=record)
    return out


def _require_gguf(path: Path) -> None:
    """Refuse a file gguf-py cannot read (gguf-py raises ValueError, KeyError, struct errors... on one)."""
    try:
        gguf_readers(path)
    except Exception as exc:
        raise MythosError(
            f"{path} is not a GGUF file mythos-convert can read ({type(exc).__name__}: {str(exc)[:80]}): "
            "pass a .gguf file written by `mythos-convert gguf`"
        ) from exc


def _run_llama(gguf_path: Path, file: _File, ref: NativeReference) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The llama.cpp checks (logits, greedy, tokenization) and the tensors: the result and its table rows."""
    llm = load_llama(gguf_path, max(map(len, ref.seqs)) + GREEDY_TOKENS, f32_kv=True)
    engine = llama_engine_of(llm, gguf_path.name, file.label, ref.config.vocab_size)
    try:
        tol = file.gate
        comparison = _logit_parity(ref, engine)
        tol = scaled_tolerance(tol, ref.logit_std) if tol is not None else None
        greedy_equal = _greedy_parity(ref, engine)
        texts = list(dict.fromkeys([*TOKENIZER_TEXTS, *NORMALIZER_PROBES, *PROMPTS]))
        tok_agreement, tok_diffs = tokenization_diffs(llm, ref.tokenizer, texts)
    finally:
        engine.close()
    logit_failures = check(comparison, tol, greedy_equal)[1]  # NaN/Inf fail every type
    unexpected = [d for d in tok_diffs if not d["expected"]]
    failures = list(logit_failures) + _tensor_failures(file.tensors, logits_failed=bool(logit_failures))
    if unexpected:
        failures.append(f"llama.cpp tokenizes {len(unexpected)} text(s) differently, e.g. {unexpected[0]['text']!r}")
    out: dict[str, Any] = {
        **_facts(gguf_path, file, ref, failures),
        **comparison,
        "greedy_equal": greedy_equal,
        "tolerance": describe_tolerance(tol) + (f" ({file.gate_of}'s gate)" if file.gate_of else ""),
        "logit_std": ref.logit_std,
        "tokenizer_agreement": tok_agreement,
        "tokenizer_differences": tok_diffs,
        "n_tokens": sum(map(len, ref.seqs)),
        "n_sequences": len(ref.seqs),
        "checkpoint": ref.given,  # a name: verify.json is published
        "engine": ENGINE,
    }
    rows = [
        {"name": f"llama.cpp logits, {file.label}", **comparison, "greedy_equal": greedy_equal}
        | {"tolerance": out["tolerance"], "passed": not logit_failures},
        {"name": "llama.cpp tokenization", "tokenizer_agreement": tok_agreement}
        | {"tolerance": "only normalizer differences", "passed": not unexpected},
    ]
    return out, rows


def _facts(gguf_path: Path, file: _File, ref: NativeReference, failures: list[str]) -> dict[str, Any]:
    """The fields every result of a file has, passed or failed early."""
    return {
        "passed": not failures,
        "target": gguf_path.name,
        "kind": "gguf",
        "dtype": file.label,
        "reference": ref.description,
        "failures": failures,
        "files": file.files,
        "source": ref.digest,
        "tensors": _tensor_summary(file.tensors),
    }


def _failed_early(gguf_path: Path, file: _File, ref: NativeReference) -> dict[str, Any]:
    """The result of a file refused before llama.cpp ran it (its header contradicts the checkpoint)."""
    return _facts(gguf_path, file, ref, file.header + _tensor_failures(file.tensors, logits_failed=True))


def _logit_parity(ref: NativeReference, engine: Engine) -> dict[str, Any]:
    """llama.cpp's logits against the native engine's at every position of every sequence (|diff|, top-1, KL)."""
    kl = DivergenceAccumulator()
    parts = []
    for want, seq in zip(ref.logits, ref.seqs, strict=True):
        got = engine.logits(seq)
        parts.append(compare_logits(want, got, ("native", "GGUF")))
        kl.add(want, got)
    divergence = kl.summary()
    return {
        **merge_comparisons(parts, list(map(len, ref.seqs))),
        "mean_kl": divergence.mean_kl,
        "p99_kl": divergence.p99_kl,
        "max_kl": divergence.max_kl,
    }


def _greedy_parity(ref: NativeReference, engine: Engine) -> bool:
    """Do both engines continue the first and the longest prompt with the same greedy tokens?"""
    return all(engine.greedy(ref.seqs[i], GREEDY_TOKENS) == tokens for i, tokens in ref.greedy.items())


def _transformers_row(gguf_path: Path, ref: NativeReference, label: str, out: dict[str, Any]) -> dict[str, Any]:
    """The file loaded by transformers (`gguf_file=`) against the native logits, added to `out`; its table row.

    F32 is gated (rounding only), other types reported.
    """
    model = transformers_from_gguf(gguf_path)
    parts = [
        compare_logits(want, hf_logits(model, seq), ("native", "transformers-from-GGUF"))
        for want, seq in zip(ref.logits, ref.seqs, strict=True)
    ]
    cmp = merge_comparisons(parts, list(map(len, ref.seqs)))
    failures = nonfinite_reasons(cmp)
    if label == "F32" and not cmp["max_abs_diff"] <= TRANSFORMERS_F32_TOLERANCE:  # NaN-safe
        failures.append(
            f"transformers-from-GGUF max |diff| {cmp['max_abs_diff']:.3g} > {_short(TRANSFORMERS_F32_TOLERANCE)}"
        )
    out["transformers"] = cmp
    if failures:
        out["failures"].extend(failures)
        out["passed"] = False
    tolerance = f"max<={_short(TRANSFORMERS_F32_TOLERANCE)}" if label == "F32" else "reported"
    return {"name": f"transformers gguf_file=, {label}", **cmp, "tolerance": tolerance, "passed": not failures}


def _short(bound: float) -> str:
    """A power-of-ten bound as verify.json states it: 1e-4 (not 0.0001 nor 1e-04)."""
    return f"{bound:.0e}".replace("e-0", "e-")


def _report(out, rows, tok_diffs, gguf_path: Path, reference: str, *, show: bool, record: bool, early=False) -> None:
    """Print the table (or, for a file refused early, its failures) and record the result."""
    if show and early:
        for line in out["failures"]:
            result(f"  FAIL: {line}")
    elif show:
        result(render_table(rows, title=f"verify {gguf_path.name}: {reference} vs llama.cpp"))
        for diff in tok_diffs:
            kind = "expected (normalizer)" if diff["expected"] else "UNEXPECTED"
            result(f"  tokenization differs, {kind}: {diff['text']!r}")
    if record:
        record_result(gguf_path.parent, gguf_path.name, out)
