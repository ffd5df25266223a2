"""Verify an HF folder against the native model: same token ids, logits, greedy tokens, tokenizer.

The native model runs in float32 on the export's weights (cast to the export's dtype and back), and
transformers' LlamaForCausalLM runs in float32 on the folder's weights. The cast is the only lossy
step of an export and both sides see it, so every dtype keeps float32's tight tolerance: anything
beyond arithmetic noise is a conversion bug. How the stored dtype shifts the logits against the
original float32 weights is reported as well ("dtype drift"), for information.

Memory: the two models run one after the other, never side by side. The native model runs first,
on the checkpoint's own (memory-mapped) tensors, and leaves its logits per prompt and its greedy
tokens (a few MB); it is dropped before transformers loads the folder. Only a failed logit check
loads both at once, to say where they diverge (`localise`). How each side's model is loaded is one
function each: `native_checkpoint.load_model` and `load_hf_model`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import inspect
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from mythos_convert.data.tokenizer import check_vocab_fits, load_tokenizer, resolve_tokenizer, special_tokens
from mythos_convert.errors import MythosError
from mythos_convert.formats.checkpoint import NativeCheckpoint, load_checkpoint, load_model
from mythos_convert.formats.dtypes import torch_dtype
from mythos_convert.formats.hf_read import HFSource
from mythos_convert.model.config import MythosConfig
from mythos_convert.names import COMPUTE_FIELDS, SHAPE_FIELDS
from mythos_convert.source import ModelSource, open_hf
from mythos_convert.support.ui import info, result
from mythos_convert.verify.cores import OtherLoad, free_threads
from mythos_convert.verify.digests import Digests
from mythos_convert.verify.parity import (
    GREEDY_TOKENS,
    PROMPTS,
    TOKENIZER_TEXTS,
    check,
    compare_logits,
    merge_comparisons,
    native_greedy,
    random_ids,
    render_table,
    tolerance_for,
)
from mythos_convert.verify.record import record_result

# Greedy decoding runs on the longest prompt (over 32 tokens, so 32 more reach past position 64):
# each native step reads every weight once, the slowest part of verify on a 150M model.
# Below this size matmuls are too small for threads to help, and on a busy machine OpenMP threads
# waiting on each other made a tiny model's verify 30x slower (68 s vs 1.9 s measured on 2 cores).
SINGLE_THREAD_PARAMS = 30_000_000
NAMES = ("native", "transformers")  # the sides as non-finite logits are reported ("native logits are NaN at ...")


@contextlib.contextmanager
def torch_threads(n_params: int) -> Iterator[None]:
    """One torch thread for models under SINGLE_THREAD_PARAMS (threads only cost there), restored after."""
    before = torch.get_num_threads()
    if n_params < SINGLE_THREAD_PARAMS:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


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


def _native_source(src: HFSource, ckpt: ModelSource | str | Path | None, config_yaml) -> NativeCheckpoint:
    """The checkpoint to compare against: given (a path, or the native `ModelSource` an export was
    written from), else the one recorded in mythos.json."""
    if isinstance(ckpt, ModelSource) and ckpt.checkpoint is not None:
        return ckpt.checkpoint
    if ckpt is None:
        recorded = src.provenance.source_checkpoint_path if src.provenance else None
        if not recorded or not Path(recorded).is_file():
            raise MythosError(
                f"no native checkpoint to compare {src.folder} with: pass --ckpt CKPT"
                + (f" (the recorded source {recorded} no longer exists)" if recorded else "")
            )
        ckpt = recorded
    # the config the export recorded, for a checkpoint saved without one
    native_config = src.provenance.native_config if src.provenance is not None else None
    return load_checkpoint(ckpt, config_yaml, recorded_config=native_config)


def _recorded_tokenizer(src: HFSource, native: NativeCheckpoint):
    """The tokenizer the export was made with (recorded in its local paths file), else the checkpoint's.

    An export made with `--tokenizer` has no tokenizer beside its checkpoint, so looking only
    there failed although the folder says which file it used.
    """
    recorded = src.provenance.tokenizer_source_path if src.provenance else None
    if isinstance(recorded, str) and Path(recorded).is_file():
        info(f"tokenizer: {recorded}, recorded at export time (--tokenizer overrides)")
        return load_tokenizer(recorded)
    try:
        return resolve_tokenizer(native)[0]
    except MythosError as exc:
        if isinstance(recorded, str) and recorded and recorded != "embedded in the checkpoint":
            raise MythosError(f"{exc} (the tokenizer recorded at export time, {recorded}, no longer exists)") from exc
        raise


@contextlib.contextmanager
def _quiet_transformers():
    """Silence transformers' load report, progress bars and length warnings: verify prints its own table."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # v5 prints a load report on stdout
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()


