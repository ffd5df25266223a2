"""Verify an HF folder against the native model: same token ids, logits, greedy tokens, tokenizer.

The native model runs in float32 on the export's weights (cast to the export's dtype and back), and
transformers' LlamaForCausalLM runs in float32 on the folder's weights. The cast is the only lossy
step of an export and both sides see it, so every dtype keeps float32's tight tolerance: anything
beyond arithmetic noise is a conversion bug. How the stored dtype shifts the logits against the
original float32 weights is reported as well ("dtype drift"), for information.

Memory: the two models run one after the other, never side by side. The native model runs first,
on the checkpoint's own (memory-mapped) tensors, and leaves its logits per prompt and its greedy
tokens (a few MB); it is dropped before transformers loads the folder. Only a failed logit check
loads both at once, to say where they diverge (`verify.localise`). The engines are
`engines.native` and `engines.hf`; the tokenizer checks are `verify.hf_tokenizer`'s.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from mythos_convert.data.tokenizer import check_vocab_fits, load_tokenizer
from mythos_convert.engines.hf import hf_forward, hf_logits, load_hf_model
from mythos_convert.engines.native import native_greedy, native_logits
from mythos_convert.engines.threads import SINGLE_THREAD_PARAMS, torch_threads
from mythos_convert.errors import MythosError
from mythos_convert.formats.checkpoint import load_model
from mythos_convert.formats.dcp import is_dcp_checkpoint
from mythos_convert.formats.dtypes import torch_dtype
from mythos_convert.formats.hf_read import HFSource
from mythos_convert.model.config import MythosConfig
from mythos_convert.names import COMPUTE_FIELDS, SHAPE_FIELDS
from mythos_convert.source import ModelSource, open_hf, open_native
from mythos_convert.support.ui import info, result
from mythos_convert.verify.cores import OtherLoad, free_threads
from mythos_convert.verify.digests import Digests
from mythos_convert.verify.gates import Tolerance, tolerance_for
from mythos_convert.verify.hf_tokenizer import tokenizer_checks
from mythos_convert.verify.inputs import GREEDY_TOKENS, longest_prompt, sequences
from mythos_convert.verify.localise import localise
from mythos_convert.verify.parity import check, compare_logits, merge_comparisons, render_table
from mythos_convert.verify.record import record_result

NAMES = ("native", "transformers")  # the sides as non-finite logits are reported ("native logits are NaN at ...")


@contextlib.contextmanager
def _verify_threads(n_params: int, others: OtherLoad) -> Iterator[None]:
    """`torch_threads`, and above SINGLE_THREAD_PARAMS only the cores other processes left free
    while verify started (`cores.OtherLoad`): on busy cores two threads ran 3-10x slower than one."""
    before = torch.get_num_threads()
    if n_params >= SINGLE_THREAD_PARAMS and before > 1:
        busy = others.cores()
        threads = free_threads(before, busy)
        if threads < before:
            info(f"torch threads: {threads} of {before} (other processes kept {busy:.1f} cores busy)")
        torch.set_num_threads(threads)
    with torch_threads(n_params):
        try:
            yield
        finally:
            torch.set_num_threads(before)


def recorded_checkpoint(src: HFSource) -> str:
    """The checkpoint (file or DCP folder) an HF export recorded in its mythos.json, if it still exists.

    Raises:
        MythosError: none recorded, or gone: pass --ckpt.
    """
    recorded = src.provenance.source_checkpoint_path if src.provenance else None
    if not recorded or not (Path(recorded).is_file() or is_dcp_checkpoint(recorded)):
        raise MythosError(
            f"no native checkpoint to compare {src.folder} with: pass --ckpt CKPT"
            + (f" (the recorded source {recorded} no longer exists)" if recorded else "")
        )
    return recorded


def _native_source(src: HFSource, ckpt: ModelSource | str | Path | None, config_yaml) -> ModelSource:
    """The source to compare against: given (a path, or the `ModelSource` an export was written
    from), else the checkpoint recorded in mythos.json."""
    if isinstance(ckpt, ModelSource):
        return ckpt
    if ckpt is None:
        ckpt = recorded_checkpoint(src)
    # the config the export recorded, for a checkpoint saved without one
    native_config = src.provenance.native_config if src.provenance is not None else None
    return open_native(ckpt, config_yaml, recorded_config=native_config)


def _recorded_tokenizer(src: HFSource, native: ModelSource):
    """The tokenizer the export was made with (recorded in its local paths file), else the checkpoint's.

    An export made with `--tokenizer` has no tokenizer beside its checkpoint, so looking only
    there failed although the folder says which file it used.
    """
    recorded = src.provenance.tokenizer_source_path if src.provenance else None
    if isinstance(recorded, str) and Path(recorded).is_file():
        info(f"tokenizer: {recorded}, recorded at export time (--tokenizer overrides)")
        return load_tokenizer(recorded)
    try:
        return native.tokenizer()[0]
    except MythosError as exc:
        if isinstance(recorded, str) and recorded and recorded != "embedded in the checkpoint":
            raise MythosError(f"{exc} (the tokenizer recorded at export time, {recorded}, no longer exists)") from exc
        raise


def _config_differences(native: MythosConfig, folder_cfg: MythosConfig, folder: Path, ckpt_path) -> list[str]:
    """One failure per computation field config.json changed; a shape difference is a wrong --ckpt (raised)."""
    shapes = [k for k in SHAPE_FIELDS if getattr(native, k) != getattr(folder_cfg, k)]
    if shapes:
        detail = ", ".join(f"{k} {getattr(folder_cfg, k)} vs {getattr(native, k)}" for k in shapes)
        raise MythosError(
            f"{folder} is not an export of {ckpt_path}: their configs differ ({detail}); pass --ckpt with the "
            "checkpoint it was exported from"
        )
    return [
        f"config.json's {hf_key} is {getattr(folder_cfg, key)!r}, the checkpoint's {key} is {getattr(native, key)!r}"
        for key, hf_key in COMPUTE_FIELDS.items()
        if getattr(native, key) != getattr(folder_cfg, key)
    ]


def _config_checks(model, cfg: MythosConfig) -> list[str]:
    """Effective RoPE theta, eps and tying as transformers built them, against the checkpoint's config."""
    problems = []
    inv_freq = model.model.rotary_emb.inv_freq.float()
    want = 1.0 / (cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2, dtype=torch.float32) / cfg.head_dim))
    if not torch.allclose(inv_freq, want, rtol=1e-5):
        problems.append("transformers' effective RoPE theta differs from the checkpoint's")
    eps = model.model.norm.variance_epsilon
    if abs(eps - cfg.norm_eps) > 1e-12:
        problems.append(f"transformers' rms_norm_eps is {eps}, the checkpoint's {cfg.norm_eps}")
    if model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr():
        problems.append("transformers did not tie lm_head to embed_tokens")
    return problems


