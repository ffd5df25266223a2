"""Tokenizer training: the reference's ByteLevel BPE, no normalizer by default, bos-only prompts."""

from __future__ import annotations

import json

import pytest
from helpers import sample_corpus
from tokenizers import Tokenizer

from mythos_convert.data.corpus import Corpus
from mythos_convert.data.pipeline import build_dataset, clean_text
from mythos_convert.data.tokenizer import (
    SPECIAL_TOKENS,
    check_vocab_fits,
    load_tokenizer,
    save_tokenizer,
    special_tokens,
    train_tokenizer,
)
from mythos_convert.errors import MythosError

SAMPLES = [
    "Plain ASCII text, with punctuation!",
    "café naïve résumé — “quotes” and … ellipsis",
    "東京 Ω 😀 ﬁle ｆｕｌｌ１２３",
    "  leading spaces\tand tabs\nand newlines  ",
]


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return [clean_text(t) for t in sample_corpus(120_000)]


@pytest.fixture(scope="module")
def trained(texts) -> Tokenizer:
    return train_tokenizer(texts, 600)


def test_specials_are_ids_0_to_4_and_vocab_size_is_met(trained):
    assert [trained.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    roles = special_tokens(trained)
    assert (roles.id("bos"), roles.id("eos"), roles.id("pad")) == (1, 2, 3)
    assert trained.get_vocab_size() == 600


@pytest.mark.parametrize("text", SAMPLES)
def test_round_trip_including_non_ascii(trained, text):
    ids = trained.encode(text, add_special_tokens=False).ids
    assert trained.token_to_id("<unk>") not in ids  # byte-level: nothing is unknown
    assert trained.decode(ids) == text  # no normalizer: exact, even for ﬁ and full-width digits


def test_prompt_gets_bos_only_and_no_normalizer_by_default(trained):
    ids = trained.encode("hello world").ids
    assert ids[0] == 1 and 2 not in ids
    spec = json.loads(trained.to_str())
    assert spec["normalizer"] is None
    assert spec["pre_tokenizer"]["type"] == "ByteLevel" and spec["pre_tokenizer"]["add_prefix_space"] is False
    assert spec["decoder"]["type"] == "ByteLevel"


def test_nfkc_option_keeps_the_reference_normalizer(texts, tmp_path):
    tok = train_tokenizer(texts, 400, normalizer="nfkc")
    assert json.loads(tok.to_str())["normalizer"]["type"] == "NFKC"
    assert tok.decode(tok.encode("ﬁle ｆｕｌｌ１２３", add_special_tokens=False).ids) == "file full123"
    path = save_tokenizer(tok, tmp_path / "tokenizer.json")
    assert load_tokenizer(path).to_str() == tok.to_str()
    with pytest.raises(MythosError, match="unknown normalizer"):
        train_tokenizer(texts, 400, normalizer="nfc")


def test_reference_nfkc_tokenizer_still_works_in_the_pipeline(ref_tokenizer_path, texts, tmp_path):
    ref = load_tokenizer(ref_tokenizer_path)
    data = build_dataset(Corpus("sample", texts[:60]), ref, tmp_path / "tok")
    eos = special_tokens(ref).id("eos")
    assert data.train[-1] == eos
    assert 1 not in data.train.tolist()  # its <bos>-<eos> post-processor is not applied to documents
    assert check_vocab_fits(ref, 512) == 512


def test_vocab_checks(trained, texts):
    with pytest.raises(MythosError, match="600 tokens but the model's vocab_size is 512"):
        check_vocab_fits(trained, 512)
    assert check_vocab_fits(trained, 4096) == 600  # smaller than the model is fine
    with pytest.raises(MythosError, match="too small"):
        train_tokenizer(texts, 100)
