"""From raw documents to memory-mapped token files: clean, deduplicate, tokenize, split.

Cleaning does the Unicode normalisation (NFKC) here rather than in the tokenizer, because
llama.cpp cannot run a tokenizer normalizer; the exported tokenizer then sees exactly the text
the model was trained on. Token files hold every kept document followed by `<eos>` (its id read
from the tokenizer), as uint16 when the vocabulary fits, else uint32; the last `val_fraction` of
the stream, cut at a document boundary, is the validation split.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from mythos_convert.data.corpus import Corpus
from mythos_convert.data.dedup import drop_exact_duplicates, drop_near_duplicates
from mythos_convert.data.tokenizer import special_tokens
from mythos_convert.errors import MythosError
from mythos_convert.support import ui

MIN_CHARS = 64  # shorter documents carry too little text to learn from ("very short")
MIN_WORDS = 8
VAL_FRACTION = 0.05
_KEEP_CONTROL = {"\n", "\t"}
_ENCODE_CHUNK = 2048  # documents per batch handed to tokenizers (which encodes a batch in parallel)
META_NAME = "meta.json"


def clean_text(text: str) -> str:
    """NFKC, Unix newlines, no control characters except newline and tab, trimmed."""
    text = unicodedata.normalize("NFKC", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = "".join(c for c in text if c in _KEEP_CONTROL or unicodedata.category(c) != "Cc")
    return text.strip()


def is_usable(text: str) -> bool:
    return len(text) >= MIN_CHARS and len(text.split()) >= MIN_WORDS


@dataclass
class DataReport:
    """What happened to the data, recorded in the checkpoint's `training["data"]`."""

    name: str
    sources: list[str]
    documents_read: int = 0
    documents_usable: int = 0  # after cleaning and the short-document filter
    documents_exact_dedup: int = 0
    documents_near_dedup: int = 0
    train_documents: int = 0
    val_documents: int = 0
    train_tokens: int = 0
    val_tokens: int = 0
    characters: int = 0
    steps: list[str] = field(default_factory=list)

    @property
    def description(self) -> str:
        return (
            f"{self.name}: {self.documents_read} documents read, {self.documents_usable} after cleaning, "
            f"{self.documents_exact_dedup} after exact dedup, {self.documents_near_dedup} after MinHash "
            f"near-dedup; {self.train_tokens} train / {self.val_tokens} validation tokens"
        )

    def as_facts(self) -> dict[str, Any]:
        facts = asdict(self)
        facts["sources"] = self.sources[:50]  # the card needs a summary, not a huge list
        facts["description"] = self.description
        return facts


def prepare_documents(corpus: Corpus, *, near_dedup: bool = True, seed: int = 0) -> tuple[list[str], DataReport]:
    """Clean and deduplicate a corpus.

    Raises:
        MythosError: nothing usable is left (empty files, only very short documents).
    """
    report = DataReport(name=corpus.name, sources=list(corpus.sources), documents_read=len(corpus.texts))
    texts = [t for t in (clean_text(t) for t in corpus.texts) if is_usable(t)]
    report.documents_usable = len(texts)
    if not texts:
        raise MythosError(
            f"no usable text in {corpus.name}: every document is empty or shorter than "
            f"{MIN_CHARS} characters / {MIN_WORDS} words; pass files with real text"
        )
    texts = drop_exact_duplicates(texts)
    report.documents_exact_dedup = len(texts)
    if near_dedup:
        texts = drop_near_duplicates(texts, seed=seed)
    report.documents_near_dedup = len(texts)
    report.characters = sum(len(t) for t in texts)
    report.steps = [
        "NFKC, control characters stripped",
        f"dropped documents under {MIN_CHARS} characters or {MIN_WORDS} words",
        "exact dedup (SHA-1 of whitespace-normalised text)",
        "near dedup: MinHash LSH, word 5-grams, 14 bands x 8 hashes (FineWeb recipe)" if near_dedup else "",
    ]
    report.steps = [s for s in report.steps if s]
    return texts, report


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size < 65536 else np.dtype(np.uint32)


