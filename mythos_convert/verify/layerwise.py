"""Verify an export block by block, so a model larger than memory is verified.

Whole-model verify holds the native model and the export's at once (about 2x the weights). Here
only one block of each lives at a time: block i of the native model (`model.model.Block`, the
checkpoint's tensors) and block i of the export run by transformers (`LlamaDecoderLayer` under the
export's own config: config.json of an HF folder, the header of a GGUF file, whose tensors gguf-py
dequantises and un-permutes), fed the same hidden states, compared, freed. The native stream goes
on to the next block, so each block is judged on its own input and an error is named where it is
made. The embedding rows and the head (final norm and tied output) are compared the same way.

Both sides compute in float32 on the same rounded weights: the native tensor is rounded to the
dtype the export stored it in (bf16/f16 HF folders, GGUF F16/BF16), as whole verify does, so the
gate (`gates.LAYERWISE_REL`) bounds arithmetic differences only. Quantized GGUF types are refused:
their weights differ from the native ones by design, and no per-block bound separates quantisation
error from a bug the way the KL gate of whole verify does.
"""

from __future__ import annotations

import gc
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mythos_convert.errors import MythosError
from mythos_convert.formats.hf_config import hf_config_dict
from mythos_convert.formats.hf_folder import CONFIG_FILE
from mythos_convert.formats.tensor_bytes import PageReleaser
from mythos_convert.model.layers import rms_norm, rope_tables, signed_sin
from mythos_convert.names import convert_name
from mythos_convert.source import ModelSource, open_source
from mythos_convert.support.ui import track
from mythos_convert.verify.gates import LAYERWISE_REL

FLOAT_GGUF = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


@dataclass
class Side:
    """The export as layerwise verify runs it: its tensors (native names) and transformers' config."""

    source: ModelSource
    llama_config: Any  # transformers.LlamaConfig
    label: str  # "HF folder (bfloat16)", "GGUF F16"


def export_side(target: Path) -> Side:
    """Open an HF folder or a float GGUF file for layerwise verify.

    Raises:
        MythosError: a quantized GGUF (named, with what to run instead), or what `open_source` refuses.
    """
    from transformers import LlamaConfig

    from mythos_convert.data.tokenizer import SpecialTokens

    source = open_source(target)
    if source.kind == "hf":
        config = LlamaConfig.from_dict(json.loads((source.path / CONFIG_FILE).read_text()))
        config._attn_implementation = "eager"  # transformers' plain attention: the reference path
        dtype = str(source.get(source.stored["embedding.weight"]).dtype).removeprefix("torch.")
        return Side(source, config, f"HF folder ({dtype})")
    quantized = sorted({t for t in source.ggml_types.values() if t not in FLOAT_GGUF})
    if quantized:
        raise MythosError(
            f"{target.name} holds {', '.join(quantized)} tensors: layerwise verify compares float exports "
            "(HF folders, GGUF F32/F16/BF16), since quantised weights differ from the native ones by design; "
            "verify it whole (--whole), where the KL gate judges quantisation"
        )
    config = LlamaConfig.from_dict(hf_config_dict(source.config, SpecialTokens(), "float32"))
    config._attn_implementation = "eager"
    types = sorted(set(source.ggml_types.values()) - {"F32"}) or ["F32"]
    return Side(source, config, f"GGUF {'/'.join(types)}")


def _stored_dtype(side: Side, native: str) -> torch.dtype:
    """The dtype the export stores `native` in (what the native tensor is rounded to)."""
    source = side.source
    if source.kind == "gguf":
        return FLOAT_GGUF[source.ggml_types[convert_name(native, "native", "gguf")]]
    return source.get(source.stored[native]).dtype


def _tensor(source: ModelSource, native: str) -> torch.Tensor:
    value = source.get(source.stored[native])
    return torch.from_numpy(np.ascontiguousarray(value)) if isinstance(value, np.ndarray) else value


