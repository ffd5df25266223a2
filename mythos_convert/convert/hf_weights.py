"""Native tensors -> LlamaForCausalLM safetensors (single file or shards), one tensor at a time.

Weights come from the memory-mapped checkpoint and go through the one name table; the tied head is
stored once as `model.embed_tokens.weight` (no `lm_head.weight`). Shards are planned by
huggingface_hub's `split_torch_state_dict_into_shards` on meta tensors of the target dtype (its
names, its index layout) and each shard is streamed by `safetensors_stream.write_file`, which gives
the checkpoint's pages back after each tensor: peak memory is about one tensor, not the model.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch
from huggingface_hub import split_torch_state_dict_into_shards

from mythos_convert.convert.names import NATIVE_DROPPED, TIED_HEAD, convert_name, expected_names
from mythos_convert.convert.safetensors_stream import PageReleaser, write_file
from mythos_convert.errors import MythosError
from mythos_convert.model.config import MythosConfig
from mythos_convert.ui import progress_task

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
SAFETENSORS_METADATA = {"format": "pt"}
FILENAME_PATTERN = "model{suffix}.safetensors"
INDEX_FILE = "model.safetensors.index.json"


def dtype_name(dtype: torch.dtype) -> str:
    for name, value in TORCH_DTYPES.items():
        if value == dtype:
            return name
    raise MythosError(f"weights are stored as {dtype}, which an HF export cannot hold: pass --dtype float32")


def native_shapes(cfg: MythosConfig) -> dict[str, tuple[int, ...]]:
    """Shape of every native tensor for `cfg`, rope buffers included (a test checks them against the model).

    Computed, not read off a model built on the meta device: that costs seconds of imports.
    """
    d, hd, ffn = cfg.d_model, cfg.head_dim, cfg.ffn_dim
    q, kv = cfg.n_heads * hd, cfg.n_kv_heads * hd
    layer = {
        "attn_norm.weight": (d,),
        "attention.wq.weight": (q, d),
        "attention.wk.weight": (kv, d),
        "attention.wv.weight": (kv, d),
        "attention.wo.weight": (d, q),
        "ffn_norm.weight": (d,),
        "feed_forward.w1.weight": (ffn, d),
        "feed_forward.w2.weight": (d, ffn),
        "feed_forward.w3.weight": (ffn, d),
    }
    shapes: dict[str, tuple[int, ...]] = {"embedding.weight": (cfg.vocab_size, d)}
    for i in range(cfg.n_layers):
        shapes.update({f"layers.{i}.{name}": shape for name, shape in layer.items()})
    shapes.update({"norm.weight": (d,), "output.weight": (cfg.vocab_size, d)})
    shapes.update({"rope_cos": (cfg.max_seq_len, hd), "rope_sin": (cfg.max_seq_len, hd)})
    return shapes


def select_native_weights(cfg: MythosConfig, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors to export, by native name, checked against `cfg`.

    Raises:
        MythosError: an unknown tensor (naming it), a missing one, a wrong shape (both shapes), an
            output head that is not the embedding.
    """
    shapes = native_shapes(cfg)
    for name in state:
        if name not in NATIVE_DROPPED:
            convert_name(name, "native", "hf")  # raises on names outside the table
    selected = {}
    for name in expected_names("native", cfg.n_layers, tied=True):
        if name not in state:
            raise MythosError(f"checkpoint lacks tensor {name} that its config (n_layers={cfg.n_layers}) requires")
        tensor = state[name]
        if tuple(tensor.shape) != shapes[name]:
            raise MythosError(
                f"tensor {name} has shape {tuple(tensor.shape)} but the config expects {shapes[name]}: "
                "the config does not describe these weights (check --config)"
            )
        selected[name] = tensor
    head = state.get(TIED_HEAD["native"])
    embed = selected["embedding.weight"]
    if head is not None and head.data_ptr() != embed.data_ptr():
        if head.shape != embed.shape or not torch.equal(head, embed):
            raise MythosError(
                "checkpoint's output.weight differs from embedding.weight: Mythos exports need a tied head"
            )
    return selected


def _finite(tensor: torch.Tensor) -> bool:
    """No NaN/Inf: min and max propagate NaN and show Inf, in one pass with no tensor-sized temporary."""
    if not tensor.numel():
        return True
    low, high = tensor.aminmax()
    return bool(torch.isfinite(low) and torch.isfinite(high))


def cast_checked(name: str, tensor: torch.Tensor, dtype: torch.dtype, allow_nonfinite: bool) -> torch.Tensor:
    """Cast to `dtype` (contiguous); refuse NaN/Inf, naming the tensor and whether the cast caused it."""
    out = tensor.to(dtype).contiguous()
    if not allow_nonfinite and not _finite(out):
        cause = "after casting (values overflow the dtype)" if _finite(tensor) else ""
        raise MythosError(
            f"tensor {name} holds NaN or Inf values {cause}".rstrip()
            + ": the checkpoint is damaged (or pass --allow-nonfinite to export it anyway)"
        )
    return out


def write_safetensors(
    folder: Path,
    weights: Mapping[str, torch.Tensor],
    dtype: torch.dtype,
    *,
    max_shard_size: int | str = "5GB",
    allow_nonfinite: bool = False,
    source_file: Path | None = None,
) -> list[str]:
    """Write native `weights` under HF names into `folder`; return the file names written.

    Single file `model.safetensors`, or `model-0000k-of-0000n.safetensors` plus the index when the
    total exceeds `max_shard_size` (a tensor larger than that gets a shard of its own).
    `source_file` is the memory-mapped checkpoint the tensors come from: its pages are given back
    after each tensor is written.
    """
    hf_names = {convert_name(n, "native", "hf"): n for n in weights}
    plan_input = {hf: torch.empty(weights[n].shape, dtype=dtype, device="meta") for hf, n in hf_names.items()}
    try:
        split = split_torch_state_dict_into_shards(
            plan_input, filename_pattern=FILENAME_PATTERN, max_shard_size=max_shard_size
        )
    except ValueError as exc:
        raise MythosError(f"--max-shard-size {max_shard_size!r} is not a size like 5GB or 500MB ({exc})") from exc
    total = sum(t.numel() for t in plan_input.values())
    releaser = PageReleaser(source_file)

    def prepare(hf: str, tensor: torch.Tensor) -> torch.Tensor:
        return cast_checked(hf_names[hf], tensor, dtype, allow_nonfinite)

    with progress_task("writing safetensors", total=total) as advance:
        for filename, names in split.filename_to_tensors.items():
            shard = {hf: weights[hf_names[hf]] for hf in names}
            write_file(
                folder / filename,
                shard,
                dtype,
                metadata=SAFETENSORS_METADATA,
                prepare=prepare,
                releaser=releaser,
                advance=advance,
            )
    if split.is_sharded:
        index = {"metadata": dict(split.metadata), "weight_map": dict(sorted(split.tensor_to_filename.items()))}
        (folder / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
        return [*split.filename_to_tensors, INDEX_FILE]
    return list(split.filename_to_tensors)