def _encode(tokenizer: Tokenizer, texts: list[str], eos: int, dtype: np.dtype) -> list[np.ndarray]:
    """Each document's ids followed by <eos>; the post-processor's specials are not added."""
    out = []
    for start in ui.track(range(0, len(texts), _ENCODE_CHUNK), "tokenizing"):
        for enc in tokenizer.encode_batch(texts[start : start + _ENCODE_CHUNK], add_special_tokens=False):
            ids = np.asarray(enc.ids, dtype=np.int64)
            out.append(np.append(ids, eos).astype(dtype))
    return out


def _write_tokens(path: Path, docs: list[np.ndarray], dtype: np.dtype) -> int:
    total = int(sum(d.size for d in docs))
    array = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(total,))
    pos = 0
    for doc in docs:
        array[pos : pos + doc.size] = doc
        pos += doc.size
    array.flush()
    del array
    return total


def tokenize_to_files(
    texts: list[str],
    tokenizer: Tokenizer,
    folder: str | Path,
    report: DataReport,
    *,
    val_fraction: float = VAL_FRACTION,
    seed: int = 0,
) -> TokenData:
    """Tokenize documents into `folder/train.npy` and `folder/val.npy` (memory-mappable .npy).

    Documents are shuffled deterministically (by `seed`) before the split so that validation is
    not one stretch of the corpus; the validation tail is cut at a document boundary.
    """
    eos = special_tokens(tokenizer).id("eos")
    if eos is None:
        raise MythosError("the tokenizer has no <eos> token: train one with `mythos-convert tokenizer train`")
    vocab = tokenizer.get_vocab_size(with_added_tokens=True)
    dtype = token_dtype(vocab)
    order = np.random.default_rng(seed).permutation(len(texts))
    docs = _encode(tokenizer, [texts[i] for i in order], eos, dtype)
    sizes = np.array([d.size for d in docs])
    total = int(sizes.sum())
    n_val_docs = 0
    if len(docs) > 1:  # whole documents from the end until val_fraction of the tokens
        tail = np.cumsum(sizes[::-1])
        n_val_docs = int(min(len(docs) - 1, max(1, np.searchsorted(tail, val_fraction * total) + 1)))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if n_val_docs:
        train_docs, val_docs = docs[: len(docs) - n_val_docs], docs[len(docs) - n_val_docs :]
    else:  # one document: split its tokens
        cut = int(total * (1 - val_fraction))
        train_docs, val_docs = [docs[0][:cut]], [docs[0][cut:]]
    report.train_tokens = _write_tokens(folder / "train.npy", train_docs, dtype)
    report.val_tokens = _write_tokens(folder / "val.npy", val_docs, dtype)
    report.train_documents, report.val_documents = len(train_docs), max(n_val_docs, 1)
    (folder / META_NAME).write_text(json.dumps(report.as_facts(), indent=2, ensure_ascii=False))
    return TokenData.open(folder)


@dataclass
class TokenData:
    """Memory-mapped train/validation token streams plus the report that made them."""

    train: np.ndarray
    val: np.ndarray
    facts: dict[str, Any]
    folder: Path

    @classmethod
    def open(cls, folder: str | Path) -> TokenData:
        folder = Path(folder)
        try:
            train = np.load(folder / "train.npy", mmap_mode="r")
            val = np.load(folder / "val.npy", mmap_mode="r")
            facts = json.loads((folder / META_NAME).read_text())
        except (OSError, ValueError) as exc:
            raise MythosError(f"token files in {folder} are missing or damaged ({exc}): start a new run") from exc
        return cls(train=train, val=val, facts=facts, folder=folder)


def build_dataset(
    corpus: Corpus,
    tokenizer: Tokenizer,
    folder: str | Path,
    *,
    val_fraction: float = VAL_FRACTION,
    seed: int = 0,
) -> TokenData:
    """The whole pipeline: clean, dedup, tokenize into memory-mapped files, split."""
    texts, report = prepare_documents(corpus, seed=seed)
    return tokenize_to_files(texts, tokenizer, folder, report, val_fraction=val_fraction, seed=seed)