def load_hf_model(folder: Path):
    """LlamaForCausalLM in float32; any missing/unexpected/mismatched key or meta tensor is an error."""
    from transformers import LlamaForCausalLM

    with _quiet_transformers():
        model, loading = LlamaForCausalLM.from_pretrained(folder, output_loading_info=True, dtype=torch.float32)
    for kind in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
        found = list(loading.get(kind) or [])
        if found:
            raise MythosError(
                f"transformers reports {kind.replace('_', ' ')} loading {folder}: {found[:4]}; "
                "re-export the folder with `mythos-convert hf`"
            )
    on_meta = [name for name, p in model.named_parameters() if p.device.type == "meta"]
    if on_meta:
        raise MythosError(
            f"transformers left parameters on the meta device loading {folder}: {on_meta[:4]}; "
            "re-export the folder with `mythos-convert hf`"
        )
    return model.eval()


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


def _sequences(tok, bos: int | None, vocab_size: int, max_len: int) -> list[list[int]]:
    seqs = [([bos] if bos is not None else []) + tok.encode(t, add_special_tokens=False).ids for t in PROMPTS]
    seqs.append(random_ids(vocab_size))
    return [s[: max_len - GREEDY_TOKENS] for s in seqs]


def _tokenizer_checks(folder: Path, tok) -> tuple[float, list[str]]:
    """Content ids of the native tokenizer vs AutoTokenizer; BOS first and no EOS last on prompts."""
    from transformers import AutoTokenizer

    with _quiet_transformers():
        auto = AutoTokenizer.from_pretrained(folder)
        auto.model_max_length = 1 << 30  # texts longer than the context are fine for comparing ids
    specials = special_tokens(tok)
    texts = [*TOKENIZER_TEXTS, *PROMPTS]
    same = sum(
        tok.encode(t, add_special_tokens=False).ids == auto(t, add_special_tokens=False)["input_ids"] for t in texts
    )
    problems = []
    for text in PROMPTS:
        ids = auto(text)["input_ids"]
        if specials.bos is not None and ids[0] != specials.id("bos"):
            problems.append(f"AutoTokenizer does not start a prompt with {specials.token('bos')}")
            break
        if specials.eos is not None and ids[-1] == specials.id("eos"):
            problems.append(f"AutoTokenizer ends a prompt with {specials.token('eos')}: generate would stop early")
            break
    agreement = same / len(texts)
    if agreement < 1.0:
        problems.append(f"tokenizers disagree on {len(texts) - same} of {len(texts)} texts")
    if (folder / "tokenizer.json").is_file():
        problems += _vocab_differences(folder / "tokenizer.json", tok)
    return agreement, problems


def _bpe_model(data: dict[str, Any]) -> tuple[dict[str, int], list[str], dict[str, int]]:
    """(vocab, merges as "a b", added tokens) of a tokenizer.json's parsed content."""
    model = data.get("model") or {}
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    added = {t["content"]: t["id"] for t in data.get("added_tokens") or [] if isinstance(t, dict) and "content" in t}
    return dict(model.get("vocab") or {}), merges, added


def _vocab_differences(path: Path, tok) -> list[str]:
    """Name what the folder's tokenizer.json changed: token ids, merges, added tokens (at most a few each).

    Text comparisons show that the tokenizers differ; these say which entry, so a swapped id or a
    lost merge is found without reading two 20 000-line files side by side.
    """
    import json

    try:
        theirs = _bpe_model(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError, AttributeError):
        return []  # unreadable: load_tokenizer above has refused it already
    ours = _bpe_model(json.loads(tok.to_str()))
    problems = []
    for what, a, b in (("vocabulary", ours[0], theirs[0]), ("added tokens", ours[2], theirs[2])):
        changed = [t for t in a if t in b and a[t] != b[t]]
        if changed:
            shown = ", ".join(f"{t!r} is id {b[t]} there, {a[t]} in the native tokenizer" for t in changed[:3])
            problems.append(f"tokenizer.json's {what} differs in {len(changed)} id(s): {shown}")
        missing = [t for t in a if t not in b]
        if missing:
            problems.append(
                f"tokenizer.json's {what} lacks {len(missing)} token(s) of the native one, e.g. {missing[0]!r}"
            )
    if ours[1] != theirs[1]:
        lost = [m for m in ours[1] if m not in set(theirs[1])]
        extra = [m for m in theirs[1] if m not in set(ours[1])]
        if lost:
            problems.append(f"tokenizer.json lacks {len(lost)} merge(s) of the native tokenizer, e.g. {lost[0]!r}")
        if extra:
            problems.append(f"tokenizer.json has {len(extra)} merge(s) the native tokenizer lacks, e.g. {extra[0]!r}")
        if not lost and not extra:
            problems.append("tokenizer.json's merges are in a different order (merge priority) than the native ones")
    return problems


