"""verify.hf_tokenizer: AutoTokenizer on an HF folder against the native tokenizer (content ids, BOS
first, no EOS last), and what the folder's tokenizer.json changed, named entry by entry."""

from __future__ import annotations

import json

import pytest
from helpers import make_reference_tokenizer
from tokenizers import Tokenizer

from mythos_convert.data.tokenizer import special_tokens
from mythos_convert.export.tokenizer_files import bos_only_tokenizer_json, tokenizer_config_dict
from mythos_convert.verify.hf_tokenizer import _bpe_model, _vocab_differences, tokenizer_checks

TEXTS = 12  # verify.inputs: 8 tokenizer texts and 4 prompts


@pytest.fixture(scope="module")
def native(tmp_path_factory) -> Tokenizer:
    """A trained byte-level BPE whose post-processor adds <bos> and <eos>, as the reference's does."""
    path = make_reference_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer.json", vocab_size=400)
    return Tokenizer.from_file(str(path))


def _folder(tmp_path, text: str, tok: Tokenizer):
    (tmp_path / "tokenizer.json").write_text(text, encoding="utf-8")
    config = tokenizer_config_dict(special_tokens(tok), 128)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    return tmp_path


def test_an_exported_folder_agrees_on_every_text(tmp_path, native):
    folder = _folder(tmp_path, bos_only_tokenizer_json(native), native)
    assert tokenizer_checks(folder, native) == (1.0, [])


def test_a_folder_that_ends_prompts_with_eos_is_named_once(tmp_path, native):
    folder = _folder(tmp_path, native.to_str(), native)  # the training tokenizer: <bos> $A <eos>
    assert tokenizer_checks(folder, native) == (
        1.0,
        ["AutoTokenizer ends a prompt with <eos>: generate would stop early"],
    )


def test_a_folder_that_adds_no_bos_is_named_once(tmp_path, native):
    data = json.loads(native.to_str())
    data["post_processor"] = None
    folder = _folder(tmp_path, json.dumps(data), native)
    assert tokenizer_checks(folder, native) == (1.0, ["AutoTokenizer does not start a prompt with <bos>"])


def test_a_folder_with_swapped_ids_disagrees_and_names_them(tmp_path, native):
    data = json.loads(bos_only_tokenizer_json(native))
    vocab = data["model"]["vocab"]
    vocab["e"], vocab["t"] = vocab["t"], vocab["e"]
    folder = _folder(tmp_path, json.dumps(data), native)
    agreement, problems = tokenizer_checks(folder, native)
    assert 0 < agreement < 1
    wrong = TEXTS - round(agreement * TEXTS)
    assert problems[0] == f"tokenizers disagree on {wrong} of 12 texts"
    ids = native.get_vocab()
    assert problems[1:] == [
        f"tokenizer.json's vocabulary differs in 2 id(s): 'e' is id {ids['t']} there, {ids['e']} in the native "
        f"tokenizer, 't' is id {ids['e']} there, {ids['t']} in the native tokenizer"
    ]


def _native_json(**changes) -> str:
    data = {
        "model": {"vocab": {"a": 0, "b": 1, "c": 2, "d": 3, "ab": 4}, "merges": ["a b", "c d"]},
        "added_tokens": [{"id": 5, "content": "<bos>"}, {"id": 6, "content": "<eos>"}],
    }
    return json.dumps({**data, **changes})


class _Tok:
    def __init__(self, text: str):
        self.text = text

    def to_str(self) -> str:
        return self.text


def _differences(tmp_path, native: str, theirs: str | bytes) -> list[str]:
    path = tmp_path / "tokenizer.json"
    if isinstance(theirs, bytes):
        path.write_bytes(theirs)
    else:
        path.write_text(theirs, encoding="utf-8")
    return _vocab_differences(path, _Tok(native))


def test_the_same_tokenizer_json_has_no_differences(tmp_path):
    assert _differences(tmp_path, _native_json(), _native_json()) == []
    # merges as pairs (the newer tokenizers format) are the same merges
    theirs = _native_json(
        model={"vocab": {"a": 0, "b": 1, "c": 2, "d": 3, "ab": 4}, "merges": [["a", "b"], ["c", "d"]]}
    )
    assert _differences(tmp_path, _native_json(), theirs) == []


