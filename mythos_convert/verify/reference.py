"""The native reference a GGUF file is verified against, computed once and reused for every file.

The native engine in float32 on the weights the files were made from: a checkpoint, or an HF
folder's weights (the folder holding the file when nothing else is named). Its logits on every
verify sequence and its greedy continuations do not depend on the file, so `gguf --outtype all`
builds them once for its 17 files (`api.export_gguf`), and so does `verify` for its one file.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mythos_convert.data.tokenizer import load_tokenizer
from mythos_convert.engines.base import Engine
from mythos_convert.engines.native import native_engine_of
from mythos_convert.errors import MythosError
from mythos_convert.formats.checkpoint import load_model
from mythos_convert.formats.dcp import is_dcp_checkpoint
from mythos_convert.formats.hf_folder import CONFIG_FILE
from mythos_convert.formats.safetensors import weight_files
from mythos_convert.model.config import MythosConfig
from mythos_convert.source import ModelSource, open_source
from mythos_convert.verify.gguf_tensors import source_tensors
from mythos_convert.verify.inputs import GREEDY_TOKENS, greedy_prompts, sequences
from mythos_convert.verify.record import file_digest, hash_files


@dataclass
class NativeReference:
    """The native side of every GGUF comparison: the engine, the sequences, their logits and greedy tokens."""

    source: ModelSource
    engine: Engine  # the native model in float32 on the source's weights
    tokenizer: Any
    description: str  # "native engine on ckpt.pt", as the table and verify.json name it
    digest: dict[str, Any] | None  # sha256/size of what was read, by name only (verify.json is published)
    given: str | None  # the name of the checkpoint or folder the caller named (verify.json's `checkpoint`)
    seqs: list[list[int]]
    logits: list[torch.Tensor]  # per sequence, [T, V] float32
    greedy: dict[int, list[int]]  # sequence index -> its GREEDY_TOKENS greedy tokens (`greedy_prompts`)

    @property
    def config(self) -> MythosConfig:
        return self.source.config

    @functools.cached_property
    def logit_std(self) -> float:
        """The standard deviation of every reference logit (the |diff| gates scale with it)."""
        return float(torch.cat(self.logits).std())

    @functools.cached_property
    def tensors(self) -> dict[str, np.ndarray]:
        """The source's tensors under GGUF names, for the per-tensor check of each file (read once)."""
        return source_tensors(self.source)


def _open(gguf_path: Path, ckpt: str | Path | None, config_yaml) -> tuple[ModelSource, dict[str, Any] | None, str]:
    """(source, digest, description) of `ckpt` (a checkpoint or an HF folder), else of the folder
    holding `gguf_path`. The digest is taken before the source is read.
    """
    folder = gguf_path.parent
    if ckpt is not None and Path(ckpt).is_dir() and not is_dcp_checkpoint(ckpt):  # a DCP folder is a checkpoint
        folder, ckpt = Path(ckpt), None
    if ckpt is None:
        if not (folder / CONFIG_FILE).is_file():
            raise MythosError(
                f"no reference for {gguf_path.name} (no config.json beside it): pass --ckpt with the native checkpoint"
            )
        digest: dict[str, Any] | None = {"name": f"{folder.name}/", "files": hash_files(folder, weight_files(folder))}
        return open_source(folder), digest, f"native engine on {folder.name}/ weights"
    digest = {"name": Path(ckpt).name, **file_digest(ckpt)} if Path(ckpt).is_file() else None
    return open_source(ckpt, config_yaml=config_yaml), digest, f"native engine on {Path(ckpt).name}"


def native_reference(
    gguf_path: Path,
    ckpt: str | Path | None = None,
    *,
    config_yaml: str | Path | None = None,
    tokenizer: str | Path | None = None,
    tokenizer_obj=None,
) -> NativeReference:
    """Open the reference, build the native model and run it on every sequence (logits and greedy), once.

    Args:
        gguf_path: a file to verify; when `ckpt` is None, the HF folder holding it is the reference.
        ckpt: a native checkpoint or an HF folder.
        tokenizer / tokenizer_obj: the tokenizer (path or loaded); default: the source's own.
    """
    source, digest, description = _open(Path(gguf_path), ckpt, config_yaml)
    tok = tokenizer_obj or (load_tokenizer(tokenizer) if tokenizer is not None else source.tokenizer()[0])
    engine = native_engine_of(load_model(source.as_checkpoint(), torch.float32), description)
    cfg = source.config
    seqs = sequences(tok, cfg.vocab_size, cfg.max_seq_len)
    logits = [engine.logits(s) for s in seqs]
    greedy = {i: engine.greedy(seqs[i], GREEDY_TOKENS) for i in greedy_prompts(seqs)}
    given = Path(ckpt).name if ckpt is not None else None
    return NativeReference(source, engine, tok, description, digest, given, seqs, logits, greedy)
