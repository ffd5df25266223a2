"""The HF writer: a native checkpoint -> the files of a transformers LlamaForCausalLM folder.

`plan_hf_export` reads and checks everything first (checkpoint, tokenizer, dtype, outputs over
inputs); `write_hf_files` writes model.safetensors (or shards + index), config.json (v4 and v5
schemas), generation_config.json, hand-written tokenizer files (BOS-only post-processor) and
mythos.json (provenance for the card and for `native`) into a folder. `release.export_hf` runs
them inside the atomic output folder, then verify and the card.

Without verify, a checkpoint whose weights need no cast is read without torch (`torch_zip`) and
its tensor bytes are copied into the safetensors files (`safetensors_copy`): the same files as the
torch path (`hf_weights`), without its seconds of imports. Casts, verify and anything unusual take
the torch path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mythos_convert import __version__
from mythos_convert.atomic import check_output_dir
from mythos_convert.convert.dtypes import HF_DTYPES, dtype_name, torch_dtype
from mythos_convert.convert.hf_config import (
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_P,
    generation_config_dict,
    hf_config_dict,
)
from mythos_convert.convert.hf_layout import select_native_weights
from mythos_convert.convert.hf_read import LOCAL_FILE, META_FILE
from mythos_convert.convert.native_checkpoint import (
    MODEL_KEY,
    OPTIMIZER_KEY,
    NativeCheckpoint,
    checkpoint_from_data,
    load_checkpoint,
)
from mythos_convert.convert.safetensors_copy import copyable, write_safetensors_copy
from mythos_convert.convert.tokenizer_export import (
    bos_only_tokenizer_json,
    special_tokens_map_dict,
    tokenizer_config_dict,
)
from mythos_convert.convert.torch_zip import NotPlain, TensorRef, contains_tensor, read_torch_zip
from mythos_convert.data.tokenizer import check_vocab_fits, resolve_tokenizer, special_tokens
from mythos_convert.errors import MythosError
from mythos_convert.safe_paths import refuse_output_over_inputs
from mythos_convert.ui import info

META_FORMAT_VERSION = 1


@dataclass
class HFPlan:
    """Everything an HF export decided before writing a byte."""

    out: Path
    source: NativeCheckpoint
    weights: dict[str, Any]  # native name -> tensor (or TensorRef on the torch-free copy path)
    copy_bytes: bool  # the torch-free path: tensor bytes copied straight from the checkpoint
    tokenizer: Any
    tokenizer_source: str
    dtype: str
    meta: dict[str, Any]
    max_shard_size: int | str
    allow_nonfinite: bool
    temperature: float
    top_p: float


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


def plan_hf_export(
    ckpt: str | Path,
    out: str | Path,
    *,
    tokenizer: str | Path | None = None,
    config_yaml: str | Path | None = None,
    dtype: str | None = None,
    max_shard_size: int | str = "5GB",
    force: bool = False,
    torch_free: bool = False,
    allow_nonfinite: bool = False,
    temperature: float = DEFAULT_TEMPERATURE,
    top_p: float = DEFAULT_TOP_P,
) -> HFPlan:
    """Read and check everything an export needs; nothing is written.

    Args:
        torch_free: read the checkpoint without torch and copy tensor bytes when no cast is
            needed (seconds of imports saved; only when nothing else needs torch, e.g. no verify).
        (the rest as `release.export_hf`)

    Raises:
        MythosError: any bad input, named, with the fix.
    """
    if dtype is not None and dtype not in HF_DTYPES:
        raise MythosError(f"--dtype {dtype!r} is not supported: use one of {', '.join(HF_DTYPES)}")
    refuse_output_over_inputs(out, [("checkpoint", ckpt), ("tokenizer", tokenizer), ("config", config_yaml)])
    out = check_output_dir(out, force)
    plain = _copyable_source(ckpt, config_yaml, dtype) if torch_free else None
    if plain is not None:
        source, weights = plain
    else:
        source = load_checkpoint(ckpt, config_yaml)
    cfg = source.config
    tok, tok_source = resolve_tokenizer(source, tokenizer)
    check_vocab_fits(tok, cfg.vocab_size)
    dtype = _resolve_dtype(source, dtype)
    if plain is None:
        weights = select_native_weights(cfg, source.state_dict)
    meta = _provenance(source, tok, tok_source, dtype)
    return HFPlan(
        out,
        source,
        weights,
        plain is not None,
        tok,
        tok_source,
        dtype,
        meta,
        max_shard_size,
        allow_nonfinite,
        temperature,
        top_p,
    )


def write_hf_files(plan: HFPlan, folder: Path) -> list[str]:
    """Write the folder's weights, config, generation config, tokenizer files and mythos.json; return their names."""
    source, cfg, dtype = plan.source, plan.source.config, plan.dtype
    specials = special_tokens(plan.tokenizer)
    info(f"exporting {source.path} ({cfg.num_parameters():,} parameters) to {plan.out} as {dtype}")
    if plan.copy_bytes:
        files = write_safetensors_copy(
            folder,
            plan.weights,
            source.path,
            dtype,
            max_shard_size=plan.max_shard_size,
            allow_nonfinite=plan.allow_nonfinite,
        )
    else:
        from mythos_convert.convert.hf_weights import write_safetensors  # torch: only on this path

        files = write_safetensors(
            folder,
            plan.weights,
            torch_dtype(dtype),
            max_shard_size=plan.max_shard_size,
            allow_nonfinite=plan.allow_nonfinite,
            source_file=source.path,
        )
    _write_json(folder / "config.json", hf_config_dict(cfg, specials, dtype))
    generation = generation_config_dict(specials, temperature=plan.temperature, top_p=plan.top_p)
    _write_json(folder / "generation_config.json", generation)
    (folder / "tokenizer.json").write_text(bos_only_tokenizer_json(plan.tokenizer))
    _write_json(folder / "tokenizer_config.json", tokenizer_config_dict(specials, cfg.max_seq_len))
    _write_json(folder / "special_tokens_map.json", special_tokens_map_dict(specials))
    _write_json(folder / META_FILE, plan.meta)
    _write_json(folder / LOCAL_FILE, _local_paths(source, plan.tokenizer_source))
    files += ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"]
    return [*files, "special_tokens_map.json", META_FILE]