def _pair(native: ModelSource, side: Side, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(native tensor rounded to the export's dtype, export tensor), both float32."""
    ours = _tensor(native, name).to(_stored_dtype(side, name)).float()
    theirs = _tensor(side.source, name).float()
    return ours, theirs


def _blocks(native: ModelSource, side: Side, i: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Block i of the native model and of the export (transformers), on their own tensors."""
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    from mythos_convert.formats.checkpoint import _no_init
    from mythos_convert.model.model import Block

    prefix, hf_prefix = f"layers.{i}.", f"model.layers.{i}."
    names = [n for n in native.stored if n.startswith(prefix)]
    pairs = {n: _pair(native, side, n) for n in names}
    with _no_init(), torch.device("meta"):
        ours, theirs = Block(native.config), LlamaDecoderLayer(side.llama_config, layer_idx=i)
    ours.load_state_dict({n[len(prefix) :]: a for n, (a, _) in pairs.items()}, strict=True, assign=True)
    hf_names = {convert_name(n, "native", "hf")[len(hf_prefix) :]: b for n, (_, b) in pairs.items()}
    theirs.load_state_dict(hf_names, strict=True, assign=True)
    return ours.eval(), theirs.eval()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |a| (NaN when either side is not finite)."""
    if not (bool(torch.isfinite(a).all()) and bool(torch.isfinite(b).all())):
        return float("nan")
    return float((a - b).abs().max() / a.abs().max().clamp_min(1e-30))


class _Rope:
    """Both sides' rotary tables for positions 0..T-1: the native model's and transformers'."""

    def __init__(self, native: ModelSource, side: Side):
        from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

        cfg = native.config
        self.cos, self.sin = rope_tables(cfg.head_dim, cfg.max_seq_len, cfg.rope_theta)
        self.hf = LlamaRotaryEmbedding(side.llama_config)

    def native(self, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cos[:t], signed_sin(self.sin[:t])

    def export(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.hf(h, torch.arange(h.shape[1])[None])


def _run_block(ours, theirs, rope: _Rope, h: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Both blocks on the same hidden states [1, T, D]: the native output and the relative difference."""
    cos, sin = rope.native(h.shape[1])
    a = ours(h, cos, sin)
    t = h.shape[1]
    mask = torch.full((t, t), float("-inf")).triu(1)[None, None]  # additive causal mask, as eager attention takes it
    out = theirs(h, attention_mask=mask, position_ids=torch.arange(t)[None], position_embeddings=rope.export(h))
    b = out[0] if isinstance(out, tuple) else out  # transformers 4.x returns a tuple
    return a, _rel(a, b)


def _releasers(*sources: ModelSource) -> list[PageReleaser]:
    return [PageReleaser(p) for s in sources for p in s.inputs if p.is_file()]


def _drop(releasers: list[PageReleaser], *modules: torch.nn.Module) -> None:
    """Give back the mapped file pages under the modules' weights, then the modules."""
    for module in modules:
        for p in module.parameters():
            for r in releasers:
                r.release(p.data)
    gc.collect()


def layerwise_compare(native: ModelSource, side: Side, seqs: list[list[int]], gate: float = LAYERWISE_REL) -> dict:
    """Embedding, every block and the head, one block of each side in memory at a time.

    Returns {"mode", "gate", "stages": [{"name", "rel"}], "worst", "failures", "passed"}.
    """
    if side.source.config.n_layers != native.config.n_layers:
        raise MythosError(
            f"the export has {side.source.config.n_layers} blocks, the checkpoint {native.config.n_layers}: "
            "it was not exported from this checkpoint; pass the right --ckpt"
        )
    releasers = _releasers(native, side.source)
    rope = _Rope(native, side)
    stages: list[dict[str, Any]] = []
    with torch.no_grad():
        emb, emb_x = _pair(native, side, "embedding.weight")
        ids = [torch.tensor(s) for s in seqs]
        hidden = [emb[i][None] for i in ids]
        stages.append({"name": "embedding", "rel": max(_rel(emb[i], emb_x[i]) for i in ids)})
        del emb, emb_x
        for layer in track(range(native.config.n_layers), "verifying block by block", total=native.config.n_layers):
            ours, theirs = _blocks(native, side, layer)
            worst = 0.0
            for j, h in enumerate(hidden):
                hidden[j], rel = _run_block(ours, theirs, rope, h)
                worst = rel if rel != rel or worst != worst else max(worst, rel)  # NaN stays
            stages.append({"name": f"block {layer}", "rel": worst})
            _drop(releasers, ours, theirs)
            del ours, theirs
        stages.append({"name": "output head", "rel": _head(native, side, hidden)})
    failures = [
        f"{s['name']}: max |diff| {s['rel']:.3g} of its scale, above {gate:g}" for s in stages if not s["rel"] <= gate
    ]
    worst = max((s["rel"] for s in stages), key=lambda r: float("inf") if r != r else r)
    return {
        "mode": "layerwise",
        "gate": gate,
        "stages": stages,
        "worst": worst,
        "failures": failures,
        "passed": not failures,
    }


def _head(native: ModelSource, side: Side, hidden: list[torch.Tensor]) -> float:
    """The final norm and the tied head on the last hidden states (transformers' RMSNorm for the export)."""
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    norm, norm_x = _pair(native, side, "norm.weight")
    emb, emb_x = _pair(native, side, "embedding.weight")
    final = LlamaRMSNorm(native.config.d_model, eps=side.llama_config.rms_norm_eps)
    final.weight.data = norm_x
    worst = 0.0
    for h in hidden:
        a = rms_norm(h, norm, native.config.norm_eps) @ emb.T
        b = final(h) @ emb_x.T
        rel = _rel(a, b)
        worst = rel if rel != rel or worst != worst else max(worst, rel)
    return worst


def native_for(target: Path, side: Side, ckpt: str | Path | None, config_yaml: str | Path | None) -> ModelSource:
    """The native side: `ckpt`, else what an HF export recorded, else the HF folder a GGUF sits in.

    Raises:
        MythosError: none of them, naming --ckpt.
    """
    from mythos_convert.verify.hf import recorded_checkpoint

    if ckpt is None and side.source.kind == "hf":
        ckpt = recorded_checkpoint(side.source.hf)
    if ckpt is None and side.source.kind == "gguf" and (target.parent / CONFIG_FILE).is_file():
        return open_source(target.parent)
    if ckpt is None:
        raise MythosError(f"no native checkpoint to compare {target} with: pass --ckpt CKPT")
    return open_source(ckpt, config_yaml=config_yaml)


def verify_layerwise(
    target: str | Path,
    ckpt: str | Path | None = None,
    *,
    tokenizer: str | Path | None = None,
    config_yaml: str | Path | None = None,
    show: bool = True,
) -> dict[str, Any]:
    """Layerwise verify of an HF folder or float GGUF file against its native model (see module doc)."""
    from mythos_convert.data.tokenizer import load_tokenizer
    from mythos_convert.support.ui import info
    from mythos_convert.verify.inputs import sequences

    target = Path(target)
    side = export_side(target)
    native = native_for(target, side, ckpt, config_yaml)
    tok = load_tokenizer(tokenizer) if tokenizer is not None else native.tokenizer()[0]
    seqs = sequences(tok, native.config.vocab_size, native.config.max_seq_len)
    result = layerwise_compare(native, side, seqs)
    result.update(target=target.name, export=side.label, reference=native.path.name)
    if show:
        info(
            f"layerwise: {len(result['stages'])} stages of {side.label} against {native.path.name}, "
            f"worst max |diff| {result['worst']:.3g} of its scale (gate {result['gate']:g}): "
            + ("passed" if result["passed"] else "FAILED at " + result["failures"][0])
        )
    return result
