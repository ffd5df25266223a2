"""The torch-free half of the HF weight export: which tensors, their checks, the shard plan and the headers.

Shared by the torch writer (`hf_weights`) and the byte-copying writer (`safetensors_copy`), so both
pick, refuse, shard and lay out tensors identically. Nothing here needs tensor data: anything with
`.shape` and `.data_ptr()` (a torch tensor or a `torch_zip.TensorRef`) will do.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from huggingface_hub import StateDictSplit, split_state_dict_into_shards_factory

from mythos_convert.convert.dtypes import BY_NAME
from mythos_convert.convert.names import NATIVE_DROPPED, TIED_HEAD, convert_name, expected_names
from mythos_convert.errors import MythosError
from mythos_convert.model.config import MythosConfig

# dtype name -> (safetensors code, bytes per element)
SAFETENSORS_METADATA = {"format": "pt"}
FILENAME_PATTERN = "model{suffix}.safetensors"
INDEX_FILE = "model.safetensors.index.json"


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


def select_native_weights(cfg: MythosConfig, state: Mapping[str, Any]) -> dict[str, Any]:
    """The tensors to export, by native name, checked against `cfg`.

    A head that is a separate copy of the embedding is compared with torch (only torch tensors
    reach that branch: the torch-free reader sends such checkpoints down the torch path).

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
            raise MythosError(
                f"checkpoint lacks tensor {name} that its config (n_layers={cfg.n_layers}) requires: "
                "the file is incomplete; re-save it, or pass the --config that matches it"
            )
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
        import torch

        if head.shape != embed.shape or not torch.equal(head, embed):
            raise MythosError(
                "checkpoint's output.weight differs from embedding.weight: Mythos exports need a tied head; "
                "re-save the checkpoint with output.weight equal to embedding.weight"
            )
    return selected


def nonfinite_error(name: str, after_cast: bool) -> MythosError:
    """The refusal of NaN/Inf weights, naming the tensor and whether the cast caused it."""
    cause = " after casting (values overflow the dtype)" if after_cast else ""
    return MythosError(
        f"tensor {name} holds NaN or Inf values{cause}: the checkpoint is damaged "
        "(or pass --allow-nonfinite to export it anyway)"
    )


def plan_shards(shapes: Mapping[str, tuple[int, ...]], dtype: str, max_shard_size: int | str) -> StateDictSplit:
    """huggingface_hub's shard plan for tensors `hf name -> shape` stored as `dtype`, in the given order.

    The same plan `split_torch_state_dict_into_shards` makes for meta tensors (no storage ids,
    sizes numel x itemsize), without its torch imports (torch.distributed alone costs a second).
    """
    itemsize = BY_NAME[dtype].itemsize
    try:
        return split_state_dict_into_shards_factory(
            dict(shapes),
            get_storage_size=lambda shape: math.prod(shape) * itemsize,
            filename_pattern=FILENAME_PATTERN,
            max_shard_size=max_shard_size,
        )
    except ValueError as exc:
        raise MythosError(
            f"--max-shard-size {max_shard_size!r} is not a size ({exc}): pass e.g. --max-shard-size 5GB or 500MB"
        ) from exc


def write_index(folder: Path, split: StateDictSplit) -> list[str]:
    """The index file when sharded; return the weight files written (and the index)."""
    if split.is_sharded:
        index = {"metadata": dict(split.metadata), "weight_map": dict(sorted(split.tensor_to_filename.items()))}
        (folder / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
        return [*split.filename_to_tensors, INDEX_FILE]
    return list(split.filename_to_tensors)


def layout_header(specs: Mapping[str, tuple[tuple[int, ...], str]], metadata: Mapping[str, str]) -> bytes:
    """The length-prefixed safetensors header for `name -> (shape, dtype name)`, tensors in name order.

    Exactly what `safetensors.save_file` writes: compact JSON with `__metadata__` first, padded
    with spaces to 8 bytes.
    """
    header: dict[str, object] = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for name in sorted(specs):
        shape, dtype = specs[name]
        code, itemsize = BY_NAME[dtype].code, BY_NAME[dtype].itemsize
        size = math.prod(shape) * itemsize
        header[name] = {"dtype": code, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text