def test_an_unreadable_tokenizer_json_names_nothing_here(tmp_path):
    assert _differences(tmp_path, _native_json(), "{broken") == []
    assert _differences(tmp_path, _native_json(), b'{"model": "\xff"}') == []
    assert _differences(tmp_path, _native_json(), "[1, 2]") == []
    assert _differences(tmp_path, _native_json(), '{"model": {"vocab": 3}}') == []
    assert _vocab_differences(tmp_path / "missing.json", _Tok(_native_json())) == []


def test_changed_and_missing_ids_are_named_at_most_three(tmp_path):
    vocab = {"a": 1, "b": 2, "c": 3, "d": 0}  # four ids moved, "ab" gone
    theirs = _native_json(model={"vocab": vocab, "merges": ["a b", "c d"]})
    assert _differences(tmp_path, _native_json(), theirs) == [
        "tokenizer.json's vocabulary differs in 4 id(s): 'a' is id 1 there, 0 in the native tokenizer, "
        "'b' is id 2 there, 1 in the native tokenizer, 'c' is id 3 there, 2 in the native tokenizer",
        "tokenizer.json's vocabulary lacks 1 token(s) of the native one, e.g. 'ab'",
    ]


def test_added_tokens_are_compared_too(tmp_path):
    added = [{"id": 9, "content": "<bos>"}, "junk", {"id": 7}]  # <eos> gone; entries without content ignored
    assert _differences(tmp_path, _native_json(), _native_json(added_tokens=added)) == [
        "tokenizer.json's added tokens differs in 1 id(s): '<bos>' is id 9 there, 5 in the native tokenizer",
        "tokenizer.json's added tokens lacks 1 token(s) of the native one, e.g. '<eos>'",
    ]
    assert _differences(tmp_path, _native_json(), _native_json(added_tokens=None)) == [
        "tokenizer.json's added tokens lacks 2 token(s) of the native one, e.g. '<bos>'"
    ]


def test_extra_tokens_there_are_no_difference(tmp_path):
    vocab = {"a": 0, "b": 1, "c": 2, "d": 3, "ab": 4, "cd": 7}
    added = [{"id": 5, "content": "<bos>"}, {"id": 6, "content": "<eos>"}, {"id": 8, "content": "<pad>"}]
    theirs = _native_json(model={"vocab": vocab, "merges": ["a b", "c d"]}, added_tokens=added)
    assert _differences(tmp_path, _native_json(), theirs) == []


@pytest.mark.parametrize(
    ("merges", "problems"),
    [
        (["a b"], ["tokenizer.json lacks 1 merge(s) of the native tokenizer, e.g. 'c d'"]),
        (["a b", "c d", "ab c", "b c"], ["tokenizer.json has 2 merge(s) the native tokenizer lacks, e.g. 'ab c'"]),
        (
            ["b c", "a b"],
            [
                "tokenizer.json lacks 1 merge(s) of the native tokenizer, e.g. 'c d'",
                "tokenizer.json has 1 merge(s) the native tokenizer lacks, e.g. 'b c'",
            ],
        ),
        (["c d", "a b"], ["tokenizer.json's merges are in a different order (merge priority) than the native ones"]),
        (None, ["tokenizer.json lacks 2 merge(s) of the native tokenizer, e.g. 'a b'"]),
    ],
)
def test_merges_lost_added_or_reordered_are_named(tmp_path, merges, problems):
    theirs = _native_json(model={"vocab": {"a": 0, "b": 1, "c": 2, "d": 3, "ab": 4}, "merges": merges})
    assert _differences(tmp_path, _native_json(), theirs) == problems


def test_a_bpe_model_without_its_parts_reads_as_empty():
    assert _bpe_model({}) == ({}, [], {})
    assert _bpe_model({"model": None, "added_tokens": None}) == ({}, [], {})
    assert _bpe_model({"model": {"vocab": None, "merges": None}}) == ({}, [], {})
    model = {"model": {"vocab": {"x": 1}, "merges": [["x", "y"], "y z"]}, "added_tokens": [{"id": 2, "content": "<s>"}]}
    assert _bpe_model(model) == ({"x": 1}, ["x y", "y z"], {"<s>": 2})


def test_prompts_longer_than_the_context_are_compared_without_a_warning(tmp_path, native, capfd):
    folder = _folder(tmp_path, bos_only_tokenizer_json(native), native)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["model_max_length"] = 4  # every text is longer
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    capfd.readouterr()
    assert tokenizer_checks(folder, native) == (1.0, [])
    assert "longer than the specified maximum" not in capfd.readouterr().err
