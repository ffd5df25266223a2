"""Text generation with the native model: prefill the prompt into a preallocated KV cache, then one
token at a time. Greedy, temperature, top-k and top-p sampling; a seeded `torch.Generator` makes
sampling reproducible; generation stops at the tokenizer's `<eos>` (its id read from the tokenizer).

Streaming: `stream_ids` yields token ids as they are chosen and `stream_text` turns them into text
pieces, holding back bytes of a character that a ByteLevel token split in two, so that the pieces
concatenated equal the decode of all ids.

Typical use::

    model = load_model(load_checkpoint("ckpt.pt"))
    tokenizer, _ = resolve_tokenizer(ckpt)
    ids = prompt_ids(tokenizer, "Once upon a time")
    for piece in stream_text(tokenizer, stream_ids(model, ids, max_new_tokens=64, eos_id=...)):
        print(piece, end="", flush=True)
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch

from mythos_convert.data.tokenizer import special_tokens
from mythos_convert.errors import MythosError
from mythos_convert.model.model import Mythos


@dataclass(frozen=True)
class Sampling:
    """How the next token is chosen. `temperature == 0` (or `top_k == 1`) is greedy decoding.

    top_k: keep the k most likely tokens (None or 0: all). top_p: keep the smallest set of most
    likely tokens whose probability reaches p (None or 1.0: all). Both filter before sampling.
    """

    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.temperature) and self.temperature >= 0):  # NaN passes `< 0`
            raise MythosError(
                f"--temperature must be a finite number >= 0 (0 is greedy), got {self.temperature}: "
                "pass e.g. --temperature 0.8"
            )
        if self.top_k is not None and self.top_k < 0:
            raise MythosError(f"--top-k must be >= 0 (0 keeps every token), got {self.top_k}: pass e.g. --top-k 50")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise MythosError(f"--top-p must be in (0, 1], got {self.top_p}: pass e.g. --top-p 0.9")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0 or self.top_k == 1


GREEDY = Sampling()


def next_token(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator | None = None) -> torch.Tensor:
    """Choose one token per row of `logits` [B, V]; returns ids [B]."""
    if sampling.greedy:
        return logits.argmax(dim=-1)
    logits = logits.float() / sampling.temperature
    if sampling.top_k and sampling.top_k < logits.shape[-1]:
        kth = torch.topk(logits, sampling.top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if sampling.top_p is not None and sampling.top_p < 1.0:
        logits = _top_p_filter(logits, sampling.top_p)
    probs = torch.softmax(logits, dim=-1)
    if not bool(torch.isfinite(probs).all()):  # multinomial would fail with a bare RuntimeError
        raise MythosError(
            "the model's logits are NaN or Inf, so there is nothing to sample from: the checkpoint's weights "
            "are damaged (or overflow in this dtype); try --dtype float32 or a healthy checkpoint"
        )
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def _top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the most likely tokens until their cumulative probability reaches top_p (always >= 1)."""
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    drop_sorted = probs.cumsum(dim=-1) - probs >= top_p  # the mass before this token already reaches p
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def context_budget(limit: int, n_prompt: int, max_new_tokens: int) -> int:
    """How many new tokens fit after the prompt in a `limit`-token context; raises if none do."""
    if n_prompt == 0:
        raise MythosError("the prompt is empty and the tokenizer has no <bos>: give a prompt of at least one token")
    if n_prompt >= limit:
        raise MythosError(f"the prompt is {n_prompt} tokens but the model's context is {limit}: shorten the prompt")
    if max_new_tokens < 0:
        raise MythosError(f"--max-new-tokens must be >= 0, got {max_new_tokens}: pass e.g. --max-new-tokens 128")
    return min(max_new_tokens, limit - n_prompt)


@torch.inference_mode()
def stream_ids(
    model: Mythos,
    prompt: Sequence[int],
    *,
    max_new_tokens: int,
    sampling: Sampling = GREEDY,
    eos_id: int | None = None,
    seed: int | None = None,
    prefill_chunk: int | None = None,
    compiled: bool = True,
) -> Iterator[int]:
    """Yield new token ids one at a time (batch 1), stopping after `eos_id` or `max_new_tokens`.

    Args:
        prompt: token ids, `<bos>` included if the model wants it.
        max_new_tokens: upper bound; clipped to what the context leaves (see `context_budget`).
        eos_id: the end-of-text id (from `special_tokens(tokenizer).id("eos")`); it is yielded, then
            generation stops. None never stops early.
        seed: seeds a private `torch.Generator`, so sampling is reproducible and leaves the global
            RNG alone.
        prefill_chunk: feed the prompt in chunks of this many tokens (bounded memory for long prompts).
        compiled: False decodes with torch's operations even where the AVX2 kernels run (model/kernels).
    """
    budget = context_budget(model.config.max_seq_len, len(prompt), max_new_tokens)
    check_seed(seed)
    if budget == 0:
        return
    generator = None
    if not sampling.greedy:
        generator = torch.Generator(device=model.embedding.weight.device)
        if seed is None:
            generator.seed()  # fresh entropy; the global RNG is left alone
        else:
            generator.manual_seed(seed)
    device = model.embedding.weight.device
    tokens = torch.tensor([list(prompt)], dtype=torch.long, device=device)
    was_training = model.training
    model.eval()  # no dropout while generating
    model.setup_cache(1, len(prompt) + budget, compiled=compiled)
    try:
        logits = _prefill(model, tokens, prefill_chunk or len(prompt))
        pos = len(prompt)
        for step in range(budget):
            token = next_token(logits, sampling, generator)
            token_id = int(token)
            yield token_id
            if token_id == eos_id or step == budget - 1:
                return
            logits = model(token.view(1, 1), start=pos)[:, -1]
            pos += 1
    finally:
        model.clear_cache()
        model.train(was_training)


