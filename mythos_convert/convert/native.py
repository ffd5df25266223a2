"""`mythos-convert native`: an HF Llama folder -> a native checkpoint the reference loads (strict).

Tensors stream from the folder's safetensors through the one name table; the tied output head
shares the embedding's storage (saved once) and the rope_cos/rope_sin buffers are recomputed from
rope_theta exactly as the model computes them. For our own exports, mythos.json restores the
original config (d_ff), step, training facts and the tokenizer's training post-processor, so
native -> HF -> native is bit-exact.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from mythos_convert.atomic import check_output_file
from mythos_convert.convert.hf_config import same_architecture
from mythos_convert.convert.hf_layout import native_shapes
from mythos_convert.convert.hf_read import HFSource, read_hf_folder
from mythos_convert.convert.names import TIED_HEAD, convert_name, expected_names
from mythos_convert.convert.native_checkpoint import save_checkpoint
from mythos_convert.data.tokenizer import load_tokenizer
from mythos_convert.errors import MythosError
from mythos_convert.model.config import MythosConfig
from mythos_convert.model.layers import rope_tables
from mythos_convert.safe_paths import refuse_output_over_inputs
from mythos_convert.ui import info, track

# mythos.json key holding the native tokenizer's own post-processor (the export rewrites it).
POST_PROCESSOR_KEY = "native_post_processor"


def _config(src: HFSource) -> MythosConfig:
    """The recorded native config when it describes the same model, else the one mapped from config.json."""
    recorded = src.meta.get("native_config")
    if isinstance(recorded, dict):
        cfg = MythosConfig.from_dict(recorded)
        if same_architecture(cfg, src.config):
            return cfg
    return src.config


def _tokenizer_json(src: HFSource) -> str | None:
    """The folder's tokenizer.json, with the native post-processor put back when mythos.json kept it."""
    if src.tokenizer_path is None:
        return None
    # refuse a damaged tokenizer.json now, not when the checkpoint is used
    load_tokenizer(src.tokenizer_path, fix="replace it with the model's tokenizer.json, or re-export the folder")
    text = src.tokenizer_path.read_text(encoding="utf-8")
    if POST_PROCESSOR_KEY in src.meta:
        data = json.loads(text)
        data["post_processor"] = src.meta[POST_PROCESSOR_KEY]
        text = json.dumps(data, ensure_ascii=False, indent=2)
    return text


def read_native_state(src: HFSource, cfg: MythosConfig) -> dict[str, torch.Tensor]:
    """Native state dict (reference layout: tied output.weight and rope buffers) from an HF folder.

    Raises:
        MythosError: unknown tensor names, missing tensors, wrong shapes (naming tensor and shapes).
    """
    shapes = native_shapes(cfg)
    state: dict[str, torch.Tensor] = {}
    for hf_name, tensor in track(src.iter_tensors(), "reading safetensors", total=len(src.tensor_names())):
        name = convert_name(hf_name, "hf", "native")
        if name not in shapes:
            raise MythosError(
                f"tensor {hf_name} (layer beyond n_layers={cfg.n_layers}) does not belong to this model: "
                "fix num_hidden_layers in config.json or re-export the folder"
            )
        if tuple(tensor.shape) != shapes[name]:
            raise MythosError(
                f"tensor {hf_name} has shape {tuple(tensor.shape)} but config.json implies {shapes[name]}: "
                "the config does not describe these weights; re-export the folder"
            )
        state[name] = tensor
    missing = [n for n in expected_names("native", cfg.n_layers, tied=True) if n not in state]
    if missing:
        raise MythosError(
            f"{src.folder} lacks tensor(s) {[convert_name(n, 'native', 'hf') for n in missing[:4]]}: "
            "the weights are incomplete; re-export the folder"
        )
    ordered = {name: state[name] for name in shapes if name in state}
    ordered[TIED_HEAD["native"]] = ordered["embedding.weight"]  # one storage, two names, as the model saves it
    cos, sin = rope_tables(cfg.head_dim, cfg.max_seq_len, cfg.rope_theta)
    ordered["rope_cos"], ordered["rope_sin"] = cos, sin
    return {name: ordered[name] for name in shapes}  # the model's own state_dict order


def export_native(folder: str | Path, out: str | Path, *, force: bool = False) -> Path:
    """Convert an HF Llama folder into a native checkpoint at `out` (optimizer state empty).

    Raises:
        MythosError: an existing `out` without `force`; a folder that cannot map (naming the field).
    """
    out = check_output_file(out, force)
    src = read_hf_folder(folder)
    refuse_output_over_inputs(out, [("HF folder's file", path) for path in src.files()])
    cfg = _config(src)
    tokenizer_json = _tokenizer_json(src)
    info(f"converting {src.folder} ({cfg.num_parameters():,} parameters) to native {out}")
    state = read_native_state(src, cfg)
    training = src.meta.get("training") if isinstance(src.meta.get("training"), dict) else None
    return save_checkpoint(
        out,
        state,
        cfg,
        step=int(src.meta.get("step") or 0),
        optimizer_state={},
        tokenizer_json=tokenizer_json,
        training=training or None,
        replace=force,
    )
