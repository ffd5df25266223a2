"""`mythos-convert hf`: a native checkpoint -> a transformers LlamaForCausalLM folder, verified.

The folder holds model.safetensors (or shards + index), config.json (v4 and v5 schemas),
generation_config.json, hand-written tokenizer files (BOS-only post-processor), mythos.json
(provenance for the card and for `native`), verify.json and a README.md card. Everything is
written into a temporary sibling folder and renamed into place, so a crash leaves an old output intact.

Without verify, a checkpoint whose weights need no cast is read without torch (`torch_zip`) and
its tensor bytes are copied into the safetensors files (`safetensors_copy`): the same files as the
torch path (`hf_weights`), without its seconds of imports. Casts, verify and anything unusual take
the torch path.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mythos_convert import __version__
from mythos_convert.atomic import atomic_dir, check_output_dir
from mythos_convert.convert.hf_config import (
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_P,
    HF_DTYPES,
    generation_config_dict,
    hf_config_dict,
)
from mythos_convert.convert.hf_layout import select_native_weights
from mythos_convert.convert.hf_read import LOCAL_FILE, META_FILE
from mythos_convert.convert.safetensors_copy import copyable, write_safetensors_copy
from mythos_convert.convert.tokenizer_export import (
    check_vocab_fits,
    special_tokens_map_dict,
    tokenizer_config_dict,
    tokenizer_json_text,
)
from mythos_convert.convert.torch_zip import NotPlain, TensorRef, contains_tensor, read_torch_zip
from mythos_convert.data.tokenizer import resolve_tokenizer, special_tokens
from mythos_convert.errors import MythosError
from mythos_convert.safe_paths import refuse_output_over_inputs
from mythos_convert.train.checkpoint import (
    MODEL_KEY,
    OPTIMIZER_KEY,
    NativeCheckpoint,
    checkpoint_from_data,
    load_checkpoint,
)
from mythos_convert.ui import info

META_FORMAT_VERSION = 1


@dataclass
class HFExport:
    """What `export_hf` produced."""

    folder: Path
    dtype: str
    files: list[str]
    seconds: float
    verify: dict[str, Any] | None = None
    timings: dict[str, float] = field(default_factory=dict)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def _provenance(ckpt: NativeCheckpoint, tokenizer, tokenizer_source: str, dtype: str) -> dict[str, Any]:
    path = ckpt.path.resolve() if ckpt.path is not None else None
    post_processor = json.loads(tokenizer.to_str()).get("post_processor")
    return {
        "format_version": META_FORMAT_VERSION,
        "native_config": ckpt.config.to_dict(),
        "step": ckpt.step,
        "training": ckpt.training,
        "source_checkpoint": path.name if path else None,
        "tokenizer_source": tokenizer_source
        if not Path(tokenizer_source).is_absolute()
        else Path(tokenizer_source).name,
        # the training post-processor (the export rewrites it to BOS-only); `native` restores it
        "native_post_processor": post_processor,
        "dtype": dtype,
        "mythos_convert_version": __version__,
    }


def _local_paths(ckpt: NativeCheckpoint, tokenizer_source: str) -> dict[str, Any]:
    """Absolute local paths, kept in a hidden file that `push` does not publish."""
    return {
        "source_checkpoint_path": str(ckpt.path.resolve()) if ckpt.path is not None else None,
        # absolute, so `verify` finds a --tokenizer given as a relative path from any directory
        "tokenizer_source_path": str(Path(tokenizer_source).resolve())
        if Path(tokenizer_source).is_file()
        else tokenizer_source,
    }


def _resolve_dtype(ckpt: NativeCheckpoint, dtype: str | None) -> str:
    """The requested dtype, else the checkpoint's (that of its embedding)."""
    if dtype is not None:
        return dtype
    embedding = ckpt.state_dict.get("embedding.weight")
    if embedding is None:
        return "float32"
    if isinstance(embedding, TensorRef):
        return embedding.dtype
    from mythos_convert.convert.hf_weights import dtype_name

    return dtype_name(embedding.dtype)


