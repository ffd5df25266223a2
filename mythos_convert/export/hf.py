"""The HF writer: a native checkpoint -> the files of a transformers LlamaForCausalLM folder.

`plan_hf_export` reads and checks everything first (checkpoint, tokenizer, dtype, outputs over
inputs); `write_hf_files` writes model.safetensors (or shards + index), config.json (v4 and v5
schemas), generation_config.json, hand-written tokenizer files (BOS-only post-processor) and
mythos.json (provenance for the card and for `native`) into a folder. `release.export_hf` runs
them inside the atomic output folder, then verify and the card.

Without verify, a checkpoint whose weights need no cast is opened without torch
(`sources.open_native_without_torch`) and the one safetensors writer copies its tensor bytes: the
same files as through torch, without its seconds of imports. Casts, verify and anything unusual
open the checkpoint through torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mythos_convert import __version__
from mythos_convert.data.tokenizer import TOKENIZER_FILE, check_vocab_fits, special_tokens
from mythos_convert.errors import MythosError
from mythos_convert.export.tokenizer_files import (
    bos_only_tokenizer_json,
    special_tokens_map_dict,
    tokenizer_config_dict,
)
from mythos_convert.formats.checkpoint import NativeCheckpoint
from mythos_convert.formats.dtypes import HF_DTYPES, export_dtype
from mythos_convert.formats.hf_config import (
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_P,
    generation_config_dict,
    hf_config_dict,
)
from mythos_convert.formats.hf_folder import (
    CONFIG_FILE,
    GENERATION_FILE,
    LOCAL_FILE,
    META_FILE,
    META_FORMAT_VERSION,
    SPECIAL_TOKENS_FILE,
    TOKENIZER_CONFIG_FILE,
    Provenance,
)
from mythos_convert.formats.safetensors import copyable, write_safetensors
from mythos_convert.source import ModelSource, open_native, open_native_without_torch
from mythos_convert.support.atomic import check_output_dir
from mythos_convert.support.safe_paths import refuse_output_over_inputs
from mythos_convert.support.ui import info


@dataclass
class HFPlan:
    """Everything an HF export decided before writing a byte."""

    out: Path
    source: ModelSource
    weights: dict[str, Any]  # native name -> tensor (or TensorRef on the torch-free copy path)
    copy_bytes: bool  # the torch-free path: tensor bytes copied straight from the checkpoint
    tokenizer: Any
    tokenizer_source: str
    dtype: str
    provenance: Provenance
    max_shard_size: int | str
    allow_nonfinite: bool
    temperature: float
    top_p: float


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def _provenance(ckpt: NativeCheckpoint, tokenizer, tokenizer_source: str, dtype: str) -> Provenance:
    path = ckpt.path.resolve() if ckpt.path is not None else None
    post_processor = json.loads(tokenizer.to_str()).get("post_processor")
    return Provenance(
        format_version=META_FORMAT_VERSION,
        native_config=ckpt.config.to_dict(),
        step=ckpt.step,
        training=ckpt.training,
        source_checkpoint=path.name if path else None,
        tokenizer_source=tokenizer_source if not Path(tokenizer_source).is_absolute() else Path(tokenizer_source).name,
        # the training post-processor (the export rewrites it to BOS-only); `native` restores it
        native_post_processor=post_processor,
        has_post_processor=True,
        dtype=dtype,
        mythos_convert_version=__version__,
        # absolute local paths, kept in a hidden file that `push` does not publish
        source_checkpoint_path=str(path) if path else None,
        # absolute, so `verify` finds a --tokenizer given as a relative path from any directory
        tokenizer_source_path=str(Path(tokenizer_source).resolve())
        if Path(tokenizer_source).is_file()
        else tokenizer_source,
    )


def _resolve_dtype(ckpt: NativeCheckpoint, dtype: str | None) -> str:
    """The requested dtype, else the checkpoint's (that of its embedding; float64 exports as float32)."""
    if dtype is not None:
        return dtype
    embedding = ckpt.state_dict.get("embedding.weight")
    return "float32" if embedding is None else export_dtype(embedding.dtype)


def _copyable_source(path: str | Path, config_yaml: str | Path | None, dtype: str | None) -> ModelSource | None:
    """The checkpoint opened without torch, when every exported tensor can be copied byte for byte.

    None (open it through torch) unless the torch-free reader can read it (see
    `open_native_without_torch`) and each exported tensor is stored contiguously in the export
    dtype. A bad checkpoint is refused by the same checks either way.
    """
    source = open_native_without_torch(path, config_yaml)
    if source is None or source.checkpoint is None:
        return None
    embed = source.checkpoint.state_dict["embedding.weight"]
    if dtype is None and embed.dtype not in HF_DTYPES:
        return None  # the torch path names what is wrong
    wanted = _resolve_dtype(source.checkpoint, dtype)
    if not all(copyable(tensor, wanted) for _, tensor in source.tensors()):
        return None
    return source


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
    if isinstance(max_shard_size, str) and max_shard_size.isdigit():
        max_shard_size = int(max_shard_size)  # plain bytes, as `--max-shard-size 1000000`; else `5GB`, `500MB`
    refuse_output_over_inputs(out, [("checkpoint", ckpt), ("tokenizer", tokenizer), ("config", config_yaml)])
    out = check_output_dir(out, force)
    plain = _copyable_source(ckpt, config_yaml, dtype) if torch_free else None
    source = plain if plain is not None else open_native(ckpt, config_yaml)
    native = source.checkpoint
    assert native is not None
    tok, tok_source = source.tokenizer(tokenizer)
    check_vocab_fits(tok, source.config.vocab_size)
    dtype = _resolve_dtype(native, dtype)
    return HFPlan(
        out,
        source,
        source.weights(),
        plain is not None,
        tok,
        tok_source,
        dtype,
        _provenance(native, tok, tok_source, dtype),
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
    files = write_safetensors(
        folder,
        plan.weights,
        dtype,
        max_shard_size=plan.max_shard_size,
        allow_nonfinite=plan.allow_nonfinite,
        source_file=source.path,
    )
    _write_json(folder / CONFIG_FILE, hf_config_dict(cfg, specials, dtype))
    generation = generation_config_dict(specials, temperature=plan.temperature, top_p=plan.top_p)
    _write_json(folder / GENERATION_FILE, generation)
    (folder / TOKENIZER_FILE).write_text(bos_only_tokenizer_json(plan.tokenizer))
    _write_json(folder / TOKENIZER_CONFIG_FILE, tokenizer_config_dict(specials, cfg.max_seq_len))
    _write_json(folder / SPECIAL_TOKENS_FILE, special_tokens_map_dict(specials))
    _write_json(folder / META_FILE, plan.provenance.published())
    _write_json(folder / LOCAL_FILE, plan.provenance.local())
    return [*files, CONFIG_FILE, GENERATION_FILE, TOKENIZER_FILE, TOKENIZER_CONFIG_FILE, SPECIAL_TOKENS_FILE, META_FILE]
