"""The Mythos tokenizer: find it, load it, and read its special tokens from its own vocabulary.

Special-token strings and ids are never hard-coded: they are read from the tokenizer's added
tokens (the reference hard-coded `<s>`/`</s>` and pad id 0, which disagree with its tokenizer).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tokenizers import Tokenizer

from mythos_convert.errors import MythosError

if TYPE_CHECKING:
    from mythos_convert.train.checkpoint import NativeCheckpoint

# The reference's special tokens, in id order. Used to *train* a tokenizer, never to read one.
SPECIAL_TOKENS = ("<unk>", "<bos>", "<eos>", "<pad>", "<sep>")

# How a special token's role is recognised when reading a tokenizer (first match wins).
_ROLE_SPELLINGS = {
    "bos": ("<bos>", "<s>", "<|begin_of_text|>", "<|startoftext|>", "[BOS]"),
    "eos": ("<eos>", "</s>", "<|end_of_text|>", "<|endoftext|>", "[EOS]"),
    "unk": ("<unk>", "[UNK]", "<|unk|>"),
    "pad": ("<pad>", "[PAD]", "<|pad|>"),
    "sep": ("<sep>", "[SEP]", "<|sep|>"),
}


@dataclass(frozen=True)
class SpecialTokens:
    """Role -> (token string, id) for the roles this tokenizer really has."""

    bos: tuple[str, int] | None = None
    eos: tuple[str, int] | None = None
    unk: tuple[str, int] | None = None
    pad: tuple[str, int] | None = None
    sep: tuple[str, int] | None = None

    def id(self, role: str) -> int | None:
        entry = getattr(self, role)
        return entry[1] if entry else None

    def token(self, role: str) -> str | None:
        entry = getattr(self, role)
        return entry[0] if entry else None

    def as_dict(self) -> dict[str, tuple[str, int]]:
        return {role: getattr(self, role) for role in _ROLE_SPELLINGS if getattr(self, role)}


def special_tokens(tokenizer: Tokenizer) -> SpecialTokens:
    """Read the special tokens a tokenizer really has, from its added vocabulary."""
    added = {t.content: i for i, t in tokenizer.get_added_tokens_decoder().items() if t.special}
    roles = {}
    for role, spellings in _ROLE_SPELLINGS.items():
        for spelling in spellings:
            if spelling in added:
                roles[role] = (spelling, added[spelling])
                break
    return SpecialTokens(**roles)


def load_tokenizer(source: str | Path) -> Tokenizer:
    """Load a `tokenizer.json` file (or a folder holding one)."""
    path = Path(source)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise MythosError(f"tokenizer {path} does not exist: pass --tokenizer with a tokenizer.json file")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception on bad JSON
        raise MythosError(f"tokenizer {path} is not a valid tokenizers JSON file: {str(exc)[:120]}") from exc


def tokenizer_from_json(text: str) -> Tokenizer:
    try:
        return Tokenizer.from_str(text)
    except Exception as exc:
        raise MythosError(f"the tokenizer stored in the checkpoint is not valid: {str(exc)[:120]}") from exc


def resolve_tokenizer(ckpt: NativeCheckpoint, explicit: str | Path | None = None) -> tuple[Tokenizer, str]:
    """Find the checkpoint's tokenizer: `explicit`, else `tokenizer.json` beside it, else its embedded copy.

    Returns the tokenizer and a short description of where it came from.
    """
    if explicit is not None:
        return load_tokenizer(explicit), str(explicit)
    if ckpt.path is not None:
        beside = ckpt.path.parent / "tokenizer.json"
        if beside.is_file():
            return load_tokenizer(beside), str(beside)
    if ckpt.tokenizer_json:
        return tokenizer_from_json(ckpt.tokenizer_json), "embedded in the checkpoint"
    where = ckpt.path.parent if ckpt.path is not None else "the checkpoint's folder"
    raise MythosError(f"no tokenizer found: pass --tokenizer PATH/tokenizer.json, or put tokenizer.json in {where}")


def tokenizer_json_text(tokenizer: Tokenizer) -> str:
    """Canonical JSON text of a tokenizer (what we embed in checkpoints and export)."""
    return json.dumps(json.loads(tokenizer.to_str()), ensure_ascii=False, indent=2)
