"""What every verifier feeds the engines: the same token ids for the native model and the export.

Prompts include one longer than 32 tokens: RoPE and q/k layout mistakes only show after ~20
positions. One sequence of seeded random ids reaches rows of the embedding text never uses.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from mythos_convert.data.tokenizer import special_tokens

# English texts a verifier tokenizes with the native tokenizer (content ids, plus BOS when it has one).
PROMPTS: tuple[str, ...] = (
    "The capital of France is",
    "Once upon a time, in a small village at the edge of the forest, there lived an old woman who",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
    (
        "In the beginning the model knew nothing at all. It read a great many documents, one token at a "
        "time, and after every token it guessed the next one and was told how wrong the guess had been. "
        "Slowly the guesses improved, until the model could continue a sentence it had never seen before."
    ),
)
# Texts for tokenizer agreement: ASCII, accents, CJK, emoji, code, compatibility forms NFKC rewrites.
TOKENIZER_TEXTS: tuple[str, ...] = (
    "Hello, world! This is a plain ASCII sentence.",
    "Café, naïve, façade, Ångström, São Paulo, Dvořák.",
    "東京は日本の首都です。北京是中国的首都。",
    "Emoji: 😀🚀👍🏽 and flags 🇫🇷 mixed with text.",
    "def add(a, b):\n\treturn a + b  # tabs, spaces\n\n",
    "ﬁle ｆｕｌｌ１２３ Ω ① x²",
    "   leading spaces and trailing   ",
    "",
)
GREEDY_TOKENS = 32
RANDOM_SEED = 1234
RANDOM_LENGTH = 48


def random_ids(vocab_size: int, length: int = RANDOM_LENGTH, seed: int = RANDOM_SEED) -> list[int]:
    """Seeded random token ids: exercises every row of the embedding, not just common tokens."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab_size, (length,), generator=gen).tolist()


def prompt_ids(encode: Callable[[str], list[int]], bos_id: int | None, max_len: int | None = None) -> list[list[int]]:
    """PROMPTS encoded by `encode` (content ids only), each prefixed with BOS when there is one."""
    out = []
    for text in PROMPTS:
        ids = ([bos_id] if bos_id is not None else []) + list(encode(text))
        out.append(ids[:max_len] if max_len else ids)
    return out


def sequences(tokenizer, vocab_size: int, max_len: int) -> list[list[int]]:
    """The sequences every verifier compares: PROMPTS, then the random ids, each cut to leave room
    for GREEDY_TOKENS within the model's context.

    Every sequence starts with `<bos>` when the tokenizer has one, the random one too: that is what
    both runtimes are given in use. llama.cpp prepends BOS when it tokenizes a prompt (the GGUF's
    `tokenizer.ggml.add_bos_token`, written true when there is a BOS), and transformers'
    tokenizer does (verify/hf checks that AutoTokenizer starts every prompt with it). Both engines
    then run the ids as given: `Llama.eval` and `model(input_ids)` add nothing. A sequence without
    BOS would measure the export on inputs no user feeds it.
    """
    bos = special_tokens(tokenizer).id("bos")
    seqs = prompt_ids(lambda text: tokenizer.encode(text, add_special_tokens=False).ids, bos)
    seqs.append(([bos] if bos is not None else []) + random_ids(vocab_size))
    return [s[: max_len - GREEDY_TOKENS] for s in seqs]


def longest_prompt(seqs: list[list[int]]) -> int:
    """The index of the longest prompt (the first of equals): the one whose greedy run reaches furthest."""
    return max(range(min(len(PROMPTS), len(seqs))), key=lambda i: len(seqs[i]))


def greedy_prompts(seqs: list[list[int]]) -> list[int]:
    """The prompts whose greedy continuations are compared: the first one and the longest one."""
    return list(dict.fromkeys([0, longest_prompt(seqs)]))
