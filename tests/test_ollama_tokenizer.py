"""Ollama's Go engine tokenizes our GGUF as `tokenizers` and llama.cpp do: a port of its tokenizer, run on our file.

No Ollama binary can be installed here, so tests/ollama_bpe.py ports the tokenizer that Ollama's
Go engine builds from a GGUF (github.com/ollama/ollama v0.11.11, 92b96d54efd6b49322b7cf046f9a0dc16b00cd0a:
model/models/llama/model.go, model/bytepairencoding.go, model/vocabulary.go; later eras cited there).
The GGUFs are this project's exports; the port reads them with gguf-py.

- 0.5.12 to 0.11.x (OLLAMA_NEW_ENGINE=1): the split regex comes from `tokenizer.ggml.pretokenizer`,
  which the export writes: ids identical to `tokenizers` on every hard case (normalized text: Ollama,
  like llama.cpp, runs no normalizer) and to llama.cpp on the raw text. A file without the key, or
  with another regex, fails naming the key.
- 0.12.0 to 0.24.x (OLLAMA_NEW_ENGINE=1): no key can give GPT-2's split there (0.12.2+ would need
  `tokenizer.ggml.pre` "default", which llama.cpp reads as a different split): pinned here as a
  known difference, so the docs' claim stays true. Without OLLAMA_NEW_ENGINE those releases run the
  file in llama.cpp, and 0.30.0+ always do (llama-server), which verify checks.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path

import gguf
import pytest
from gguf.scripts.gguf_new_metadata import MetadataDetails, copy_with_new_metadata
from helpers import REFERENCE, make_checkpoint, make_reference_tokenizer, require_reference, tiny_config
from ollama_bpe import LLAMA3_REGEX, OllamaBPE, era_0_5_12, era_0_12_0, era_0_12_2, read_keys
from tokenizers import Tokenizer

from mythos_convert.api import export_gguf

KEY = "tokenizer.ggml.pretokenizer"
HARD_CASES = (
    "In 1984, 12345678 people paid $3.14159 for 0.5kg (1,000,000 total).",
    "I'll say it's done; she'd've WE'LL THEY'RE It'S you'Ve I'M he'D.",
    "line one\r\nline two\r\n\r\n\r\nafter blank lines\n\n\nend\r",
    "\tdef f(x):\n\t\treturn x  # tab\tinside\t\t",
    "emoji 😀👍🏽 family 👨‍👩‍👧 flags 🇫🇷 and ✓ marks",
    "ﬁle ｆｕｌｌ１２３ x\u00a0y \u2126 \u212b e\u0301 ①②③ ¹²³",  # NFKC changes every piece of this
    "mixed: ABC123def 456GHI'S 789'LL     spaces   before\u3000ideographic",
    "code: if(a<=b){return a^b|~c;} // <eos> and <sep> are special",
    "  leading spaces, trailing spaces   ",
    "東京タワー는 한국어 と 中文 مرحبا Ελληνικά naïve café",
)


def _export(folder: Path, tokenizer: Path, vocab_size: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.json").write_bytes(tokenizer.read_bytes())
    ckpt = make_checkpoint(folder / "ckpt.pt", tiny_config(vocab_size=vocab_size), with_optimizer=False)
    return export_gguf(ckpt, "f32", folder / "m-{ftype}.gguf", verify=False).written[0].path


@pytest.fixture(scope="module", params=["reference", "vocab4096"])
def exported(request, tmp_path_factory) -> tuple[Path, Tokenizer]:
    """Our GGUF export and its tokenizer: the reference's own (vocab 512) and a larger one (more merges)."""
    folder = tmp_path_factory.mktemp(request.param)
    if request.param == "reference":
        require_reference()
        path = REFERENCE / "tokenizer" / "tokenizer.json"
    else:
        path = make_reference_tokenizer(folder / "tok" / "tokenizer.json", vocab_size=4096)
    tok = Tokenizer.from_file(str(path))
    return _export(folder / "out", path, tok.get_vocab_size()), tok


def _normalized(tok: Tokenizer, text: str) -> str:
    return tok.normalizer.normalize_str(text) if tok.normalizer is not None else text


def check_like_tokenizers(path: Path, tok: Tokenizer, era=era_0_5_12) -> None:
    """Every hard case: the port's ids == `tokenizers`' ids (text normalized first); names the key when not."""
    ollama = OllamaBPE.from_gguf(path, era)
    bad = []
    for text in HARD_CASES:
        ours = tok.encode(text, add_special_tokens=False).ids
        theirs = ollama.encode(_normalized(tok, text), add_special=False)
        if ours != theirs:
            bad.append(f"{text!r}: tokenizers {ours} != Ollama {theirs}")
    value = read_keys(path).get(KEY)
    assert not bad, f"Ollama's Go engine splits with {KEY}={value!r} and tokenizes differently:\n" + "\n".join(bad)


def test_pretokenizer_key_holds_the_tokenizers_split(exported):
    path, tok = exported
    check_like_tokenizers(path, tok)
    ollama = OllamaBPE.from_gguf(path, era_0_5_12)
    assert ollama.regexes != [LLAMA3_REGEX]  # the key was read, not the default
    text = HARD_CASES[0]
    assert ollama.encode(text, add_special=True) == [tok.token_to_id("<bos>"), *ollama.encode(text, add_special=False)]


def test_ollama_agrees_with_llama_cpp_on_raw_text(exported):
    """llama.cpp and Ollama both skip the NFKC normalizer: on raw text they must still agree with each other."""
    llama_cpp = pytest.importorskip("llama_cpp")
    path, tok = exported
    llm = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    ollama = OllamaBPE.from_gguf(path, era_0_5_12)
    for text in HARD_CASES:
        assert ollama.encode(text, add_special=False) == llm.tokenize(text.encode(), add_bos=False, special=True), text
    assert any(_normalized(tok, t) != t for t in HARD_CASES)  # the corpus does test NFKC-sensitive text
    assert unicodedata.normalize("NFKC", HARD_CASES[5]) != HARD_CASES[5]


@pytest.mark.parametrize("tamper", ["removed", "llama3"])
def test_tampered_pretokenizer_key_fails_naming_it(exported, tmp_path, tamper):
    path, tok = exported
    out = tmp_path / "tampered.gguf"
    reader = gguf.GGUFReader(path)
    writer = gguf.GGUFWriter(out, arch=reader.fields["general.architecture"].contents())
    new = {} if tamper == "removed" else {KEY: MetadataDetails(gguf.GGUFValueType.STRING, LLAMA3_REGEX)}
    copy_with_new_metadata(reader, writer, new, [KEY] if tamper == "removed" else [])
    assert (KEY in read_keys(out)) == (tamper != "removed")
    with pytest.raises(AssertionError, match=KEY):
        check_like_tokenizers(out, tok)


@pytest.mark.parametrize("era", [era_0_12_0, era_0_12_2], ids=["0.12.0-0.12.1", "0.12.2-0.24.x"])
def test_later_go_engine_releases_split_differently(exported, era):
    """The known limit the docs state: those releases' Go engine (OLLAMA_NEW_ENGINE=1) splits with Llama-3's regex."""
    path, tok = exported
    assert read_keys(path)["tokenizer.ggml.pre"] == "gpt-2"  # what llama.cpp needs, unknown to that switch
    with pytest.raises(AssertionError, match=KEY):
        check_like_tokenizers(path, tok, era)