def _copyable_source(
    path: str | Path, config_yaml: str | Path | None, dtype: str | None
) -> tuple[NativeCheckpoint, dict[str, Any]] | None:
    """The checkpoint read without torch, and its export weights, when they can be copied byte for byte.

    None (use the torch path) unless the file is a plain torch zip, every tensor outside the model
    and optimizer state is absent, and each exported tensor is stored contiguously in the export
    dtype with the head, if stored, being the embedding itself. Reading and checking go through
    the same functions as the torch path, so the same inputs give the same errors.
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        data = read_torch_zip(path)
    except NotPlain:
        return None
    if not isinstance(data, dict) or any(
        contains_tensor(v) for k, v in data.items() if k not in (MODEL_KEY, OPTIMIZER_KEY)
    ):
        return None
    try:
        source = checkpoint_from_data(data, path, config_yaml, lambda value: isinstance(value, TensorRef))
        state = source.state_dict
        embed, head = state.get("embedding.weight"), state.get("output.weight")
        if head is not None and head != embed:
            return None  # a separate head: the torch path compares it with the embedding
        if not isinstance(embed, TensorRef) or (dtype is None and embed.dtype not in HF_DTYPES):
            return None  # the torch path names what is wrong
        weights = select_native_weights(source.config, state)
    except MythosError:  # refused: the torch path refuses it too, in its own order of checks
        return None
    if not copyable(weights, _resolve_dtype(source, dtype)):
        return None
    return source, weights


def export_hf(
    ckpt: str | Path,
    out: str | Path,
    *,
    tokenizer: str | Path | None = None,
    config_yaml: str | Path | None = None,
    dtype: str | None = None,
    max_shard_size: int | str = "5GB",
    force: bool = False,
    verify: bool = True,
    allow_nonfinite: bool = False,
    temperature: float = DEFAULT_TEMPERATURE,
    top_p: float = DEFAULT_TOP_P,
    card: bool = True,
) -> HFExport:
    """Convert a native checkpoint into an HF Llama folder `out`, then verify it against the native model.

    Args:
        ckpt: native checkpoint (ours or the reference's).
        out: output folder; a non-empty one needs `force` (then it is replaced atomically).
        tokenizer: tokenizer.json (default: beside ckpt, else the copy inside it).
        config_yaml: YAML with `model:` for checkpoints without an embedded config.
        dtype: float32 | bfloat16 | float16 (default: the checkpoint's).
        max_shard_size: shard above this size ("5GB", "500MB", or bytes).
        verify: run the parity check (and record verify.json) before the folder is put in place.
        allow_nonfinite: export NaN/Inf weights instead of refusing.
        temperature, top_p: sampling defaults in generation_config.json.
        card: write README.md.

    Returns:
        HFExport with the folder, the files and the verify result (None when not verified).

    Raises:
        MythosError: any bad input (named), or a failed verification (the folder is still written,
            with the failure recorded in verify.json so `push` refuses it).
    """
    started = time.perf_counter()
    if dtype is not None and dtype not in HF_DTYPES:
        raise MythosError(f"--dtype {dtype!r} is not supported: use one of {', '.join(HF_DTYPES)}")
    refuse_output_over_inputs(out, [("checkpoint", ckpt), ("tokenizer", tokenizer), ("config", config_yaml)])
    out = check_output_dir(out, force)
    # Without verify, nothing needs torch when the weights can be copied byte for byte (seconds saved).
    plain = None if verify else _copyable_source(ckpt, config_yaml, dtype)
    if plain is not None:
        source, weights = plain
    else:
        source = load_checkpoint(ckpt, config_yaml)
    cfg = source.config
    tok, tok_source = resolve_tokenizer(source, tokenizer)
    check_vocab_fits(tok, cfg.vocab_size)
    specials = special_tokens(tok)
    dtype = _resolve_dtype(source, dtype)
    if plain is None:
        weights = select_native_weights(cfg, source.state_dict)
    meta = _provenance(source, tok, tok_source, dtype)
    timings: dict[str, float] = {}
    result = None
    with atomic_dir(out, force) as tmp:
        info(f"exporting {source.path} ({cfg.num_parameters():,} parameters) to {out} as {dtype}")
        if plain is not None:
            files = write_safetensors_copy(
                tmp, weights, source.path, dtype, max_shard_size=max_shard_size, allow_nonfinite=allow_nonfinite
            )
        else:
            from mythos_convert.convert.hf_weights import TORCH_DTYPES, write_safetensors

            files = write_safetensors(
                tmp,
                weights,
                TORCH_DTYPES[dtype],
                max_shard_size=max_shard_size,
                allow_nonfinite=allow_nonfinite,
                source_file=source.path,
            )
        del weights
        _write_json(tmp / "config.json", hf_config_dict(cfg, specials, dtype))
        _write_json(
            tmp / "generation_config.json", generation_config_dict(specials, temperature=temperature, top_p=top_p)
        )
        (tmp / "tokenizer.json").write_text(tokenizer_json_text(tok))
        _write_json(tmp / "tokenizer_config.json", tokenizer_config_dict(specials, cfg.max_seq_len))
        _write_json(tmp / "special_tokens_map.json", special_tokens_map_dict(specials))
        _write_json(tmp / META_FILE, meta)
        _write_json(tmp / LOCAL_FILE, _local_paths(source, tok_source))
        files += ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"]
        files += ["special_tokens_map.json", META_FILE]
        timings["write"] = time.perf_counter() - started
        if verify:
            from mythos_convert.verify.hf import verify_hf

            t0 = time.perf_counter()
            result = verify_hf(tmp, source, tokenizer=tok, name=out.name)
            timings["verify"] = time.perf_counter() - t0
        if card:
            from mythos_convert.card import write_card

            write_card(tmp)
            files.append("README.md")
    export = HFExport(out, dtype, files, time.perf_counter() - started, result, timings)
    if result is not None and not result["passed"]:
        raise MythosError(
            f"verification of {out} failed ({'; '.join(result.get('failures', []))}): "
            "the folder was written with the failure in verify.json; report this as a bug"
        )
    return export
