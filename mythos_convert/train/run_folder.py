"""A training run's folder: `tokenizer.json`, `data/` (token files), `ckpt.pt` or `ckpt-dcp/`.

`prepare_run` writes the tokenizer and the token files into a temporary sibling and renames it
into place only when everything worked, so bad input (missing files, no usable text, a tokenizer
too large for the model) leaves nothing behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mythos_convert.data.corpus import load_corpus
from mythos_convert.data.pipeline import prepare_documents, tokenize_to_files
from mythos_convert.data.tokenizer import (
    NORMALIZERS,
    TOKENIZER_FILE,
    TRAIN_FIX,
    check_vocab_fits,
    load_tokenizer,
    save_tokenizer,
    train_tokenizer,
)
from mythos_convert.errors import MythosError
from mythos_convert.formats.checkpoint import torch_load
from mythos_convert.model.config import MythosConfig, Preset
from mythos_convert.support import ui
from mythos_convert.support.atomic import atomic_dir

CKPT_NAME = "ckpt.pt"
DCP_DIR = "ckpt-dcp"  # a torch.distributed.checkpoint folder with mythos.json and tokenizer.json
FORMATS = ("pt", "dcp")
STATE_KEY = "trainer_state"  # extra ckpt.pt key: RNG states for exact resume (ignored by the reference)
DATA_DIR = "data"
PRESET_NAME = "preset.yaml"  # the run's model + training config, so --resume works before the first checkpoint


def prepare_run(
    out: Path,
    preset: Preset,
    data: list[str | Path] | None,
    tokenizer_path: str | Path | None,
    normalizer: str,
    force: bool,
) -> None:
    """Write tokenizer.json, data/ and preset.yaml into `out` atomically: a failure leaves nothing behind."""
    cfg, seq_len = preset.model, preset.training.seq_len
    check_new_run(out, force)
    if normalizer not in NORMALIZERS:
        raise MythosError(f"unknown normalizer {normalizer!r}: use one of {', '.join(NORMALIZERS)}")
    given = load_tokenizer(tokenizer_path) if tokenizer_path is not None else None  # fail fast
    if given is not None:
        check_vocab_fits(given, cfg.vocab_size, where=f"tokenizer {tokenizer_path}", fix=TRAIN_FIX)
    with atomic_dir(out, force) as tmp:
        corpus = load_corpus(data)
        ui.info(f"data: {corpus.name} ({len(corpus.texts)} documents)")
        texts, report = prepare_documents(corpus, seed=preset.training.seed)
        if given is not None:
            tok = given
        else:
            ui.info(f"training a ByteLevel BPE tokenizer (vocab {cfg.vocab_size}, normalizer {normalizer})")
            tok = train_tokenizer(texts, cfg.vocab_size, normalizer)
        size = check_vocab_fits(tok, cfg.vocab_size, where=f"tokenizer {tokenizer_path or '(trained)'}", fix=TRAIN_FIX)
        if size < cfg.vocab_size:
            ui.warn(f"the tokenizer has {size} tokens, fewer than the model's vocab_size {cfg.vocab_size}")
        save_tokenizer(tok, tmp / TOKENIZER_FILE)
        tokens = tokenize_to_files(texts, tok, tmp / DATA_DIR, report, seed=preset.training.seed)
        if tokens.train.size <= seq_len + 1:
            raise MythosError(
                f"the corpus gives only {tokens.train.size} training tokens, fewer than one sequence of "
                f"{seq_len + 1}: add more text or use a smaller seq_len"
            )
        if tokens.val.size < 2:
            raise MythosError("the corpus is too small to hold out validation tokens: add more text")
        (tmp / PRESET_NAME).write_text(
            yaml.safe_dump({"model": cfg.to_dict(), "training": preset.training.to_dict()}, sort_keys=False)
        )
        ui.info(report.description)


def check_new_run(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise MythosError(f"output {out} exists and is not a folder: choose another --out")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise MythosError(
            f"output folder {out} is not empty: pass --resume to continue its run, --force to replace it, "
            "or choose another --out"
        )


@dataclass
class Resume:
    """The checkpoint a run continues from: a loaded ckpt.pt, or a checked DCP folder (loaded later, by every rank)."""

    format: str
    config: MythosConfig
    step: int
    facts: dict[str, Any]
    rng: list[dict[str, Any]] | None = None
    state: dict[str, Any] | None = None  # ckpt.pt's dict
    dcp: Path | None = None


def load_resume(out: Path, fmt: str | None = None) -> Resume | None:
    """The checkpoint to continue; None when the run was prepared but stopped before its first save.

    With both a ckpt.pt and a DCP folder present, `fmt` picks one; without it the DCP folder wins.
    """
    has_pt, has_dcp = (out / CKPT_NAME).is_file(), (out / DCP_DIR).exists()
    if has_dcp and fmt != "pt":
        return _resume_dcp(out / DCP_DIR)
    if has_pt and fmt != "dcp":
        return _resume_pt(out / CKPT_NAME)
    if (out / PRESET_NAME).is_file() and (out / TOKENIZER_FILE).is_file() and (out / DATA_DIR).is_dir():
        if not (has_pt or has_dcp):
            return None
    wanted = {"pt": CKPT_NAME, "dcp": f"{DCP_DIR}/"}.get(fmt or "", f"{CKPT_NAME} or {DCP_DIR}/")
    raise MythosError(f"nothing to resume in {out}: it has no {wanted}; start a run without --resume")


def _resume_dcp(folder: Path) -> Resume:
    from mythos_convert.train.dcp_checkpoint import check_folder, decode_rng

    meta = check_folder(folder)
    training = meta.training or {}
    rng = training.get("rng")
    return Resume(
        "dcp",
        meta.config,
        int(training.get("data_position", meta.step)),
        dict(training.get("facts") or {}),
        rng=decode_rng(rng) if rng is not None else None,
        dcp=folder,
    )


def _resume_pt(path: Path) -> Resume:
    try:
        state = torch_load(path)
    except Exception as exc:  # torch raises several types for damaged files
        raise MythosError(
            f"cannot resume from {path}: {str(exc).splitlines()[0][:120]}; restore the file, or start a new "
            "run with --force"
        ) from exc
    return Resume(
        "pt",
        MythosConfig.from_dict(dict(state["config"])),
        int(state.get("step", 0)),
        dict(state.get("training") or {}),
        rng=(state.get(STATE_KEY) or {}).get("rng"),
        state=state,
    )