def _cast_native(model, dtype: torch.dtype) -> None:
    """Round the native weights through the export's dtype (float32 compute on the same weights).

    Into new tensors, one parameter at a time: the model's weights are the checkpoint's own
    tensors (`load_model`), which belong to the caller and must not change.
    """
    if dtype == torch.float32:
        return
    with torch.no_grad():
        for param in model.parameters():
            param.data = param.to(dtype).float()


def _greedy_difference(hf_model, prompt_logits: torch.Tensor, cache: Any, native: list[int]) -> str | None:
    """Where transformers' greedy continuation of a prompt leaves the native one, or None when they are equal.

    `prompt_logits` and `cache` are what transformers left after the prompt. Instead of decoding
    token by token, one forward over the native tokens on top of that cache (teacher forcing).
    Greedy decoding takes at each step the argmax of the logits of everything so far, and in a
    causal model each row of a forward depends only on the tokens up to it: transformers' greedy
    tokens equal the native ones exactly when its argmax after the prompt is the first native
    token and, at each row, the native token that follows. The first row where it is not is
    where its own decoding would leave the native one, with the same token.
    """
    if not native:
        return None
    rows = prompt_logits[-1:].float()
    if len(native) > 1:
        rows = torch.cat([rows, hf_forward(hf_model, native[:-1], cache)[0].float()])
    chosen = rows.argmax(-1).tolist()
    prompt_len = prompt_logits.shape[0]
    for step, (theirs, ours) in enumerate(zip(chosen, native, strict=True), 1):
        if theirs != ours:
            row = rows[step - 1]
            return (
                f"transformers' greedy token {step} of {len(native)} (position {prompt_len + step} of the "
                f"sequence) is id {theirs}, the native model's is id {ours} (transformers' logits "
                f"{float(row[theirs]):.6g} and {float(row[ours]):.6g})"
            )
    return None


