"""Continue a prompt with the native model: what `mythos-convert generate` does, as a library call.

The model comes from any source `open_source` opens (a native checkpoint, an HF folder, a GGUF file
dequantised), run by the native engine.

Every input is checked before anything is printed or the model is built (sampling settings, seed,
the prompt's fit in the context, the tokenizer against the embedding, non-finite weights), so a
caller streaming the text to a terminal never prints half an answer before an error.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mythos_convert.data.tokenizer import check_vocab_fits
from mythos_convert.errors import MythosError
from mythos_convert.formats.checkpoint import load_model
from mythos_convert.model.generate import (
    Sampling,
    check_seed,
    context_budget,
    eos_id,
    first_nonfinite,
    prompt_ids,
    stream_ids,
    stream_text,
)
from mythos_convert.model.kernels import describe
from mythos_convert.source import open_source

DTYPES = ("float32", "bfloat16")


@dataclass
class TextGeneration:
    """A prepared generation: `pieces()` streams the new text; the counters fill as it runs."""

    model: torch.nn.Module
    tokenizer: object
    ids: list[int]
    max_new_tokens: int
    sampling: Sampling
    seed: int | None
    dtype: str
    tokenizer_source: str
    budget: int
    context: int
    new_tokens: int = 0
    seconds: float = 0.0
    _started: float = field(default=0.0, repr=False)

    def pieces(self) -> Iterator[str]:
        """The continuation, piece by piece (whole characters), as the model produces it."""
        self._started = time.perf_counter()
        new_ids = stream_ids(
            self.model,
            self.ids,
            max_new_tokens=self.max_new_tokens,
            sampling=self.sampling,
            eos_id=eos_id(self.tokenizer),
            seed=self.seed,
        )
        yield from stream_text(self.tokenizer, self._counted(new_ids))
        self.seconds = time.perf_counter() - self._started

    def _counted(self, stream: Iterator[int]) -> Iterator[int]:
        for token_id in stream:
            self.new_tokens += 1
            yield token_id

    @property
    def engine(self) -> str:
        """Which decode operations ran (the compiled kernels or torch's)."""
        return describe(getattr(torch, self.dtype))

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / max(self.seconds, 1e-9)

    @property
    def budget_warning(self) -> str | None:
        """Why fewer tokens than asked can come (the context is full), or None."""
        if self.budget >= self.max_new_tokens:
            return None
        return f"only {self.budget} new tokens fit in the {self.context}-token context after the prompt"

    @property
    def header(self) -> str:
        """What runs, before the text: the tokenizer's source, the prompt's length, the context."""
        return f"tokenizer: {self.tokenizer_source}; prompt: {len(self.ids)} tokens; context: {self.context}"

    def summary(self) -> str:
        """After `pieces()`: how many tokens, how fast, on which dtype and decode operations."""
        speed = f"{self.tokens_per_second:.1f} tokens/s, {self.dtype}, {self.engine}"
        return f"{self.new_tokens} tokens in {self.seconds:.2f} s ({speed})"


def prepare_generation(
    model_path: str | Path,
    prompt: str,
    *,
    tokenizer: str | Path | None = None,
    config_yaml: str | Path | None = None,
    max_new_tokens: int = 128,
    sampling: Sampling | None = None,
    seed: int | None = None,
    dtype: str = "float32",
) -> TextGeneration:
    """Check everything, load the model of `model_path` (ckpt.pt, HF folder or GGUF file), and
    return the generation ready to stream.

    Raises:
        MythosError: a bad dtype, seed, sampling setting, checkpoint, tokenizer or prompt, or
            weights holding NaN/Inf (sampling would fail on them, greedy decoding return noise).
    """
    if dtype not in DTYPES:
        raise MythosError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}: pass --dtype float32")
    sampling = sampling or Sampling()
    check_seed(seed)  # all sampling input is checked before the model loads
    source = open_source(model_path, config_yaml=config_yaml)
    tok, tok_source = source.tokenizer(tokenizer)
    check_vocab_fits(tok, source.config.vocab_size)  # larger ids would index past the embedding
    ids = prompt_ids(tok, prompt)
    limit = source.config.max_seq_len
    budget = context_budget(limit, len(ids), max_new_tokens)  # before any output: a bad prompt fails cleanly
    model = load_model(source.as_checkpoint(), getattr(torch, dtype))
    damaged = first_nonfinite(model)
    if damaged is not None:
        raise MythosError(
            f"tensor {damaged} holds NaN or Inf values: the checkpoint is damaged; generate from a healthy "
            "checkpoint (e.g. an earlier one)"
        )
    return TextGeneration(model, tok, ids, max_new_tokens, sampling, seed, dtype, tok_source, budget, limit)