# --- localising a logit failure -----------------------------------------------------------------

LOCALISE_REL = 1e-4  # a sub-layer diverges when max |diff| / max |native| is above this (rounding: ~1e-7)


def _stages(native, hf) -> list[tuple[str, torch.nn.Module, torch.nn.Module]]:
    """(name, native module, transformers module) in the order the forward pass runs them."""
    stages = [("the embedding", native.embedding, hf.model.embed_tokens)]
    for i, (ours, theirs) in enumerate(zip(native.layers, hf.model.layers, strict=True)):
        stages += [
            (f"block {i} attention norm (input_layernorm)", ours.attn_norm, theirs.input_layernorm),
            (f"block {i} attention (self_attn)", ours.attention, theirs.self_attn),
            (f"block {i} MLP norm (post_attention_layernorm)", ours.ffn_norm, theirs.post_attention_layernorm),
            (f"block {i} MLP (mlp)", ours.feed_forward, theirs.mlp),
            (f"block {i} output", ours, theirs),
        ]
    return [*stages, ("the final norm", native.norm, hf.model.norm)]


def _outputs(model, modules: list[torch.nn.Module], run) -> list[torch.Tensor]:
    """Each module's output (first element of a tuple) during one forward pass, by forward hooks."""
    got: dict[int, torch.Tensor] = {}

    def keeper(i: int):
        def hook(_module, _args, out) -> None:  # returns None: a hook's return value replaces the output
            got.setdefault(i, (out[0] if isinstance(out, tuple) else out).detach().float())

        return hook

    hooks = [m.register_forward_hook(keeper(i)) for i, m in enumerate(modules)]
    try:
        with torch.no_grad():
            run()
    finally:
        for h in hooks:
            h.remove()
    return [got[i] for i in range(len(modules))]


def localise(native, hf, ids: list[int]) -> str:
    """Name the first block and sub-layer (attention, MLP, norm) whose output differs between the models.

    Both run `ids` once with forward hooks on every block's sub-layers (the block outputs are what
    transformers returns as `output_hidden_states`); the first stage whose output differs by more
    than rounding, while its input still agrees, is where the export goes wrong.
    """
    stages = _stages(native, hf)
    batch = torch.tensor([ids])
    ours = _outputs(native, [s[1] for s in stages], lambda: native(batch))
    theirs = _outputs(hf, [s[2] for s in stages], lambda: hf(batch))
    for (name, _, _), a, b in zip(stages, ours, theirs, strict=True):
        if a.shape != b.shape:
            return f"first divergence: {name} (output shapes {tuple(a.shape)} vs {tuple(b.shape)})"
        if not torch.isfinite(b).all() or not torch.isfinite(a).all():
            side = "transformers" if not torch.isfinite(b).all() else "native"
            return f"first divergence: {name} ({side} output is not finite)"
        diff = float((a - b).abs().max())
        rel = diff / max(float(a.abs().max()), 1e-12)
        if rel > LOCALISE_REL:
            return f"first divergence: {name} (max |diff| {diff:.3g}, {rel:.2g} of its scale; everything before agrees)"
    return "no sub-layer diverges on the longest prompt: the difference is in the output head or the decoding"


def _logits_fn(model, hf: bool):
    """Full-sequence logits [T, V] of token ids (the comparison runs every position, no cache)."""

    def run(ids: list[int]) -> torch.Tensor:
        with torch.no_grad():
            batch = torch.tensor([ids])
            return (model(batch).logits if hf else model(batch))[0]

    return run


def _hf_forward(model, ids: list[int], cache: Any = None) -> tuple[torch.Tensor, Any]:
    """transformers' logits [T, V] of `ids` (on top of `cache` when given) and the KV cache it leaves."""
    # transformers >= 5.2x names the cache `cache`, older versions `past_key_values`
    name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    with torch.no_grad():
        out = model(torch.tensor([ids]), use_cache=True, **({name: cache} if cache is not None else {}))
    return out.logits[0], out["cache"] if "cache" in out else out["past_key_values"]


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
        rows = torch.cat([rows, _hf_forward(hf_model, native[:-1], cache)[0].float()])
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
    run = _logits_fn(model, hf=False)
    drift = None
    if dtype != torch.float32:
        drift = [run(s) for s in seqs]
        _cast_native(model, dtype)
    greedy_logits, tokens = native_greedy(model, seqs[greedy])
    logits = [greedy_logits if i == greedy else run(s) for i, s in enumerate(seqs)]
    return _NativeRun(logits, drift, tokens)


