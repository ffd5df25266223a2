"""The exported tokenizer's templates: one text gets `<bos>` only, a text pair `<bos> A <bos> B`.

Built from the reference implementation's own tokenizer (../shared), whose post-processor adds
`<bos> $A <eos>`; the expected ids are that tokenizer's content ids with the specials placed here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import REFERENCE
from tokenizers import Tokenizer

from mythos_convert.data.tokenizer import special_tokens
from mythos_convert.export.tokenizer_files import (
    bos_only_tokenizer,
    bos_only_tokenizer_json,
    special_tokens_map_dict,
    tokenizer_config_dict,
)

FIRST, SECOND = "The capital of France is", "Paris, naïve café."


@pytest.fixture(scope="module")
def reference_tokenizer() -> Tokenizer:
    path = REFERENCE / "tokenizer" / "tokenizer.json"
    if not path.is_file():
        pytest.skip(f"the reference fixture is not at {REFERENCE}")
    return Tokenizer.from_file(str(path))


def test_one_text_gets_bos_and_no_eos(reference_tokenizer: Tokenizer):
    content = reference_tokenizer.encode(FIRST, add_special_tokens=False).ids
    assert reference_tokenizer.encode(FIRST).ids == [1, *content, 2]  # the reference's own template
    assert bos_only_tokenizer(reference_tokenizer).encode(FIRST).ids == [1, *content]


def test_a_text_pair_is_bos_a_bos_b_with_type_ids(reference_tokenizer: Tokenizer):
    a = reference_tokenizer.encode(FIRST, add_special_tokens=False).ids
    b = reference_tokenizer.encode(SECOND, add_special_tokens=False).ids
    pair = bos_only_tokenizer(reference_tokenizer).encode(FIRST, SECOND)
    assert pair.ids == [1, *a, 1, *b]
    assert pair.type_ids == [0] * (1 + len(a)) + [1] * (1 + len(b))
    assert pair.special_tokens_mask == [1] + [0] * len(a) + [1] + [0] * len(b)


def test_transformers_loads_the_exported_files_with_both_templates(reference_tokenizer: Tokenizer, tmp_path: Path):
    from transformers import AutoTokenizer

    specials = special_tokens(reference_tokenizer)
    (tmp_path / "tokenizer.json").write_text(bos_only_tokenizer_json(reference_tokenizer), encoding="utf-8")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(tokenizer_config_dict(specials, 128)))
    (tmp_path / "special_tokens_map.json").write_text(json.dumps(special_tokens_map_dict(specials)))
    tok = AutoTokenizer.from_pretrained(tmp_path)
    a = reference_tokenizer.encode(FIRST, add_special_tokens=False).ids
    b = reference_tokenizer.encode(SECOND, add_special_tokens=False).ids
    assert tok(FIRST)["input_ids"] == [1, *a]
    assert tok(FIRST, SECOND)["input_ids"] == [1, *a, 1, *b]
    assert (tok.bos_token, tok.eos_token, tok.model_max_length) == ("<bos>", "<eos>", 128)


def test_the_config_names_the_real_specials_and_no_eos_is_added(reference_tokenizer: Tokenizer):
    config = tokenizer_config_dict(special_tokens(reference_tokenizer), 4096)
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert (config["bos_token"], config["eos_token"], config["model_max_length"]) == ("<bos>", "<eos>", 4096)
    assert config["add_bos_token"] is True and config["add_eos_token"] is False
    assert config["clean_up_tokenization_spaces"] is False


def test_without_a_bos_token_texts_and_pairs_are_content_only(reference_tokenizer: Tokenizer):
    data = json.loads(reference_tokenizer.to_str())
    for token in data["added_tokens"]:
        if token["content"] == "<bos>":
            token["special"] = False  # a vocabulary entry, not the BOS role
    plain = Tokenizer.from_str(json.dumps(data))
    assert special_tokens(plain).bos is None
    copy = bos_only_tokenizer(plain)
    a = plain.encode(FIRST, add_special_tokens=False).ids
    b = plain.encode(SECOND, add_special_tokens=False).ids
    assert copy.post_processor is None
    assert copy.encode(FIRST).ids == a and copy.encode(FIRST, SECOND).ids == [*a, *b]
    assert tokenizer_config_dict(special_tokens(plain), 8)["add_bos_token"] is False
