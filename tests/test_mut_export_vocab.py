"""The GGUF tokenizer section (export/gguf_vocab.py): a byte-level BPE as llama.cpp's gpt2 vocabulary,
its pre-tokenizer named, its normalizer warned about, and the keys written in order."""

from __future__ import annotations

import json

import gguf
import pytest
from helpers import make_reference_tokenizer
from tokenizers import Tokenizer, normalizers

import mythos_convert.export.gguf_vocab as gguf_vocab
from mythos_convert.data.tokenizer import SpecialTokens
from mythos_convert.errors import MythosError
from mythos_convert.export.gguf_vocab import GGUFVocab, _check_model, _describe, build_vocab, pre_tokenizer_name
from mythos_convert.export.tokenizer_files import bos_only_tokenizer_json, special_tokens_map_dict

T = gguf.TokenType
GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
LLAMA3 = (
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
    "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
)
QWEN2 = LLAMA3.replace("\\p{N}{1,3}", "\\p{N}")


@pytest.fixture(scope="module")
def tok_path(tmp_path_factory):
    """A trained byte-level BPE of 300 ids: <unk> <bos> <eos> <pad> <sep> are 0-4, NFKC normalizer."""
    return make_reference_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer.json", vocab_size=300)


def _tok(path, **changes) -> Tokenizer:
    tok = Tokenizer.from_file(str(path))
    for name, value in changes.items():
        setattr(tok, name, value)
    return tok


def test_the_vocabulary_is_padded_and_typed(tok_path):
    tok = _tok(tok_path)
    tok.add_tokens(["<extra>"])  # an added token that is not special: user-defined
    vocab = build_vocab(tok, 304)
    ids = tok.get_vocab(with_added_tokens=True)
    assert len(ids) == 301 and ids["<extra>"] == 300
    assert vocab.tokens[:5] == ["<unk>", "<bos>", "<eos>", "<pad>", "<sep>"]
    assert vocab.tokens[300:] == ["<extra>", "[PAD301]", "[PAD302]", "[PAD303]"]
    assert vocab.token_types[:5] == [T.CONTROL] * 5
    assert vocab.token_types[5:300] == [T.NORMAL] * 295
    assert vocab.token_types[300:] == [T.USER_DEFINED, T.UNUSED, T.UNUSED, T.UNUSED]
    assert all(type(t) is int for t in vocab.token_types)
    assert vocab.special_ids == {"bos": 1, "eos": 2, "unk": 0, "pad": 3}  # no separator key
    assert list(vocab.special_ids) == ["bos", "eos", "unk", "pad"]
    assert (vocab.pre, vocab.split_regex, vocab.add_bos, vocab.add_eos) == ("gpt-2", GPT2, True, False)
    merges = json.loads(tok.to_str())["model"]["merges"]
    assert vocab.merges == [m if isinstance(m, str) else " ".join(m) for m in merges]
    assert len(vocab.merges) == len(merges) > 0 and all(m.count(" ") == 1 for m in vocab.merges)


def test_a_tokenizer_needs_no_more_rows_than_the_embedding_has(tok_path):
    assert len(build_vocab(_tok(tok_path), 300).tokens) == 300
    with pytest.raises(MythosError) as caught:
        build_vocab(_tok(tok_path), 299)
    assert str(caught.value) == (
        "the tokenizer has ids up to 299 but the model's embedding has 299 rows: "
        "pass the tokenizer the model was trained with"
    )


def test_a_normalizer_llama_cpp_cannot_run_is_named_with_the_texts_it_changes(tok_path):
    vocab = build_vocab(_tok(tok_path), 300)
    assert vocab.normalizer == "NFKC"
    assert vocab.changed_texts == ["ﬁle", "ｆｕｌｌ１２３", "x\u00a0y", "\u2126 \u212b", "e\u0301"]
    assert vocab.normalizer_warning() == (
        "the tokenizer has a NFKC normalizer, which llama.cpp does not run: text it changes tokenizes "
        "differently there (e.g. 'ﬁle', 'ｆｕｌｌ１２３', 'x\\xa0y', '\u2126 \u212b', 'e\u0301'); normalize prompts yourself "
        "(unicodedata.normalize('NFKC', text)) before passing them to llama.cpp or Ollama"
    )
    lower = build_vocab(
        _tok(tok_path, normalizer=normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])), 300
    )
    assert lower.normalizer == "Sequence[NFKC, Lowercase]"
    assert lower.changed_texts[-1] == "Hello" and len(lower.changed_texts) == 6


def test_no_normalizer_no_warning(tok_path):
    vocab = build_vocab(_tok(tok_path, normalizer=None), 300)
    assert vocab.normalizer is None and vocab.changed_texts == [] and vocab.normalizer_warning() is None


