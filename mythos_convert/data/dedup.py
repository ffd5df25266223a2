"""Exact and near-duplicate removal.

Exact: a hash of the cleaned text. Near: MinHash LSH following FineWeb's recipe (datatrove's
`MinhashDedup*`): word 5-grams of lower-cased, punctuation-free text, 112 hash functions split
into 14 bands of 8 rows; two documents that agree on every row of any band are duplicates
(probability ~0.92 at Jaccard similarity 0.75, ~0.05 at 0.5); clusters are joined with a
union-find and the first document of each cluster is kept.

Hashes are universal hashes `(a * h + b) mod p` over 32-bit shingle hashes with the prime
p = 2^32 - 5, so every product fits in uint64 and numpy computes them exactly.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
import zlib

import numpy as np

NGRAM = 5
NUM_BUCKETS = 14
HASHES_PER_BUCKET = 8
NUM_HASHES = NUM_BUCKETS * HASHES_PER_BUCKET  # 112
_PRIME = np.uint64((1 << 32) - 5)
_MAX_HASH = np.uint64((1 << 32) - 1)
_WORD = re.compile(r"\w+")


def exact_key(text: str) -> bytes:
    """Identity of a document for exact dedup (whitespace runs collapsed)."""
    return hashlib.sha1(" ".join(text.split()).encode("utf-8")).digest()


def drop_exact_duplicates(texts: list[str]) -> list[str]:
    """Keep the first occurrence of each text."""
    seen: set[bytes] = set()
    kept = []
    for text in texts:
        key = exact_key(text)
        if key not in seen:
            seen.add(key)
            kept.append(text)
    return kept


def _words(text: str) -> list[str]:
    """FineWeb-style normalisation: lower case, no accents or punctuation, word tokens."""
    text = unicodedata.normalize("NFD", text.lower())
    text = "".join(c for c in text if not unicodedata.combining(c))
    return _WORD.findall(text)


def shingle_hashes(text: str, n: int = NGRAM) -> np.ndarray:
    """32-bit hashes of the document's distinct word n-grams (the whole text if shorter than n words)."""
    words = _words(text)
    grams = {" ".join(words[i : i + n]) for i in range(max(1, len(words) - n + 1))}
    return np.fromiter((zlib.crc32(g.encode("utf-8")) for g in grams), dtype=np.uint64, count=len(grams))


def _hash_params(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.integers(1, int(_PRIME), size=NUM_HASHES, dtype=np.uint64)
    b = rng.integers(0, int(_PRIME), size=NUM_HASHES, dtype=np.uint64)
    return a, b


def minhash_signature(shingles: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[NUM_HASHES] minimum of each universal hash over the shingles."""
    if shingles.size == 0:
        return np.full(NUM_HASHES, _MAX_HASH, dtype=np.uint64)
    return ((shingles[:, None] * a[None, :] + b[None, :]) % _PRIME).min(axis=0)


def _find(parent: list[int], i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def near_duplicate_clusters(texts: list[str], seed: int = 0) -> list[int]:
    """For each document, the index of its cluster's first document (itself when unique)."""
    a, b = _hash_params(seed)
    parent = list(range(len(texts)))
    buckets: list[dict[bytes, int]] = [{} for _ in range(NUM_BUCKETS)]
    for i, text in enumerate(texts):
        signature = minhash_signature(shingle_hashes(text), a, b)
        for band, table in enumerate(buckets):
            key = signature[band * HASHES_PER_BUCKET : (band + 1) * HASHES_PER_BUCKET].tobytes()
            first = table.setdefault(key, i)
            if first != i:
                root_first, root_i = _find(parent, first), _find(parent, i)
                if root_first != root_i:
                    parent[max(root_first, root_i)] = min(root_first, root_i)
    return [_find(parent, i) for i in range(len(texts))]


def drop_near_duplicates(texts: list[str], seed: int = 0) -> list[str]:
    """Keep the first document of each MinHash LSH cluster."""
    roots = near_duplicate_clusters(texts, seed)
    return [text for i, text in enumerate(texts) if roots[i] == i]
