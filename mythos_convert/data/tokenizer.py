"""The Mythos tokenizer: find it, load it, and read its special tokens from its own vocabulary.

Special-token strings and ids are never hard-coded: they are read from the tokenizer's added
tokens (the reference hard-coded `<s>`/`</s>` and pad id 0, which disagree with its tokenizer).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from mythos_convert.errors import MythosError
from mythos_convert.support.safe_paths import require_file

TOKENIZER_FILE = "tokenizer.json"  # its file name, in an HF folder, a run folder or beside a checkpoint


class TokenizerHolder(Protocol):
    """What `resolve_tokenizer` reads of a checkpoint: where it lies and the tokenizer it embeds."""

    path: Path | None
    tokenizer_json: str | None


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


TOKENIZER_FIX = "pass the tokenizer.json the model was trained with"


def load_tokenizer(source: str | Path, fix: str = TOKENIZER_FIX) -> Tokenizer:
    """Load a `tokenizer.json` file (or a folder holding one) that can encode text; `fix` ends the error."""
    path = Path(source)
    if path.is_dir():
        path = path / TOKENIZER_FILE
    require_file(path, "tokenizer", "pass --tokenizer with a tokenizer.json file")
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception on bad JSON
        raise MythosError(f"tokenizer {path} is not a valid tokenizers JSON file ({str(exc)[:120]}): {fix}") from exc
    return _check_encodes(tokenizer, f"tokenizer {path}", fix)


def tokenizer_from_json(text: str) -> Tokenizer:
    try:
        tokenizer = Tokenizer.from_str(text)
    except Exception as exc:
        raise MythosError(
            f"the tokenizer stored in the checkpoint is not valid ({str(exc)[:120]}): "
            "pass --tokenizer with the model's tokenizer.json"
        ) from exc
    return _check_encodes(tokenizer, "the tokenizer stored in the checkpoint", "pass --tokenizer with the model's one")


def _check_encodes(tokenizer: Tokenizer, what: str, fix: str) -> Tokenizer:
    """A tokenizer file can parse yet fail on every text (e.g. its `<unk>` missing from the vocab),
    or give one id to two tokens (which of them an id decodes to, or a GGUF vocabulary holds, then
    changes from run to run): find out here, once, for every reader of a tokenizer."""
    try:
        tokenizer.encode("Hello, world! 123")
    except Exception as exc:
        raise MythosError(f"{what} cannot encode text ({str(exc)[:120]}): {fix}") from exc
    owner: dict[int, str] = {}
    for token, token_id in sorted(tokenizer.get_vocab(with_added_tokens=True).items()):
        if token_id in owner:
            raise MythosError(
                f"{what} gives id {token_id} to two tokens, {owner[token_id]!r} and {token!r}: each id must "
                f"name one token; {fix}"
            )
        owner[token_id] = token
    return tokenizer


def resolve_tokenizer(ckpt: TokenizerHolder, explicit: str | Path | None = None) -> tuple[Tokenizer, str]:
    """Find the checkpoint's tokenizer: `explicit`, else `tokenizer.json` beside it, else its embedded copy.

    Returns the tokenizer and a short description of where it came from.
    """
    if explicit is not None:
        return load_tokenizer(explicit), str(explicit)
    if ckpt.path is not None:
        beside = ckpt.path.parent / TOKENIZER_FILE
        if beside.is_file():
            return load_tokenizer(beside), str(beside)
    if ckpt.tokenizer_json:
        return tokenizer_from_json(ckpt.tokenizer_json), "embedded in the checkpoint"
    where = ckpt.path.parent if ckpt.path is not None else "the checkpoint's folder"
    raise MythosError(f"no tokenizer found: pass --tokenizer PATH/tokenizer.json, or put tokenizer.json in {where}")


def tokenizer_json_text(tokenizer: Tokenizer) -> str:
    """Canonical JSON text of a tokenizer (what we embed in checkpoints and export)."""
    return json.dumps(json.loads(tokenizer.to_str()), ensure_ascii=False, indent=2)


NORMALIZERS = ("none", "nfkc")


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int,
    normalizer: str = "none",
    *,
    show_progress: bool = False,
) -> Tokenizer:
    """Train the reference's ByteLevel BPE: specials `<unk> <bos> <eos> <pad> <sep>` = ids 0..4.

    One deliberate change from the reference: no normalizer by default, because the data
    pipeline already applies NFKC and llama.cpp cannot run a normalizer (`normalizer="nfkc"`
    keeps the reference's choice). The post-processor adds `<bos>` only, which is right for
    prompts; the data pipeline puts `<eos>` between documents itself.

    Args:
        texts: training documents (already cleaned by the data pipeline).
        vocab_size: target size including the specials and the 256 byte symbols; a small corpus
            may give fewer merges, hence a smaller vocabulary (never a larger one).
        normalizer: "none" or "nfkc".

    Raises:
        MythosError: unknown normalizer, vocab_size too small for the byte alphabet.
    """
    if normalizer not in NORMALIZERS:
        raise MythosError(f"unknown normalizer {normalizer!r}: use one of {', '.join(NORMALIZERS)}")
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < len(alphabet) + len(SPECIAL_TOKENS):
        raise MythosError(
            f"vocab_size {vocab_size} is too small: a ByteLevel BPE needs at least "
            f"{len(alphabet) + len(SPECIAL_TOKENS)} (256 bytes + {len(SPECIAL_TOKENS)} specials); "
            f"pass --vocab-size {len(alphabet) + len(SPECIAL_TOKENS)} or more"
        )
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    if normalizer == "nfkc":
        tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=alphabet,
        show_progress=show_progress,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    roles = special_tokens(tok)
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A",
        pair="<bos> $A <sep> $B:1",
        special_tokens=[("<bos>", roles.id("bos")), ("<sep>", roles.id("sep"))],
    )
    return tok


CONVERT_FIX = "pass the tokenizer the model was trained with (--tokenizer)"
TRAIN_FIX = "train a tokenizer with at most that many tokens or use a preset with a larger vocab"


def check_vocab_fits(
    tokenizer: Tokenizer, model_vocab: int, where: str = "the tokenizer", fix: str = CONVERT_FIX
) -> int:
    """A tokenizer may be smaller than the model's embedding, never larger (its ids would index past
    it); returns its size. `fix` ends the message: converting and training need different advice."""
    size = tokenizer.get_vocab_size(with_added_tokens=True)
    if size > model_vocab:
        raise MythosError(
            f"{where} has {size} tokens but the model's vocab_size is {model_vocab} "
            f"(its embedding has {model_vocab} rows): {fix}"
        )
    return size


def save_tokenizer(tokenizer: Tokenizer, path: str | Path, *, force: bool = True) -> Path:
    """Write tokenizer.json atomically (`force=False`: refuse an existing file, also at rename time)."""
    from mythos_convert.support.atomic import atomic_file

    with atomic_file(path, force=force) as tmp:
        tmp.write_text(tokenizer_json_text(tokenizer), encoding="utf-8")
    return Path(path)