def test_a_warning_without_changed_probes_says_so():
    vocab = GGUFVocab([], [], [], {}, "gpt-2", GPT2, True, normalizer="Strip")
    assert "(e.g. none of the usual probes);" in vocab.normalizer_warning()
    assert vocab.normalizer_warning().startswith("the tokenizer has a Strip normalizer,")


def test_a_tokenizer_without_bos_adds_none(tok_path):
    data = json.loads(_tok(tok_path).to_str())
    data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] != "<bos>"]
    data["post_processor"] = None
    vocab = build_vocab(Tokenizer.from_str(json.dumps(data)), 300)
    assert vocab.add_bos is False and "bos" not in vocab.special_ids
    assert vocab.token_types[1] == T.NORMAL  # still in the vocabulary, no longer special


class _Writer:
    def __init__(self):
        self.calls: list[tuple] = []

    def __getattr__(self, name):
        return lambda *args: self.calls.append((name, *args))


def test_the_tokenizer_keys_are_written_in_order():
    vocab = GGUFVocab(
        ["<unk>", "<s>", "a"], [3, 3, 1], ["a a"], {"bos": 1, "eos": 2, "unk": 0, "pad": 0}, "qwen2", "x", False
    )
    writer = _Writer()
    vocab.add_to(writer)
    assert writer.calls == [
        ("add_tokenizer_model", "gpt2"),
        ("add_tokenizer_pre", "qwen2"),
        ("add_string", "tokenizer.ggml.pretokenizer", "x"),
        ("add_token_list", ["<unk>", "<s>", "a"]),
        ("add_token_types", [3, 3, 1]),
        ("add_token_merges", ["a a"]),
        ("add_uint32", "tokenizer.ggml.bos_token_id", 1),
        ("add_uint32", "tokenizer.ggml.eos_token_id", 2),
        ("add_uint32", "tokenizer.ggml.unknown_token_id", 0),
        ("add_uint32", "tokenizer.ggml.padding_token_id", 0),
        ("add_add_bos_token", False),
        ("add_add_eos_token", False),
    ]
    writer = _Writer()
    GGUFVocab([], [], [], {}, "gpt-2", GPT2, True, True).add_to(writer)
    assert writer.calls[-2:] == [("add_add_bos_token", True), ("add_add_eos_token", True)]


def test_components_are_described_as_tokenizer_json_names_them():
    assert _describe(None) == "none"
    assert _describe({}) == "none"
    assert _describe({"type": "NFKC"}) == "NFKC"
    assert _describe({"strip": True}) == "None"
    assert _describe({"type": "Sequence", "normalizers": [{"type": "NFD"}, {"type": "StripAccents"}]}) == (
        "Sequence[NFD, StripAccents]"
    )
    inner = {"type": "Sequence", "pretokenizers": [{"type": "Digits"}]}
    assert _describe({"type": "Sequence", "pretokenizers": [inner, {"type": "ByteLevel"}]}) == (
        "Sequence[Sequence[Digits], ByteLevel]"
    )
    assert _describe({"type": "Sequence"}) == "Sequence[]"
    assert _describe({"type": "Sequence", "pretokenizers": None, "normalizers": None}) == "Sequence[]"


def _split(regex, use_regex=False, first="Split", second="ByteLevel"):
    return {
        "type": "Sequence",
        "pretokenizers": [{"type": first, "pattern": {"Regex": regex}}, {"type": second, "use_regex": use_regex}],
    }


def test_pre_tokenizers_llama_cpp_has_are_named():
    assert pre_tokenizer_name({"pre_tokenizer": {"type": "ByteLevel"}}) == "gpt-2"
    assert pre_tokenizer_name({"pre_tokenizer": {"type": "ByteLevel", "use_regex": True}}) == "gpt-2"
    assert pre_tokenizer_name({"pre_tokenizer": _split(LLAMA3)}) == "llama-bpe"
    assert pre_tokenizer_name({"pre_tokenizer": _split(QWEN2)}) == "qwen2"
    seq = _split(LLAMA3)
    del seq["pretokenizers"][1]["use_regex"]  # ByteLevel's default splits again: not llama-3's
    with pytest.raises(MythosError):
        pre_tokenizer_name({"pre_tokenizer": seq})


