"""Native tensors -> LlamaForCausalLM safetensors (single file or shards), one tensor at a time.

Weights come from the memory-mapped checkpoint and go through the one name table; the tied head is
stored once as `model.embed_tokens.weight` (no `lm_head.weight`). Shards are planned by
huggingface_hub's sharding helper (`hf_layout.plan_shards`: its names, its index layout) and each
shard is streamed by `safetensors_stream.write_file`, which gives the checkpoint's pages back
after each tensor: peak memory is about one tensor, not the model.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from mythos_convert.convert.dtypes import dtype_name
from mythos_convert.convert.hf_layout import SAFETENSORS_METADATA, nonfinite_error, plan_shards, write_index
from mythos_convert.convert.names import convert_name
from mythos_convert.convert.safetensors_stream import PageReleaser, write_file
from mythos_convert.ui import progress_task


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
        raise nonfinite_error(name, after_cast=_finite(tensor))
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
    split = plan_shards({hf: tuple(weights[n].shape) for hf, n in hf_names.items()}, dtype_name(dtype), max_shard_size)
    total = sum(t.numel() for t in weights.values())
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
    return write_index(folder, split)
