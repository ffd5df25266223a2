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

from mythos_convert.data.tokenizer import TOKENIZER_FILE, load_tokenizer
from mythos_convert.formats.checkpoint import save_checkpoint
from mythos_convert.model.config import MythosConfig
from mythos_convert.names import same_architecture
from mythos_convert.source import ModelSource, open_hf
from mythos_convert.support.atomic import check_output_file
from mythos_convert.support.safe_paths import inside, refuse_output_over_inputs
from mythos_convert.support.ui import info


def _config(src: ModelSource) -> MythosConfig:
    """The recorded native config when it describes the same model, else the one mapped from config.json."""
    recorded = src.provenance.native_config if src.provenance else None
    if recorded is not None:
        cfg = MythosConfig.from_dict(recorded)
        if same_architecture(cfg, src.config):
            return cfg
    return src.config


def _tokenizer_json(src: ModelSource) -> str | None:
    """The folder's tokenizer.json, with the native post-processor put back when mythos.json kept it."""
    path = inside(src.path, TOKENIZER_FILE)
    if not path.is_file():
        return None
    # refuse a damaged tokenizer.json now, not when the checkpoint is used
    load_tokenizer(path, fix="replace it with the model's tokenizer.json, or re-export the folder")
    text = path.read_text(encoding="utf-8")
    if src.provenance is not None and src.provenance.has_post_processor:
        data = json.loads(text)
        data["post_processor"] = src.provenance.native_post_processor
        text = json.dumps(data, ensure_ascii=False, indent=2)
    return text


def export_native(folder: str | Path, out: str | Path, *, force: bool = False) -> Path:
    """Convert an HF Llama folder into a native checkpoint at `out` (optimizer state empty).

    Raises:
        MythosError: an existing `out` without `force`; a folder that cannot map (naming the field).
    """
    out = check_output_file(out, force)
    src = open_hf(folder)
    refuse_output_over_inputs(out, [("HF folder's file", path) for path in src.inputs])
    cfg = _config(src)
    tokenizer_json = _tokenizer_json(src)
    info(f"converting {src.path} ({cfg.num_parameters():,} parameters) to native {out}")
    provenance = src.provenance
    return save_checkpoint(
        out,
        src.state_dict(),
        cfg,
        step=(provenance.step or 0) if provenance else 0,
        optimizer_state={},
        tokenizer_json=tokenizer_json,
        training=(provenance.training if provenance else None) or None,
        replace=force,
    )
