"""Native tensors -> LlamaForCausalLM safetensors (single file or shards), one tensor at a time.

Weights come from the memory-mapped checkpoint and go through the one name table; the tied head is
stored once as `model.embed_tokens.weight` (no `lm_head.weight`). Shards are planned by
huggingface_hub's `split_torch_state_dict_into_shards` on meta tensors of the target dtype and each
shard is written by `safetensors.torch.save_file`, which writes straight from tensor memory; so
peak memory is the cast copies of one shard at most (none when the dtype is unchanged).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch
from huggingface_hub import split_torch_state_dict_into_shards
from safetensors.torch import save_file

from mythos_convert.convert.names import NATIVE_DROPPED, TIED_HEAD, convert_name, expected_names
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
    """Shape of every native tensor for `cfg`, from the model itself built on the meta device (no memory)."""
    from mythos_convert.model.model import Mythos

    with torch.device("meta"):
        model = Mythos(cfg)
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


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


def cast_checked(name: str, tensor: torch.Tensor, dtype: torch.dtype, allow_nonfinite: bool) -> torch.Tensor:
    """Cast to `dtype` (contiguous); refuse NaN/Inf, naming the tensor and whether the cast caused it."""
    out = tensor.to(dtype).contiguous()
    if not allow_nonfinite and not bool(torch.isfinite(out).all()):
        cause = "after casting (values overflow the dtype)" if bool(torch.isfinite(tensor).all()) else ""
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
) -> list[str]:
    """Write native `weights` under HF names into `folder`; return the file names written.

    Single file `model.safetensors`, or `model-0000k-of-0000n.safetensors` plus the index when the
    total exceeds `max_shard_size` (a tensor larger than that gets a shard of its own).
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
    with progress_task("writing safetensors", total=total) as advance:
        for filename, names in split.filename_to_tensors.items():
            shard = {}
            for hf in names:
                shard[hf] = cast_checked(hf_names[hf], weights[hf_names[hf]], dtype, allow_nonfinite)
                advance(shard[hf].numel())
            save_file(shard, folder / filename, metadata=SAFETENSORS_METADATA)
            del shard
    if split.is_sharded:
        index = {"metadata": dict(split.metadata), "weight_map": dict(sorted(split.tensor_to_filename.items()))}
        (folder / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
        return [*split.filename_to_tensors, INDEX_FILE]
    return list(split.filename_to_tensors)