@dataclasses.dataclass
class _NativeRun:
    """What the native model leaves for the comparison, so that it can be dropped before transformers loads."""

    logits: list[torch.Tensor | None]  # per sequence, on the weights rounded through the export dtype
    drift_logits: list[torch.Tensor | None] | None  # per sequence, on the original weights (non-float32 exports)
    greedy: list[int]


def _run_native(model, seqs: list[list[int]], dtype: torch.dtype, greedy: int) -> _NativeRun:
    """Logits of every sequence (on the original weights too when the export casts them) and the greedy
    tokens of `seqs[greedy]`, whose logits come from the greedy decoding's prefill.

    The cast happens here, so the model is left on the export's rounded weights (what `localise`
    compares against transformers).
    """
    drift = None
    if dtype != torch.float32:
        drift = [native_logits(model, s) for s in seqs]
        _cast_native(model, dtype)
    greedy_logits, tokens = native_greedy(model, seqs[greedy], GREEDY_TOKENS)
    logits = [greedy_logits if i == greedy else native_logits(model, s) for i, s in enumerate(seqs)]
    return _NativeRun(logits, drift, tokens)


def _compare_hf(
    hf_model, seqs: list[list[int]], native: _NativeRun, greedy: int
) -> tuple[dict, dict | None, str | None]:
    """(comparison, dtype drift or None, greedy difference or None) of transformers against the native run.

    Logits sequence by sequence; after `seqs[greedy]` its greedy tokens, on the cache that
    sequence left (`_greedy_difference`). Each native logit tensor is released once compared: only
    one sequence's logits of each side are alive beyond what the native run left.
    """
    parts, drift_parts, greedy_difference = [], [], None
    for i, seq in enumerate(seqs):
        if i == greedy:
            theirs, cache = hf_forward(hf_model, seq)
            greedy_difference = _greedy_difference(hf_model, theirs, cache, native.greedy)
            del cache
        else:
            theirs = hf_logits(hf_model, seq)
        parts.append(compare_logits(native.logits[i], theirs, NAMES))
        native.logits[i] = None
        if native.drift_logits is not None:
            drift_parts.append(compare_logits(native.drift_logits[i], theirs, NAMES))
            native.drift_logits[i] = None
    weights = [len(s) for s in seqs]
    drift = merge_comparisons(drift_parts, weights) if native.drift_logits is not None else None
    return merge_comparisons(parts, weights), drift, greedy_difference


def verify_hf(
    folder: str | Path,
    ckpt: ModelSource | str | Path | None = None,
    *,
    tokenizer=None,
    config_yaml: str | Path | None = None,
    record: bool = True,
    show: bool = True,
    name: str | None = None,
    digests: Digests | None = None,
) -> dict[str, Any]:
    """Compare an HF folder with its native checkpoint; return (and record) the result dict.

    `name` labels the table (default: the folder's name). The result has `passed` plus the fields
    of `mythos_convert.verify.record`; `failures` says why it failed. A failed verification is
    returned, not raised: the CLI turns it into an exit code. `digests`: the folder's hashing,
    already started (by `verify`, before it imported torch); else it starts here.
    """
    folder = Path(folder)
    others = OtherLoad()  # what the rest of the machine uses from here to the first forward pass
    with contextlib.ExitStack() as stack:
        if digests is None:
            digests = stack.enter_context(Digests(folder, source=_given_source_path(ckpt)))
        _import_transformers()  # on this core while the other hashes
        files = digests.files()  # before reading: a later change cannot pass as verified
        src = open_hf(folder).hf  # the one tensor check first: a misfit is named before transformers loads
        assert src is not None
        digests.wait()  # the checkpoint's hash too, before torch's threads start
        with _verify_threads(src.config.num_parameters(), others):
            out = _compare(folder, src, ckpt, tokenizer, config_yaml, digests, show=show, name=name)
    out["files"] = files
    if record:
        record_result(folder, "hf", out)
    return out


def _given_source_path(ckpt: ModelSource | str | Path | None) -> Path | None:
    """The checkpoint file verify compares with, when the caller named it (else it is read from mythos.json later)."""
    if isinstance(ckpt, ModelSource):
        return ckpt.checkpoint.path if ckpt.checkpoint is not None else None
    return Path(ckpt) if ckpt is not None else None


def _import_transformers() -> None:
    """Import what verify uses of transformers now (about 0.6 s of Python), not in the middle of the checks."""
    import transformers.models.llama.modeling_llama  # noqa: F401
    from transformers import AutoTokenizer, LlamaForCausalLM  # noqa: F401


