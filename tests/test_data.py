"""The data pipeline: readers, cleaning, exact and MinHash near-dedup, token files, the embedded corpus."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from helpers import sample_corpus

from mythos_convert.data.corpus import embedded_corpus, load_corpus, read_documents
from mythos_convert.data.dedup import drop_near_duplicates, near_duplicate_clusters
from mythos_convert.data.pipeline import build_dataset, clean_text, prepare_documents, token_dtype
from mythos_convert.data.tokenizer import special_tokens, train_tokenizer
from mythos_convert.errors import MythosError


def _random_doc(rng: random.Random, words: list[str], n: int = 150) -> str:
    return " ".join(rng.choice(words) for _ in range(n))


@pytest.fixture(scope="module")
def vocabulary() -> list[str]:
    return sorted({w for doc in sample_corpus(50_000) for w in doc.split() if w.isalpha()})


def test_pipeline_drops_planted_exact_and_near_duplicates(vocabulary):
    rng = random.Random(0)
    distinct = [_random_doc(rng, vocabulary) for _ in range(40)]
    exact = [distinct[3], "  " + distinct[7].replace(" ", "\n", 3)]  # same text, other whitespace
    near = []
    for i in (1, 5, 9):  # two words changed in 150: Jaccard of 5-gram sets ~0.88
        words = distinct[i].split()
        words[20], words[90] = "zzplanted", "qqplanted"
        near.append(" ".join(words))
    from mythos_convert.data.corpus import Corpus

    corpus = Corpus("planted", distinct + exact + near + ["", "too short"])
    texts, report = prepare_documents(corpus)
    assert report.documents_read == 47
    assert report.documents_usable == 45  # the empty and the short one
    assert report.documents_exact_dedup == 43
    assert report.documents_near_dedup == 40
    assert texts == [clean_text(d) for d in distinct]  # the originals (first of each cluster) survive


def test_minhash_keeps_unrelated_documents_and_clusters_to_the_first(vocabulary):
    rng = random.Random(1)
    docs = [_random_doc(rng, vocabulary, 80) for _ in range(100)]
    assert drop_near_duplicates(docs) == docs
    copy = docs[10].split()
    copy[40] = "different"
    roots = near_duplicate_clusters([*docs, " ".join(copy)])
    assert roots[-1] == 10


def test_clean_text_normalises_and_strips_control_characters():
    assert clean_text("ﬁle\x00 ｆｕｌｌ１２３\r\nnext\x07\tline  ") == "file full123\nnext\tline"


def test_readers_for_text_jsonl_parquet_and_folders(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "corpus"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("plain text document one", encoding="utf-8")
    (folder / "sub" / "b.jsonl").write_text(
        json.dumps({"text": "json line one"}) + "\n\n" + json.dumps({"text": "json line two", "id": 3}) + "\n"
    )
    pq.write_table(pa.table({"text": ["parquet row one", "parquet row two"], "n": [1, 2]}), folder / "c.parquet")
    (folder / ".hidden.txt").write_text("ignored")
    (folder / "notes.bin").write_bytes(b"\xff\xfe ignored: unknown suffix in a folder")
    corpus = read_documents([folder])
    assert corpus.texts == [
        "plain text document one",
        "parquet row one",
        "parquet row two",
        "json line one",
        "json line two",
    ]
    assert [p.rsplit("/", 1)[-1] for p in corpus.sources] == ["a.txt", "c.parquet", "b.jsonl"]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.jsonl", '{"text": "ok"}\n{broken\n', "bad.jsonl:2 is not valid JSON"),
        ("notext.jsonl", '{"body": "x"}\n', "has no `text` field"),
        ("binary.txt", b"\xff\xfe\x00\x81 not utf-8", "is not UTF-8 text"),
        ("broken.parquet", b"PAR1 not really", "is not a readable Parquet file"),
    ],
)
def test_unreadable_data_gives_one_clear_error(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(MythosError, match=message):
        read_documents([path])


def test_missing_path_and_corpus_without_usable_text(tmp_path):
    with pytest.raises(MythosError, match="does not exist"):
        load_corpus([tmp_path / "nope.txt"])
    (tmp_path / "short.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in ["", "hi", " \x00 "]))
    with pytest.raises(MythosError, match="no usable text"):
        prepare_documents(load_corpus([tmp_path / "short.jsonl"]))


def test_token_files_hold_documents_separated_by_eos(tmp_path):
    docs = sample_corpus(60_000)
    tok = train_tokenizer(docs, 400)
    data = build_dataset(load_corpus([_write_jsonl(tmp_path / "d.jsonl", docs)]), tok, tmp_path / "tokens", seed=3)
    eos = special_tokens(tok).id("eos")
    assert data.train.dtype == token_dtype(400) == np.uint16
    assert isinstance(data.train, np.memmap)
    assert data.train[-1] == eos and data.val[-1] == eos
    n_docs = data.facts["documents_near_dedup"]
    assert int((data.train == eos).sum() + (data.val == eos).sum()) == n_docs
    assert data.facts["train_tokens"] == data.train.size and data.facts["val_tokens"] == data.val.size
    assert 0.01 < data.val.size / (data.train.size + data.val.size) < 0.2
    # decoding the streams gives back exactly the cleaned, kept documents (in shuffled order)
    stream = np.concatenate([data.train, data.val]).tolist()
    decoded, current = [], []
    for token in stream:
        if token == eos:
            decoded.append(tok.decode(current))
            current = []
        else:
            current.append(token)
    texts, _ = prepare_documents(load_corpus([tmp_path / "d.jsonl"]), seed=3)
    assert sorted(decoded) == sorted(texts)
    assert token_dtype(70_000) == np.uint32


def _write_jsonl(path, docs):
    path.write_text("\n".join(json.dumps({"text": d}) for d in docs))
    return path


def test_embedded_corpus_is_english_deterministic_text():
    first = embedded_corpus(max_files=20)
    assert first == embedded_corpus(max_files=20)
    assert len(first) > 50 and len(set(first)) == len(first)
    words = " ".join(first).split()
    assert sum(w.lower() in {"the", "a", "of", "is", "to"} for w in words) / len(words) > 0.05
