"""Verify a GGUF file in llama.cpp (through llama-cpp-python) against the native Mythos model.

Both sides get the same token ids (the verifier prompts plus random ids). Logits are compared at
every position, greedy 32-token generations are compared, llama.cpp's tokenization of a text set is
compared with the tokenizer's, and the file is also loaded in transformers (`gguf_file=`).

The reference is the native engine in float32 on the weights the GGUF was made from: the
checkpoint, or, for a file inside an HF folder and no checkpoint given, that folder's weights.

AMX: llama.cpp's AMX matmul path (extra buffer types, used for Q8_0/Q4_0 weights on CPUs that
report AMX_INT8) crashes (llama.cpp issue 20824). Verify loads every model with extra buffer types
off (`mythos_convert.engines.llama_buffers`) instead of asking users for a custom llama.cpp build, so a
stock `pip install llama-cpp-python` verifies on every CPU; it costs speed on AMX machines only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mythos_convert.data.tokenizer import load_tokenizer, special_tokens
from mythos_convert.engines.llama_buffers import no_extra_buffers, repacked_weights
from mythos_convert.errors import MythosError
from mythos_convert.export.gguf_plan import OUTTYPES
from mythos_convert.export.gguf_vocab import NORMALIZER_PROBES
from mythos_convert.formats.checkpoint import load_model
from mythos_convert.formats.gguf_files import shard_names, split_count
from mythos_convert.source import ModelSource, open_gguf, open_hf, open_native
from mythos_convert.support.safe_paths import require_file
from mythos_convert.support.ui import info, result
from mythos_convert.verify.divergence import DivergenceAccumulator
from mythos_convert.verify.gguf_tensors import FLOAT_TYPES, TensorCheck, check_tensors, header_problems, source_tensors
from mythos_convert.verify.parity import (
    GREEDY_TOKENS,
    PROMPTS,
    TOKENIZER_TEXTS,
    Tolerance,
    check,
    compare_logits,
    greedy_continue,
    merge_comparisons,
    nan_max,
    native_greedy,
    nonfinite_reasons,
    random_ids,
    render_table,
)
from mythos_convert.verify.record import file_digest, hash_files, record_result

if TYPE_CHECKING:
    import gguf

GREEDY_PROMPTS = 2  # the first prompt and the longest one
# Gates for llama.cpp (F32 KV cache) against the native engine in float32, each about 4x the worst
# case benchmarks/measure_gates.py measured over the reference fixture and five random configs (odd
# heads, GQA 1:1..4:1, odd vocabularies; docs/parity.md has the table and the machine). |diff|
# bounds are for reference logits with a standard deviation up to 1 and grow with it
# (`scaled_tolerance`). Quantized types are gated by the KL divergence of llama.cpp's next-token
# distribution from the native one (mean and 99th percentile over positions): scale-free, and what
# `llama-perplexity --kl-divergence` reports. Measured worst (mean / p99 KL) in the comments.
GGUF_TOLERANCES: dict[str, Tolerance] = {
    # max/sigma' 2.1e-5, top-1 100%, greedy equal in all 6 configs
    "F32": Tolerance(max_abs_diff=1e-4, min_argmax_agreement=1.0, greedy_must_match=True),
    # max/sigma' 0.012, mean 1.4e-3, top-1 99.18%
    "F16": Tolerance(max_abs_diff=0.05, mean_abs_diff=6e-3, min_argmax_agreement=0.965, greedy_must_match=False),
    # max/sigma' 0.087, mean 0.0114, top-1 97.95%
    "BF16": Tolerance(max_abs_diff=0.35, mean_abs_diff=0.05, min_argmax_agreement=0.92, greedy_must_match=False),
}
_KL_GATES = {  # type: (mean KL, p99 KL)
    "Q8_0": (0.0082, 0.02),  # measured 0.00205 / 0.005
    "Q6_K": (0.02, 0.045),  # measured 0.00497 / 0.0112
    "Q5_K_M": (0.15, 0.42),  # measured 0.0368 / 0.105
    "Q5_K_S": (0.15, 0.42),  # measured 0.0373 / 0.104
    "Q5_1": (0.15, 0.43),  # measured 0.0366 / 0.107
    "Q5_0": (0.19, 0.45),  # measured 0.0462 / 0.112
    "Q4_K_M": (0.21, 0.54),  # measured 0.0523 / 0.135
    "Q4_K_S": (0.22, 0.52),  # measured 0.053 / 0.129
    "Q4_1": (0.62, 1.5),  # measured 0.153 / 0.356
    "Q4_0": (0.67, 1.8),  # measured 0.167 / 0.427
    "Q3_K_L": (0.47, 1.2),  # measured 0.117 / 0.286
    "Q3_K_M": (0.5, 1.2),  # measured 0.125 / 0.291
    "Q3_K_S": (0.82, 1.7),  # measured 0.204 / 0.414
    "Q2_K": (1.3, 2.5),  # measured 0.314 / 0.604
}
GGUF_TOLERANCES.update(
    {
        label: Tolerance(max_abs_diff=None, greedy_must_match=False, mean_kl=mean, p99_kl=p99)
        for label, (mean, p99) in _KL_GATES.items()
    }
)
TRANSFORMERS_F32_TOLERANCE = 1e-4  # transformers-from-GGUF f32 against the native engine: rounding only


def scaled_tolerance(tol: Tolerance, logit_std: float) -> Tolerance:
    """A tolerance for logits of spread `logit_std`: the |diff| bounds grow with it above 1 (KL is scale-free).

    Float error in the logits is relative to their size; the bounds are stated for models whose
    reference logits have a standard deviation up to 1 (the measured models have 0.9-3.8).
    """
    scale = max(1.0, logit_std)
    top = None if tol.max_abs_diff is None else tol.max_abs_diff * scale
    mean = None if tol.mean_abs_diff is None else tol.mean_abs_diff * scale
    return dataclasses.replace(tol, max_abs_diff=top, mean_abs_diff=mean)


def _describe_tolerance(tol: Tolerance | None) -> str:
    if tol is None:
        return "no gate for this type: logits must be finite"
    parts = []
    if tol.max_abs_diff is not None:
        parts.append(f"max<={tol.max_abs_diff:.3g}")
    if tol.mean_abs_diff is not None:
        parts.append(f"mean<={tol.mean_abs_diff:.3g}")
    if tol.mean_kl is not None:
        parts.append(f"mean KL<={tol.mean_kl:g}, p99 KL<={tol.p99_kl:g}")
    if tol.min_argmax_agreement is not None:
        parts.append(f"top-1>={tol.min_argmax_agreement:g}")
    if tol.greedy_must_match:
        parts.append("greedy equal")
    return ", ".join(parts)


# --- llama.cpp ---------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """llama.cpp prints context warnings on fd 2 even with verbose=False; hide them while loading."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def load_llama(path: str | Path, n_ctx: int, f32_kv: bool = True, flash_attn: bool = False, repack: bool = False):
    """A llama-cpp-python model returning logits at every position (logits_all); flash attention off
    unless asked (llama-cpp-python's default; llama.cpp's own tools turn it on, eval does too).

    Weights stay in llama.cpp's plain CPU buffer unless `repack` (then CPU_REPACK takes what it can,
    never AMX: `llama_buffers.repacked_weights`); verify's gates were measured plain."""
    try:
        from llama_cpp import Llama
    except ImportError as exc:
        raise MythosError(
            "GGUF verification needs llama-cpp-python: pip install 'llama-cpp-python==0.3.36' "
            "(or mythos-convert[llama-cpp]), or pass --no-verify"
        ) from exc
    kwargs: dict[str, Any] = {"type_k": 0, "type_v": 0} if f32_kv else {}  # 0 = GGML_TYPE_F32
    with repacked_weights() if repack else no_extra_buffers(), _quiet_stderr():
        try:
            return Llama(
                model_path=str(path),
                n_ctx=n_ctx,
                n_batch=n_ctx,
                n_ubatch=n_ctx,
                logits_all=True,
                flash_attn=flash_attn,
                n_threads=max(1, min(8, (os.cpu_count() or 2) // 2)),  # llama-cpp-python's default, capped
                verbose=False,
                **kwargs,
            )
        except ValueError as exc:
            raise MythosError(
                f"llama.cpp could not load {path} ({exc}): the file is not a valid model; "
                "re-export it with `mythos-convert gguf`"
            ) from exc


def llama_logits(llm, ids: list[int]) -> torch.Tensor:
    """Logits [T, V] for `ids` evaluated from an empty cache."""
    llm.reset()
    llm.eval(ids)
    return torch.from_numpy(np.array(llm.scores[: len(ids)], dtype=np.float32))


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


# --- the reference: the native engine ------------------------------------------------------------


def _gguf_facts(path: Path) -> tuple[gguf.GGUFReader, dict[str, Any]]:
    """The file's gguf-py reader and, from its header, the file type label and split count.

    The header is read here only: the tensor and header checks take this reader.
    """
    import gguf

    try:
        reader = gguf.GGUFReader(path)
        file_type = int(reader.get_field(gguf.Keys.General.FILE_TYPE).contents())
    except Exception as exc:  # gguf-py raises ValueError, KeyError, struct errors... on a foreign file
        raise MythosError(
            f"{path} is not a GGUF file mythos-convert can read ({type(exc).__name__}: {str(exc)[:80]}): "
            "pass a .gguf file written by `mythos-convert gguf`"
        ) from exc
    labels = {int(t.file_type): t.label for t in OUTTYPES.values()}
    return reader, {"label": labels.get(file_type, f"file_type {file_type}"), "shards": split_count(reader)}


@dataclasses.dataclass
class _Reference:
    """What a GGUF file is compared with: the native engine on the weights it was made from."""

    source: ModelSource
    model: Any  # the native model in float32
    tokenizer: Any
    description: str
    digest: dict[str, Any] | None  # sha256/size of what was read, by name only (verify.json is published)


def _reference(gguf_path: Path, ckpt, config_yaml, tokenizer, tokenizer_obj) -> _Reference:
    """The reference for a GGUF file: `ckpt` (a checkpoint or an HF folder), else the folder holding the file.

    The digest is taken before the reference is read.
    """
    folder = gguf_path.parent
    if ckpt is not None and Path(ckpt).is_dir():
        folder, ckpt = Path(ckpt), None
    if ckpt is None:
        if not (folder / "config.json").is_file():
            raise MythosError(
                f"no reference for {gguf_path.name} (no config.json beside it): pass --ckpt with the native checkpoint"
            )
        weights = sorted(p.name for p in folder.glob("*.safetensors") if p.is_file())
        digest: dict[str, Any] | None = {"name": f"{folder.name}/", "files": hash_files(folder, weights)}
        source, description = open_hf(folder), f"native engine on {folder.name}/ weights"
    else:
        digest = {"name": Path(ckpt).name, **file_digest(ckpt)} if Path(ckpt).is_file() else None
        source, description = open_native(ckpt, config_yaml), f"native engine on {Path(ckpt).name}"
    tok = tokenizer_obj or (load_tokenizer(tokenizer) if tokenizer is not None else source.tokenizer()[0])
    return _Reference(source, load_model(source.as_checkpoint(), torch.float32), tok, description, digest)


def _sequences(tok, vocab_size: int, max_len: int) -> list[list[int]]:
    bos = special_tokens(tok).id("bos")
    seqs = [([bos] if bos is not None else []) + tok.encode(t, add_special_tokens=False).ids for t in PROMPTS]
    seqs.append(([bos] if bos is not None else []) + random_ids(vocab_size))
    return [s[: max_len - GREEDY_TOKENS] for s in seqs]


def _native_fn(model):
    def run(ids: list[int]) -> torch.Tensor:
        with torch.no_grad():
            return model(torch.tensor([ids]))[0].float()

    return run


def _incremental(prefill, step):
    """A `greedy_continue` step function that feeds only the new token when the sequence grew by one.

    Greedy decoding then costs one cached step per token in both engines instead of a recompute
    of the whole sequence; only the last row of logits is returned (all greedy needs).
    """
    state: dict[str, list[int]] = {"ids": []}

    def run(ids: list[int]) -> torch.Tensor:
        prev = state["ids"]
        if prev and len(ids) == len(prev) + 1 and ids[:-1] == prev:
            last = step(ids[-1], len(prev))
        else:
            last = prefill(ids)
        state["ids"] = list(ids)
        return last[None, :]

    return run


def _llama_greedy_fn(llm):
    def prefill(ids: list[int]) -> torch.Tensor:
        return llama_logits(llm, ids)[-1]

    def step(token: int, start: int) -> torch.Tensor:
        llm.eval([token])
        return torch.from_numpy(np.array(llm.scores[start], dtype=np.float32))

    return _incremental(prefill, step)


# --- transformers ------------------------------------------------------------------------------


def transformers_from_gguf(gguf_path: Path):
    """LlamaForCausalLM loaded from the GGUF file (transformers dequantizes it to float32)."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            model = AutoModelForCausalLM.from_pretrained(
                gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
            )
    finally:
        hf_logging.set_verbosity(verbosity)
    return model.eval()


def _hf_fn(model):
    def run(ids: list[int]) -> torch.Tensor:
        with torch.no_grad():
            return model(torch.tensor([ids])).logits[0].float()

    return run


# --- the tensors ---------------------------------------------------------------------------------


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


def _failed_early(gguf_path: Path, label: str, failures: list[str], files, source) -> dict[str, Any]:
    """The result of a file refused before llama.cpp ran it (its header contradicts the checkpoint)."""
    return {
        "passed": False,
        "target": gguf_path.name,
        "kind": "gguf",
        "dtype": label,
        "failures": failures,
        "files": files,
        "source": source,
    }


# --- the verifier ------------------------------------------------------------------------------


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
) -> dict[str, Any]:
    """Compare a GGUF file run by llama.cpp with the native model; return (and record) the result.

    Args:
        gguf_path: the file (the first shard of a split file).
        ckpt: the native checkpoint; default: the HF folder holding the file (its weights in the
            native engine).
        tokenizer / tokenizer_obj: the tokenizer (path or loaded); default: the folder's or the checkpoint's.
        check_transformers: also load the file with transformers (`gguf_file=`) and compare.
        record: store the result in the folder's verify.json under the file's name.

    A failed comparison is returned with `passed: False` and `failures`, not raised.
    """
    gguf_path = Path(gguf_path)
    require_file(gguf_path, "GGUF file", "pass the path of a .gguf file")
    reader, facts = _gguf_facts(gguf_path)
    files = hash_files(gguf_path.parent, shard_names(gguf_path.name, facts["shards"]))  # before llama.cpp reads them
    label = facts["label"]
    ref = _reference(gguf_path, ckpt, config_yaml, tokenizer, tokenizer_obj)
    cfg = ref.model.config
    info(f"verifying {gguf_path.name} ({label}) in llama.cpp against the {ref.description}")
    tensors = check_tensors(open_gguf(gguf_path, cfg, first=reader), source_tensors(ref.source), cfg)
    header = header_problems(reader, cfg)
    del reader  # its memory map of the file is not held while llama.cpp and transformers run
    if header:  # llama.cpp would refuse the shapes or silently compute something else: name the key instead
        out = _failed_early(gguf_path, label, header + _tensor_failures(tensors, logits_failed=True), files, ref.digest)
        out.update(reference=ref.description, tensors=_tensor_summary(tensors))
        _report(out, [], [], gguf_path, ref.description, show=show, record=record, early=True)
        return out
    seqs = _sequences(ref.tokenizer, cfg.vocab_size, cfg.max_seq_len)
    llm = load_llama(gguf_path, max(len(s) for s in seqs) + GREEDY_TOKENS, f32_kv=True)
    try:
        logits = _logit_parity(ref.model, llm, seqs, GGUF_TOLERANCES.get(label))
        greedy_equal = _greedy_parity(ref.model, llm, seqs)
        texts = list(dict.fromkeys([*TOKENIZER_TEXTS, *NORMALIZER_PROBES, *PROMPTS]))
        tok_agreement, tok_diffs = tokenization_diffs(llm, ref.tokenizer, texts)
    finally:
        llm.close()
    logit_failures = check(logits.comparison, logits.tolerance, greedy_equal)[1]  # NaN/Inf fail every type
    unexpected = [d for d in tok_diffs if not d["expected"]]
    failures = list(logit_failures) + _tensor_failures(tensors, logits_failed=bool(logit_failures))
    if unexpected:
        failures.append(f"llama.cpp tokenizes {len(unexpected)} text(s) differently, e.g. {unexpected[0]['text']!r}")
    out: dict[str, Any] = {
        "passed": not failures,
        "target": gguf_path.name,
        "kind": "gguf",
        "dtype": label,
        **logits.comparison,
        "greedy_equal": greedy_equal,
        "tolerance": _describe_tolerance(logits.tolerance),
        "logit_std": logits.std,
        "tokenizer_agreement": tok_agreement,
        "tokenizer_differences": tok_diffs,
        "n_tokens": sum(map(len, seqs)),
        "n_sequences": len(seqs),
        "reference": ref.description,
        "checkpoint": Path(ckpt).name if ckpt is not None else None,  # a name: verify.json is published
        "engine": "llama.cpp via llama-cpp-python, F32 KV cache, extra buffer types off (AMX workaround)",
        "failures": failures,
        "files": files,
        "source": ref.digest,
        "tensors": _tensor_summary(tensors),
    }
    rows = [
        {
            "name": f"llama.cpp logits, {label}",
            **logits.comparison,
            "greedy_equal": greedy_equal,
            "tolerance": out["tolerance"],
            "passed": not logit_failures,
        },
        {
            "name": "llama.cpp tokenization",
            "tokenizer_agreement": tok_agreement,
            "tolerance": "only normalizer differences",
            "passed": not unexpected,
        },
    ]
    if check_transformers and facts["shards"] == 1:
        hf_cmp, hf_failures = _transformers_parity(gguf_path, logits.references, seqs, label)
        out["transformers"] = hf_cmp
        if hf_failures:
            failures.extend(hf_failures)
            out["passed"] = False
        rows.append(
            {
                "name": f"transformers gguf_file=, {label}",
                **hf_cmp,
                "tolerance": "max<=1e-4" if label == "F32" else "reported",
                "passed": not hf_failures,
            }
        )
    _report(out, rows, tok_diffs, gguf_path, ref.description, show=show, record=record)
    return out


@dataclasses.dataclass
class _Logits:
    comparison: dict[str, Any]  # merged |diff|, top-1 and KL figures over every sequence
    tolerance: Tolerance | None  # the type's gate, scaled to the reference's logit spread
    std: float  # the reference logits' standard deviation
    references: list[torch.Tensor]  # the native logits per sequence (transformers is compared with them too)


def _logit_parity(model, llm, seqs: list[list[int]], tol: Tolerance | None) -> _Logits:
    """llama.cpp's logits against the native engine's at every position of every sequence."""
    native_fn = _native_fn(model)
    refs = [native_fn(s) for s in seqs]
    logit_std = float(torch.cat(refs).std())
    if tol is not None:
        tol = scaled_tolerance(tol, logit_std)
    kl = DivergenceAccumulator()
    parts = []
    for ref, seq in zip(refs, seqs, strict=True):
        got = llama_logits(llm, seq)
        parts.append(compare_logits(ref, got, ("native", "GGUF")))
        kl.add(ref, got)
    divergence = kl.summary()
    comparison = {
        **merge_comparisons(parts, list(map(len, seqs))),
        "mean_kl": divergence.mean_kl,
        "p99_kl": divergence.p99_kl,
        "max_kl": divergence.max_kl,
    }
    return _Logits(comparison, tol, logit_std, refs)


def _greedy_parity(model, llm, seqs: list[list[int]]) -> bool:
    """Do both engines continue the first and the longest prompt with the same greedy tokens?"""
    greedy_seqs = [seqs[0], max(seqs[: len(PROMPTS)], key=len)][:GREEDY_PROMPTS]
    return all(native_greedy(model, s)[1] == greedy_continue(_llama_greedy_fn(llm), s) for s in greedy_seqs)


def _transformers_parity(gguf_path: Path, refs, seqs, label: str) -> tuple[dict[str, Any], list[str]]:
    """The file loaded by transformers (`gguf_file=`) against the native logits; F32 gated, others reported."""
    hf_fn = _hf_fn(transformers_from_gguf(gguf_path))
    cmp = merge_comparisons(
        [compare_logits(r, hf_fn(s), ("native", "transformers-from-GGUF")) for r, s in zip(refs, seqs, strict=True)],
        list(map(len, seqs)),
    )
    failures = nonfinite_reasons(cmp)
    if label == "F32" and not cmp["max_abs_diff"] <= TRANSFORMERS_F32_TOLERANCE:  # NaN-safe
        failures.append(f"transformers-from-GGUF max |diff| {cmp['max_abs_diff']:.3g} > 1e-4")
    return cmp, failures


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
