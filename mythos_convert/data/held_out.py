"""The text a model is measured or calibrated on, when the user names none.

`imatrix` (and `eval`) need text the model did not train on: the user's `--data`, else the
validation split the checkpoint's run folder holds (`data/val.npy`, written by `train`), else the
validation part of the embedded corpus, split exactly as `train` splits it (seed 0).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from mythos_convert.data.corpus import load_corpus
from mythos_convert.data.pipeline import DataReport, TokenData, prepare_documents, tokenize_to_files
from mythos_convert.errors import MythosError
from mythos_convert.support.ui import info

RUN_VALIDATION = Path("data") / "val.npy"


@dataclass(frozen=True)
class HeldOutText:
    """Token ids (int64) and, for people, what text they are."""

    tokens: np.ndarray
    description: str


def held_out_tokens(
    tokenizer: Tokenizer, data: list[str | Path] | None = None, run_folder: str | Path | None = None
) -> HeldOutText:
    """`--data` (all of it, cleaned as `train` cleans it), the run's validation split, or the embedded one.

    Raises:
        MythosError: unreadable data, or no usable text in it.
    """
    if data:
        corpus = load_corpus(data)
        texts, report = prepare_documents(corpus)
        tokens = _tokenize(texts, tokenizer, report, take="all")
        return HeldOutText(tokens, f"{corpus.name} ({len(texts)} documents, {tokens.size:,} tokens)")
    if run_folder is not None and (Path(run_folder) / RUN_VALIDATION).is_file():
        tokens = np.asarray(TokenData.open(Path(run_folder) / "data").val, dtype=np.int64)
        return HeldOutText(tokens, f"the validation split of {run_folder} ({tokens.size:,} tokens)")
    corpus = load_corpus(None)
    texts, report = prepare_documents(corpus)
    tokens = _tokenize(texts, tokenizer, report, take="val")
    return HeldOutText(tokens, f"the validation part of the embedded corpus, {corpus.name} ({tokens.size:,} tokens)")


def _tokenize(texts: list[str], tokenizer: Tokenizer, report: DataReport, take: str) -> np.ndarray:
    """`train`'s tokenization (ids, `<eos>` between documents, the same shuffle and split); `take`
    is "val" (the held-out part) or "all" (both parts, for text the model never trained on)."""
    if not texts:
        raise MythosError("no usable text: pass --data with longer documents (or leave it out for the default)")
    with tempfile.TemporaryDirectory(prefix="mythos-held-out-") as tmp:
        info("tokenizing the evaluation text")
        split = tokenize_to_files(texts, tokenizer, tmp, report)
        parts = [split.val] if take == "val" else [split.train, split.val]
        return np.concatenate([np.asarray(p, dtype=np.int64) for p in parts])


def windows(tokens: np.ndarray, ctx: int, chunks: int | None = None, *, what: str = "evaluation") -> list[np.ndarray]:
    """Held-out text cut into windows of `ctx` tokens (at most `chunks`); a shorter tail is not used.

    The one cut `eval` scores and `imatrix` calibrates on (llama-perplexity's and llama-imatrix's chunks).

    Raises:
        MythosError: fewer tokens than one window, saying how many there are and what to pass.
    """
    n = tokens.size // ctx
    if chunks is not None:
        n = min(n, chunks)
    if n < 1:
        raise MythosError(
            f"the {what} text has {tokens.size} tokens, fewer than one window of {ctx}: "
            f"pass a longer text with --data (at least {ctx} tokens) or a smaller --ctx (at most {tokens.size})"
        )
    return [np.ascontiguousarray(tokens[i * ctx : (i + 1) * ctx], dtype=np.int64) for i in range(n)]