# torch.Generator.manual_seed takes any integer from -2**63 to 2**64 - 1
SEED_RANGE = (-(1 << 63), (1 << 64) - 1)


def check_seed(seed: int | None) -> None:
    """Refuse a seed torch cannot take (it would fail mid-generation with a bare RuntimeError)."""
    if seed is not None and not SEED_RANGE[0] <= seed <= SEED_RANGE[1]:
        raise MythosError(f"--seed {seed} does not fit in 64 bits: pass a seed from 0 to {SEED_RANGE[1]}")


def first_nonfinite(model: Mythos) -> str | None:
    """The name of the first parameter holding NaN or Inf, or None (sampling from it would fail)."""
    for name, param in model.named_parameters():
        if not bool(torch.isfinite(param).all()):
            return name
    return None


def _prefill(model: Mythos, tokens: torch.Tensor, chunk: int) -> torch.Tensor:
    """Run the prompt through the model in chunks on top of the cache; logits [1, V] of the last token."""
    logits = None
    for begin in range(0, tokens.shape[1], chunk):
        logits = model(tokens[:, begin : begin + chunk], start=begin, last_only=True)
    return logits[:, -1]


def generate_ids(model: Mythos, prompt: Sequence[int], **kwargs) -> list[int]:
    """All new token ids at once (same arguments as `stream_ids`)."""
    return list(stream_ids(model, prompt, **kwargs))


def recompute_greedy(model: Mythos, prompt: Sequence[int], max_new_tokens: int) -> list[int]:
    """Greedy generation without any cache: the whole sequence is recomputed for every token.

    Slow (quadratic); it exists as the ground truth that cached generation must match.
    """
    ids = list(prompt)
    budget = context_budget(model.config.max_seq_len, len(ids), max_new_tokens)
    model.clear_cache()
    with torch.inference_mode():
        for _ in range(budget):
            logits = model(torch.tensor([ids], device=model.embedding.weight.device))
            ids.append(int(logits[0, -1].argmax()))
    return ids[len(prompt) :]


class TextStream:
    """Incremental detokenizer: feed ids, get the text they add, never half a character.

    Decodes a short window of recent ids and emits only the new suffix; while the window ends in
    U+FFFD (a multi-byte character split across ByteLevel tokens) it waits for more ids. `finish()`
    emits whatever is held back. The pieces concatenated equal `tokenizer.decode(all_ids)`.
    """

    def __init__(self, tokenizer, *, skip_special_tokens: bool = True):
        self.tokenizer = tokenizer
        self.skip = skip_special_tokens
        self.ids: list[int] = []
        self.prefix = 0  # window start: text before it has been emitted and is complete
        self.read = 0  # ids up to here have been emitted

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip) if ids else ""

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        done = self._decode(self.ids[self.prefix : self.read])
        text = self._decode(self.ids[self.prefix :])
        if text.endswith("\ufffd") or len(text) <= len(done):
            return ""
        self.prefix, self.read = self.read, len(self.ids)
        return text[len(done) :]

    def finish(self) -> str:
        done = self._decode(self.ids[self.prefix : self.read])
        text = self._decode(self.ids[self.prefix :])
        self.prefix = self.read = len(self.ids)
        return text[len(done) :]


def stream_text(tokenizer, ids: Iterable[int], *, skip_special_tokens: bool = True) -> Iterator[str]:
    """Turn a stream of token ids into text pieces (see `TextStream`)."""
    decoder = TextStream(tokenizer, skip_special_tokens=skip_special_tokens)
    for token_id in ids:
        piece = decoder.push(token_id)
        if piece:
            yield piece
    tail = decoder.finish()
    if tail:
        yield tail


def prompt_ids(tokenizer, text: str) -> list[int]:
    """`<bos>` + the prompt's content ids, never `<eos>`, whatever the tokenizer's post-processor adds.

    The tokenizer's own normalizer runs if it has one; if it has none, the text is NFKC-normalised
    here, as the data pipeline normalised the training text.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:  # bytes the shell passed through as surrogates
        raise MythosError(
            f"the prompt is not valid UTF-8 (a byte that is no character at position {exc.start}): "
            "pass the prompt as UTF-8 text (check the terminal's or file's encoding)"
        ) from exc
    if tokenizer.normalizer is None:
        text = unicodedata.normalize("NFKC", text)
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    bos = special_tokens(tokenizer).id("bos")
    return ([bos] if bos is not None else []) + ids


def eos_id(tokenizer) -> int | None:
    """The tokenizer's end-of-text id (None if it has none: generation then runs to max_new_tokens)."""
    return special_tokens(tokenizer).id("eos")
