"""The tokenizer checks of an HF folder: AutoTokenizer against the native tokenizer, and what its
tokenizer.json changed (token ids, merges, added tokens), named entry by entry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mythos_convert.data.tokenizer import TOKENIZER_FILE, special_tokens
from mythos_convert.engines.hf import quiet_transformers
from mythos_convert.verify.inputs import PROMPTS, TOKENIZER_TEXTS


def tokenizer_checks(folder: Path, tok) -> tuple[float, list[str]]:
    """Content ids of the native tokenizer vs AutoTokenizer; BOS first and no EOS last on prompts."""
    from transformers import AutoTokenizer

    with quiet_transformers():
        auto = AutoTokenizer.from_pretrained(folder)
        auto.model_max_length = 1 << 30  # texts longer than the context are fine for comparing ids
    specials = special_tokens(tok)
    texts = [*TOKENIZER_TEXTS, *PROMPTS]
    same = sum(
        tok.encode(t, add_special_tokens=False).ids == auto(t, add_special_tokens=False)["input_ids"] for t in texts
    )
    problems = []
    for text in PROMPTS:
        ids = auto(text)["input_ids"]
        if specials.bos is not None and ids[0] != specials.id("bos"):
            problems.append(f"AutoTokenizer does not start a prompt with {specials.token('bos')}")
            break
        if specials.eos is not None and ids[-1] == specials.id("eos"):
            problems.append(f"AutoTokenizer ends a prompt with {specials.token('eos')}: generate would stop early")
            break
    agreement = same / len(texts)
    if agreement < 1.0:
        problems.append(f"tokenizers disagree on {len(texts) - same} of {len(texts)} texts")
    if (folder / TOKENIZER_FILE).is_file():
        problems += _vocab_differences(folder / TOKENIZER_FILE, tok)
    return agreement, problems


def _bpe_model(data: dict[str, Any]) -> tuple[dict[str, int], list[str], dict[str, int]]:
    """(vocab, merges as "a b", added tokens) of a tokenizer.json's parsed content."""
    model = data.get("model") or {}
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    added = {t["content"]: t["id"] for t in data.get("added_tokens") or [] if isinstance(t, dict) and "content" in t}
    return dict(model.get("vocab") or {}), merges, added


def _vocab_differences(path: Path, tok) -> list[str]:
    """Name what the folder's tokenizer.json changed: token ids, merges, added tokens (at most a few each).

    Text comparisons show that the tokenizers differ; these say which entry, so a swapped id or a
    lost merge is found without reading two 20 000-line files side by side.
    """
    try:
        theirs = _bpe_model(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError, AttributeError):
        return []  # unreadable: load_tokenizer above has refused it already
    ours = _bpe_model(json.loads(tok.to_str()))
    problems = []
    for what, a, b in (("vocabulary", ours[0], theirs[0]), ("added tokens", ours[2], theirs[2])):
        changed = [t for t in a if t in b and a[t] != b[t]]
        if changed:
            shown = ", ".join(f"{t!r} is id {b[t]} there, {a[t]} in the native tokenizer" for t in changed[:3])
            problems.append(f"tokenizer.json's {what} differs in {len(changed)} id(s): {shown}")
        missing = [t for t in a if t not in b]
        if missing:
            problems.append(
                f"tokenizer.json's {what} lacks {len(missing)} token(s) of the native one, e.g. {missing[0]!r}"
            )
    if ours[1] != theirs[1]:
        lost = [m for m in ours[1] if m not in set(theirs[1])]
        extra = [m for m in theirs[1] if m not in set(ours[1])]
        if lost:
            problems.append(f"tokenizer.json lacks {len(lost)} merge(s) of the native tokenizer, e.g. {lost[0]!r}")
        if extra:
            problems.append(f"tokenizer.json has {len(extra)} merge(s) the native tokenizer lacks, e.g. {extra[0]!r}")
        if not lost and not extra:
            problems.append("tokenizer.json's merges are in a different order (merge priority) than the native ones")
    return problems