def _compare(folder: Path, src: HFSource, ckpt, tokenizer, config_yaml, digests: Digests, *, show: bool, name) -> dict:
    """The checks of `verify_hf`; `digests` hashes the source checkpoint meanwhile.

    Only this frame holds the checkpoint verify opens itself (not the digest's thread: it gets the
    path), so dropping it here releases its mapped weights before transformers loads.
    """
    native = _native_source(src, ckpt, config_yaml)
    path, cfg = native.path, native.config
    digests.add_source(path)  # queued now when it was only recorded in mythos.json
    failures = _config_differences(cfg, src.config, folder, path)
    if src.tokenizer_path is not None:  # transformers reads it later and fails with a bare JSONDecodeError
        load_tokenizer(src.tokenizer_path, fix="re-export the folder with `mythos-convert hf`")
    if tokenizer is None:
        tokenizer = _recorded_tokenizer(src, native)
    check_vocab_fits(tokenizer, cfg.vocab_size)
    dtype_name = src.stored_dtype()
    info(f"verifying {folder} ({dtype_name}) against {path}")
    seqs = sequences(tokenizer, src.config.vocab_size, src.config.max_seq_len)
    greedy = longest_prompt(seqs)
    dtype = torch_dtype(dtype_name)
    # the native side first, then dropped (with the checkpoint's tensors, when verify opened it itself)
    native_run = _run_native(load_model(native.as_checkpoint(), torch.float32), seqs, dtype, greedy)
    if not isinstance(ckpt, ModelSource):
        native = None
    gc.collect()

    hf_model = load_hf_model(folder)
    failures += _config_checks(hf_model, cfg)
    comparison, drift, greedy_difference = _compare_hf(hf_model, seqs, native_run, greedy)
    tol = tolerance_for(dtype_name)
    passed_logits, reasons = check(comparison, tol, greedy_difference is None)
    if greedy_difference is not None:
        reasons.append(greedy_difference)
    if reasons:  # say where: the first block and sub-layer whose output differs (both models, this once)
        ref_model = load_model((native or _native_source(src, ckpt, config_yaml)).as_checkpoint(), torch.float32)
        _cast_native(ref_model, dtype)
        reasons.append(localise(ref_model, hf_model, seqs[greedy]))
    tok_agreement, tok_problems = tokenizer_checks(folder, tokenizer)
    failures += reasons + tok_problems
    logits = {**comparison, "greedy_equal": greedy_difference is None}
    out = _result(dtype_name, tol, logits, drift, tok_agreement, failures, seqs)
    out["checkpoint"] = path.name if path else None  # a name: verify.json is published
    out["source"] = digests.source(path)
    if show:
        rows = _rows(dtype_name, out, passed_logits, not tok_problems)
        result(render_table(rows, title=f"verify {name or folder.name}: native vs transformers LlamaForCausalLM"))
    return out


def _result(dtype_name: str, tol: Tolerance, logits: dict, drift, tok_agreement, failures, seqs) -> dict[str, Any]:
    """The verify.json entry of a folder (without the checkpoint's name and digest)."""
    out: dict[str, Any] = {
        "passed": not failures,
        "target": "hf",
        "kind": "hf",
        "dtype": dtype_name,
        **logits,
        "tolerance": f"max<={tol.max_abs_diff:g}, greedy equal",
        "compute": "float32 on both sides, native weights rounded through the export dtype",
        "tokenizer_agreement": tok_agreement,
        "n_tokens": sum(len(s) for s in seqs),
        "n_sequences": len(seqs),
        "failures": failures,
    }
    if drift is not None:
        out["dtype_drift"] = drift
    return out


def _rows(dtype_name: str, out: dict[str, Any], passed_logits: bool, passed_tokenizer: bool) -> list[dict]:
    """The table verify prints: logits, tokenizer ids, and the dtype drift (not gated)."""
    logit_keys = ("max_abs_diff", "mean_abs_diff", "argmax_agreement", "nonfinite", "greedy_equal", "tolerance")
    rows = [
        {"name": f"logits, {dtype_name} weights", **{k: out[k] for k in logit_keys}, "passed": passed_logits},
        {
            "name": "tokenizer ids, BOS-only",
            "tokenizer_agreement": out["tokenizer_agreement"],
            "passed": passed_tokenizer,
            "tolerance": "100% equal",
        },
    ]
    if "dtype_drift" in out:
        rows.append({"name": f"{dtype_name} vs f32 weights (info)", **out["dtype_drift"], "tolerance": "not gated"})
    return rows