@pytest.mark.parametrize(
    ("pre", "shown"),
    [
        (None, "none"),
        ({"type": "ByteLevel", "use_regex": False}, "ByteLevel"),
        ({"type": "Whitespace"}, "Whitespace"),
        (_split(LLAMA3, use_regex=True), "Sequence[Split, ByteLevel]"),
        (_split(GPT2), "Sequence[Split, ByteLevel]"),
        (_split(LLAMA3, first="Digits"), "Sequence[Digits, ByteLevel]"),
        (_split(LLAMA3, second="Metaspace"), "Sequence[Split, Metaspace]"),
        ({"type": "Sequence", "pretokenizers": [{"type": "Split"}, {"type": "ByteLevel", "use_regex": False}]}, None),
        ({"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": None}, {"type": "ByteLevel"}]}, None),
        ({"type": "Sequence", "pretokenizers": [*_split(LLAMA3)["pretokenizers"], {"type": "Digits"}]}, None),
        ({"type": "Sequence", "pretokenizers": _split(LLAMA3)["pretokenizers"][:1]}, "Sequence[Split]"),
        ({"type": "Sequence"}, "Sequence[]"),
    ],
)
def test_other_pre_tokenizers_are_refused_by_name(pre, shown):
    with pytest.raises(MythosError) as caught:
        pre_tokenizer_name({"pre_tokenizer": pre})
    if shown is not None:
        assert str(caught.value) == (
            f"the tokenizer's pre-tokenizer ({shown}) has no llama.cpp equivalent: GGUF export supports ByteLevel "
            "(GPT-2 regex) and the llama-3 / qwen2 Split+ByteLevel pre-tokenizers; retrain the tokenizer with "
            "`mythos-convert tokenizer train`"
        )


def test_only_a_byte_level_bpe_is_accepted():
    _check_model({"model": {"type": "BPE"}, "decoder": {"type": "ByteLevel"}})
    with pytest.raises(MythosError) as caught:
        _check_model({"model": {"type": "WordPiece"}, "decoder": {"type": "ByteLevel"}})
    assert str(caught.value) == (
        "tokenizer model 'WordPiece' is not supported for GGUF: only byte-level BPE (tokenizers' BPE with a "
        "ByteLevel pre-tokenizer) maps to llama.cpp's gpt2 vocabulary; retrain the tokenizer with "
        "`mythos-convert tokenizer train`"
    )
    with pytest.raises(MythosError, match=r"^tokenizer model None is not supported"):
        _check_model({"model": None})
    with pytest.raises(MythosError) as caught:
        _check_model({"model": {"type": "BPE"}, "decoder": {"type": "Metaspace"}})
    assert str(caught.value) == (
        "tokenizer decoder Metaspace is not ByteLevel: llama.cpp's gpt2 vocabulary decodes byte-level tokens "
        "only; use a ByteLevel BPE tokenizer"
    )
    with pytest.raises(MythosError, match=r"^tokenizer decoder none is not ByteLevel"):
        _check_model({"model": {"type": "BPE"}, "decoder": None})


def test_build_vocab_refuses_what_llama_cpp_cannot_run(tok_path):
    data = json.loads(_tok(tok_path).to_str())
    data["decoder"] = None
    with pytest.raises(MythosError, match="tokenizer decoder none"):
        build_vocab(Tokenizer.from_str(json.dumps(data)), 300)
    data = json.loads(_tok(tok_path).to_str())
    data["pre_tokenizer"] = {"type": "Whitespace"}
    with pytest.raises(MythosError, match=r"pre-tokenizer \(Whitespace\)"):
        build_vocab(Tokenizer.from_str(json.dumps(data)), 300)


def test_merges_are_read_as_strings_from_either_spelling(tok_path):
    data = json.loads(_tok(tok_path).to_str())
    pairs = [m.split(" ") if isinstance(m, str) else m for m in data["model"]["merges"]]
    data["model"]["merges"] = [" ".join(p) for p in pairs]
    as_strings = build_vocab(Tokenizer.from_str(json.dumps(data)), 300).merges
    assert as_strings == [" ".join(p) for p in pairs]


def test_merges_written_as_strings_or_left_out_are_read(tok_path, monkeypatch):
    # tokenizers releases before 0.20 write each merge as one "a b" string; a model may have none
    spec = json.loads(_tok(tok_path).to_str())
    pairs = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    spec["model"]["merges"] = pairs
    monkeypatch.setattr(gguf_vocab, "tokenizer_spec", lambda tokenizer: json.loads(json.dumps(spec)))
    assert build_vocab(_tok(tok_path), 300).merges == pairs
    del spec["model"]["merges"]
    assert build_vocab(_tok(tok_path), 300).merges == []


def test_the_exported_tokenizer_json_is_indented_utf8(tok_path):
    text = bos_only_tokenizer_json(_tok(tok_path))
    lines = text.split("\n")
    assert text.endswith("}\n") and lines[0] == "{"
    assert lines[1].startswith('  "') and not lines[1].startswith("   ")
    assert "Ġ" in text and "\\u0120" not in text  # byte-level tokens as they are, not escaped


def test_the_special_tokens_map_names_only_the_roles_there_are():
    specials = SpecialTokens(bos=("<s>", 1), eos=("</s>", 2), pad=("<pad>", 0))
    assert special_tokens_map_dict(specials) == {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}
    assert special_tokens_map_dict(SpecialTokens()) == {}