def _compare_hf(
    hf_model, seqs: list[list[int]], native: _NativeRun, greedy: int
) -> tuple[dict, dict | None, str | None]:
    """(comparison, dtype drift or None, greedy difference or None) of transformers against the native run.

    Logits sequence by sequence; after `seqs[greedy]` its greedy tokens, on the cache that
    sequence left (`_greedy_difference`). Each native logit tensor is released once compared: only
    one sequence's logits of each side are alive beyond what the native run left.
    """
    run = _logits_fn(hf_model, hf=True)
    parts, drift_parts, greedy_difference = [], [], None
    for i, seq in enumerate(seqs):
        if i == greedy:
            theirs, cache = _hf_forward(hf_model, seq)
            greedy_difference = _greedy_difference(hf_model, theirs, cache, native.greedy)
            del cache
        else:
            theirs = run(seq)
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

    Only this frame holds the checkpoint verify reads itself (not the digest's thread: it gets the
    path), so dropping it here releases its mapped weights before transformers loads.
    """
    native = _native_source(src, ckpt, config_yaml)
    digests.add_source(native.path)  # queued now when it was only recorded in mythos.json
    config_failures = _config_differences(native.config, src.config, folder, native.path)
    if src.tokenizer_path is not None:  # transformers reads it later and fails with a bare JSONDecodeError
        load_tokenizer(src.tokenizer_path, fix="re-export the folder with `mythos-convert hf`")
    if tokenizer is None:
        tokenizer = _recorded_tokenizer(src, native)
    check_vocab_fits(tokenizer, native.config.vocab_size)
    dtype_name = src.stored_dtype()
    tol = tolerance_for(dtype_name)
    info(f"verifying {folder} ({dtype_name}) against {native.path}")

    seqs = _sequences(tokenizer, special_tokens(tokenizer).id("bos"), src.config.vocab_size, src.config.max_seq_len)
    greedy = max(range(len(PROMPTS)), key=lambda i: len(seqs[i]))  # the longest prompt (the first of equals)
    greedy_seq = seqs[greedy]
    dtype = torch_dtype(dtype_name)

    # the native side first, then dropped (with the checkpoint's tensors, when verify read them itself)
    native_run = _run_native(load_model(native, torch.float32), seqs, dtype, greedy)
    loaded_here = not isinstance(ckpt, ModelSource)
    if loaded_here:  # keep what the record needs, not the mapped weights
        native = dataclasses.replace(native, state_dict={}, raw={})
    gc.collect()

    hf_model = load_hf_model(folder)
    failures = config_failures + _config_checks(hf_model, native.config)
    comparison, drift, greedy_difference = _compare_hf(hf_model, seqs, native_run, greedy)
    greedy_equal = greedy_difference is None
    passed_logits, reasons = check(comparison, tol, greedy_equal)
    if greedy_difference is not None:
        reasons.append(greedy_difference)
    if reasons:  # say where: the first block and sub-layer whose output differs (both models, this once)
        source = _native_source(src, ckpt, config_yaml) if loaded_here else native
        ref_model = load_model(source, torch.float32)
        _cast_native(ref_model, dtype)
        reasons.append(localise(ref_model, hf_model, greedy_seq))
    tok_agreement, tok_problems = _tokenizer_checks(folder, tokenizer)
    failures += reasons + tok_problems

    out: dict[str, Any] = {
        "passed": not failures,
        "target": "hf",
        "kind": "hf",
        "dtype": dtype_name,
        **comparison,
        "greedy_equal": greedy_equal,
        "tolerance": f"max<={tol.max_abs_diff:g}, greedy equal",
        "compute": "float32 on both sides, native weights rounded through the export dtype",
        "tokenizer_agreement": tok_agreement,
        "n_tokens": sum(len(s) for s in seqs),
        "n_sequences": len(seqs),
        "checkpoint": native.path.name if native.path else None,  # a name: verify.json is published
        "source": digests.source(native.path),
        "failures": failures,
    }
    if drift is not None:
        out["dtype_drift"] = drift
    rows = [
        {
            "name": f"logits, {dtype_name} weights",
            **comparison,
            "greedy_equal": greedy_equal,
            "tolerance": out["tolerance"],
            "passed": passed_logits,
        },
        {
            "name": "tokenizer ids, BOS-only",
            "tokenizer_agreement": tok_agreement,
            "passed": not tok_problems,
            "tolerance": "100% equal",
        },
    ]
    if drift is not None:
        rows.append({"name": f"{dtype_name} vs f32 weights (info)", **drift, "tolerance": "not gated"})
    if show:
        result(render_table(rows, title=f"verify {name or folder.name}: native vs transformers LlamaForCausalLM"))
    return out
