"""The GGUF tokenizer section: a `tokenizers` byte-level BPE as llama.cpp's `gpt2` vocabulary.

llama.cpp's own converter identifies the pre-tokenizer by hashing the encoding of a test string
against a list of known vocabularies, so it refuses every newly trained tokenizer. Here the
`tokenizer.ggml.pre` name is read from the tokenizer's own pre-tokenizer instead. llama.cpp runs
no normalizer, so a tokenizer that normalizes (the reference's NFKC) gets a warning naming the
texts that will tokenize differently there.

The split regex itself is also written, as `tokenizer.ggml.pretokenizer`: Ollama 0.5.12 to 0.11.x,
when run with OLLAMA_NEW_ENGINE=1, tokenize Llama GGUFs in their own Go engine, which reads the
regex from that key and falls back to Llama-3's (wrong for GPT-2's ByteLevel split) when it is
absent. llama.cpp ignores the key. docs/troubleshooting.md lists which Ollama releases read what.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import gguf
from tokenizers import Tokenizer

from mythos_convert.data.tokenizer import special_tokens
from mythos_convert.errors import MythosError

# The GPT-2 regex `tokenizers` uses for ByteLevel(use_regex=True); llama.cpp's "gpt-2" runs it.
GPT2_PRE = "gpt-2"
# The regex `tokenizers` splits with for ByteLevel(use_regex=True): GPT-2's.
GPT2_SPLIT_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
# The key Ollama's Go engine (0.5.12 to 0.11.x) reads its split regex from; not in gguf-py's Keys.
PRETOKENIZER_REGEX_KEY = "tokenizer.ggml.pretokenizer"
# Split regexes of known pre-tokenizers (as tokenizer.json spells them) -> llama.cpp's name.
KNOWN_SPLIT_REGEXES = {
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
    "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+": "llama-bpe",
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
    "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+": "qwen2",
}
# Texts that a normalizer changes and llama.cpp (which runs none) therefore tokenizes differently.
NORMALIZER_PROBES = (
    "ﬁle",  # ligature: NFKC -> 'file'
    "ｆｕｌｌ１２３",  # full-width letters and digits
    "x\u00a0y",  # no-break space
    "\u2126 \u212b",  # ohm and angstrom signs: canonical equivalents of Ω and Å
    "e\u0301",  # decomposed accent: NFC/NFKC compose it
    "Hello",  # changes only under a lowercasing normalizer
)
# role -> GGUF key. No separator key (`seperator_token_id`): llama-cpp-python's completion appends
# the separator to every text prompt of a model that declares one (its BERT-style `<cls> text <sep>`
# rule), so its server would run the prompt "The cat" as "<bos>The cat<sep>" (tests/test_serve_llama_cpp.py).
# A decoder-only model never needs llama.cpp to know it; `<sep>` stays a CONTROL token in the vocab.
ROLE_KEYS = {
    "bos": gguf.Keys.Tokenizer.BOS_ID,
    "eos": gguf.Keys.Tokenizer.EOS_ID,
    "unk": gguf.Keys.Tokenizer.UNK_ID,
    "pad": gguf.Keys.Tokenizer.PAD_ID,
}


@dataclass
class GGUFVocab:
    """Everything the tokenizer section of a GGUF file holds."""

    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    special_ids: dict[str, int]  # role -> id, only the roles the tokenizer has
    pre: str
    split_regex: str  # the regex the tokenizer splits text with (for Ollama's Go engine)
    add_bos: bool
    add_eos: bool = False
    normalizer: str | None = None  # the normalizer llama.cpp cannot run, if any
    changed_texts: list[str] = field(default_factory=list)  # probes that tokenize differently there

    def add_to(self, writer: gguf.GGUFWriter) -> None:
        """Write the tokenizer keys (add_bos/add_eos explicitly: llama.cpp's gpt2 default is no BOS)."""
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(self.pre)
        writer.add_string(PRETOKENIZER_REGEX_KEY, self.split_regex)
        writer.add_token_list(self.tokens)
        writer.add_token_types(self.token_types)
        writer.add_token_merges(self.merges)
        for role, token_id in self.special_ids.items():
            writer.add_uint32(ROLE_KEYS[role], token_id)
        writer.add_add_bos_token(self.add_bos)
        writer.add_add_eos_token(self.add_eos)

    def normalizer_warning(self) -> str | None:
        """One line for the user when llama.cpp will tokenize some text differently, else None."""
        if self.normalizer is None:
            return None
        shown = ", ".join(repr(t) for t in self.changed_texts) or "none of the usual probes"
        return (
            f"the tokenizer has a {self.normalizer} normalizer, which llama.cpp does not run: text it changes "
            f"tokenizes differently there (e.g. {shown}); normalize prompts yourself "
            f"(unicodedata.normalize('NFKC', text)) before passing them to llama.cpp or Ollama"
        )


def tokenizer_spec(tokenizer: Tokenizer) -> dict:
    """The tokenizer.json document of a loaded tokenizer."""
    return json.loads(tokenizer.to_str())


def _describe(component: dict | None) -> str:
    if not component:
        return "none"
    if component.get("type") == "Sequence":
        parts = component.get("pretokenizers") or component.get("normalizers") or []
        return "Sequence[" + ", ".join(_describe(p) for p in parts) + "]"
    return str(component.get("type"))


def pre_tokenizer_name(spec: dict) -> str:
    """llama.cpp's `tokenizer.ggml.pre` for a tokenizer.json, read from its pre-tokenizer.

    Raises:
        MythosError: a pre-tokenizer llama.cpp has no equivalent for (named in the message).
    """
    return _pre_tokenizer(spec)[0]


def _pre_tokenizer(spec: dict) -> tuple[str, str]:
    """(llama.cpp's pre-tokenizer name, the split regex) of a supported pre-tokenizer."""
    pre = spec.get("pre_tokenizer") or {}
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
        return GPT2_PRE, GPT2_SPLIT_REGEX
    if pre.get("type") == "Sequence":
        parts = pre.get("pretokenizers", [])
        if (
            len(parts) == 2
            and parts[0].get("type") == "Split"
            and parts[1].get("type") == "ByteLevel"
            and not parts[1].get("use_regex", True)
        ):
            regex = (parts[0].get("pattern") or {}).get("Regex")
            if regex in KNOWN_SPLIT_REGEXES:
                return KNOWN_SPLIT_REGEXES[regex], regex
    raise MythosError(
        f"the tokenizer's pre-tokenizer ({_describe(pre)}) has no llama.cpp equivalent: GGUF export supports "
        "ByteLevel (GPT-2 regex) and the llama-3 / qwen2 Split+ByteLevel pre-tokenizers; retrain the tokenizer "
        "with `mythos-convert tokenizer train`"
    )


def _check_model(spec: dict) -> None:
    model = spec.get("model") or {}
    if model.get("type") != "BPE":
        raise MythosError(
            f"tokenizer model {model.get('type')!r} is not supported for GGUF: only byte-level BPE "
            "(tokenizers' BPE with a ByteLevel pre-tokenizer) maps to llama.cpp's gpt2 vocabulary; retrain the "
            "tokenizer with `mythos-convert tokenizer train`"
        )
    decoder = spec.get("decoder") or {}
    if decoder.get("type") != "ByteLevel":
        raise MythosError(
            f"tokenizer decoder {_describe(decoder)} is not ByteLevel: llama.cpp's gpt2 vocabulary decodes "
            "byte-level tokens only; use a ByteLevel BPE tokenizer"
        )


def _merges(spec: dict) -> list[str]:
    """Merges as "a b" strings (newer tokenizers store [a, b] pairs)."""
    return [m if isinstance(m, str) else " ".join(m) for m in spec["model"].get("merges", [])]


def _changed_texts(tokenizer: Tokenizer) -> list[str]:
    normalizer = tokenizer.normalizer
    if normalizer is None:
        return []
    return [t for t in NORMALIZER_PROBES if normalizer.normalize_str(t) != t]


def build_vocab(tokenizer: Tokenizer, vocab_size: int) -> GGUFVocab:
    """The GGUF vocabulary of `tokenizer`, padded to the embedding's `vocab_size` rows.

    Ids the tokenizer does not use become `[PAD{i}]` of type UNUSED, special tokens CONTROL,
    other added tokens USER_DEFINED, everything else NORMAL.

    Raises:
        MythosError: not a byte-level BPE, an unknown pre-tokenizer, or more tokens than rows.
    """
    spec = tokenizer_spec(tokenizer)
    _check_model(spec)
    pre, regex = _pre_tokenizer(spec)
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    largest = max(vocab.values()) + 1
    if largest > vocab_size:
        raise MythosError(
            f"the tokenizer has ids up to {largest - 1} but the model's embedding has {vocab_size} rows: "
            "pass the tokenizer the model was trained with"
        )
    tokens = [f"[PAD{i}]" for i in range(vocab_size)]
    types = [int(gguf.TokenType.UNUSED)] * vocab_size
    for token, token_id in vocab.items():
        tokens[token_id], types[token_id] = token, int(gguf.TokenType.NORMAL)
    for token_id, added in tokenizer.get_added_tokens_decoder().items():
        types[token_id] = int(gguf.TokenType.CONTROL if added.special else gguf.TokenType.USER_DEFINED)
    roles = special_tokens(tokenizer)
    special_ids = {role: roles.id(role) for role in ROLE_KEYS if roles.id(role) is not None}
    normalizer = spec.get("normalizer")
    return GGUFVocab(
        tokens=tokens,
        token_types=types,
        merges=_merges(spec),
        special_ids=special_ids,  # type: ignore[arg-type]
        pre=pre,
        split_regex=regex,
        add_bos="bos" in special_ids,
        add_eos=False,
        normalizer=_describe(normalizer) if normalizer else None,
        changed_texts=_changed_texts(tokenizer),
    )
