"""Importance matrices from the native model, in the file format llama.cpp's quantizer reads.

A K-quant (or a legacy type) weighted by an importance matrix spends its precision on the input
columns that carry the most signal. What llama.cpp's `llama-imatrix` collects, per matrix that
will be quantized (`blk.*` products; not the tied embedding, which is a lookup): for each input
column, the sum over tokens of the squared activation entering the product, and the token count.
Here the native model runs on held-out text and a tap on `model.linear` (no second forward pass)
adds the same sums, in float64, per GGUF tensor name.

The file format is `convert/imatrix_file.py`'s (llama.cpp's GGUF imatrix).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mythos_convert.data.held_out import held_out_tokens, windows
from mythos_convert.errors import MythosError
from mythos_convert.formats.checkpoint import load_model
from mythos_convert.model.layers import tap_linear_inputs
from mythos_convert.model.model import Mythos
from mythos_convert.names import convert_name
from mythos_convert.quant.imatrix_file import ImatrixStats, write_imatrix
from mythos_convert.source import open_source
from mythos_convert.support.atomic import check_output_file
from mythos_convert.support.safe_paths import refuse_output_over_inputs
from mythos_convert.support.ui import info, track

DEFAULT_CTX = 512  # llama-imatrix's default context


def collect(
    model: Mythos, tokens: np.ndarray, *, ctx: int = DEFAULT_CTX, chunks: int | None = None, dataset: str = ""
) -> ImatrixStats:
    """Run `model` over `tokens` in windows of `ctx` and sum every covered product's squared inputs.

    Raises:
        MythosError: fewer tokens than one window.
    """
    ctx = min(ctx, model.config.max_seq_len)
    chunked = windows(tokens, ctx, chunks, what="calibration")
    names = {
        id(param): convert_name(name, "native", "gguf")
        for name, param in model.named_parameters()
        if name.startswith("layers.") and param.dim() == 2
    }
    stats = ImatrixStats(datasets=[dataset] if dataset else [], chunk_size=ctx)

    def tap(x: torch.Tensor, weight: torch.Tensor) -> None:
        name = names.get(id(weight))
        if name is None:
            return
        flat = x.detach().reshape(-1, x.shape[-1])
        squares = flat.float().square().sum(dim=0, dtype=torch.float64).numpy()  # float64 accumulation
        if name in stats.sums:
            stats.sums[name] += squares
            stats.counts[name] += flat.shape[0]
        else:
            stats.sums[name], stats.counts[name] = squares, flat.shape[0]

    model.eval()
    started = time.perf_counter()
    with torch.no_grad(), tap_linear_inputs(tap):
        for window in track(chunked, "collecting the importance matrix"):
            model(torch.from_numpy(window)[None])
    seconds = time.perf_counter() - started
    stats.chunk_count = len(chunked)
    stats.tokens_per_second = len(chunked) * ctx / seconds if seconds > 0 else math.inf
    info(f"importance matrix: {len(chunked)} windows of {ctx} tokens, {stats.tokens_per_second:,.0f} tokens/s")
    return stats


def compute_imatrix(
    model_path: str | Path,
    *,
    data: list[str | Path] | None = None,
    tokenizer: str | Path | None = None,
    config_yaml: str | Path | None = None,
    ctx: int = DEFAULT_CTX,
    chunks: int | None = None,
) -> ImatrixStats:
    """The importance matrix of a model (ckpt.pt, HF folder or GGUF file, see `open_source`) on
    `data`, else its run's validation split, else the embedded corpus's (`held_out_tokens`),
    computed by the native model in float32.

    Raises:
        MythosError: a bad model, tokenizer or text; too little text for one window.
    """
    if ctx < 2:
        raise MythosError(f"--ctx {ctx} is too small: pass at least 2 (llama-imatrix uses 512)")
    if chunks is not None and chunks < 1:
        raise MythosError(f"--chunks {chunks} must be at least 1: pass how many windows to run, or leave it out")
    source = open_source(model_path, config_yaml=config_yaml)
    tok, _ = source.tokenizer(tokenizer)
    text = held_out_tokens(tok, data, source.run_folder)
    info(f"calibration text: {text.description}")
    model = load_model(source.as_checkpoint(), torch.float32)
    return collect(model, text.tokens, ctx=ctx, chunks=chunks, dataset=text.description)


def make_imatrix(model_path: str | Path, out: str | Path, *, force: bool = False, **options: Any) -> ImatrixStats:
    """`compute_imatrix` (`options` are its keywords), written to `out` (llama.cpp's GGUF imatrix file, atomically).

    Raises:
        MythosError: an existing `out` without `force`, or one that is (or lies in) an input,
            refused before anything is computed; see `compute_imatrix`.
    """
    check_output_file(out, force)
    inputs = [
        ("checkpoint", model_path),
        ("tokenizer", options.get("tokenizer")),
        ("config", options.get("config_yaml")),
    ]
    refuse_output_over_inputs(out, [*inputs, *(("data", d) for d in options.get("data") or [])])
    stats = compute_imatrix(model_path, **options)
    write_imatrix(out, stats, force=force)
    return stats
