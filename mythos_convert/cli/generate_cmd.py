"""`mythos-convert generate CKPT PROMPT`: print the prompt, then stream the model's continuation."""

from __future__ import annotations

import sys
import time
from typing import Annotated

import typer

from mythos_convert.cli.common import CheckpointArg, ConfigOpt, QuietOpt, TokenizerOpt, apply_quiet
from mythos_convert.convert.hf_config import DEFAULT_TEMPERATURE, DEFAULT_TOP_P

DTYPES = ("float32", "bfloat16")


def generate(
    ckpt: CheckpointArg,
    prompt: Annotated[str, typer.Argument(help="Text to continue (gets <bos>, never <eos>).")],
    tokenizer: TokenizerOpt = None,
    max_new_tokens: Annotated[int, typer.Option(help="Most tokens to add (bounded by the context).")] = 128,
    temperature: Annotated[float, typer.Option(help="0 is greedy decoding.")] = DEFAULT_TEMPERATURE,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling mass (1 keeps every token).")] = DEFAULT_TOP_P,
    top_k: Annotated[int, typer.Option(help="Sample among the k most likely tokens (0: all).")] = 0,
    seed: Annotated[int | None, typer.Option(help="Seed for reproducible sampling.")] = None,
    dtype: Annotated[str, typer.Option(help="float32 or bfloat16.")] = "float32",
    config: ConfigOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Continue PROMPT with the native model, streaming the text as it is generated.

    Example: mythos-convert generate runs/tiny/ckpt.pt "Return the" --temperature 0
    """
    apply_quiet(quiet)
    import torch

    from mythos_convert.convert.tokenizer_export import check_vocab_fits
    from mythos_convert.data.tokenizer import resolve_tokenizer
    from mythos_convert.errors import MythosError
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
    from mythos_convert.train.checkpoint import load_checkpoint, load_model
    from mythos_convert.ui import info, warn

    if dtype not in DTYPES:
        raise MythosError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}: pass --dtype float32")
    sampling = Sampling(temperature=temperature, top_k=top_k or None, top_p=top_p)
    check_seed(seed)  # all sampling input is checked before the model loads
    source = load_checkpoint(ckpt, config)
    tok, tok_source = resolve_tokenizer(source, tokenizer)
    check_vocab_fits(tok, source.config.vocab_size)  # larger ids would index past the embedding
    ids = prompt_ids(tok, prompt)
    limit = source.config.max_seq_len
    budget = context_budget(limit, len(ids), max_new_tokens)  # before any output: a bad prompt fails cleanly
    model = load_model(source, getattr(torch, dtype))  # names a missing or misshapen tensor
    damaged = first_nonfinite(model)
    if damaged is not None:  # sampling fails on NaN probabilities, greedy decoding returns noise
        raise MythosError(
            f"tensor {damaged} holds NaN or Inf values: the checkpoint is damaged; generate from a healthy "
            "checkpoint (e.g. an earlier one)"
        )
    if budget < max_new_tokens:
        warn(f"only {budget} new tokens fit in the {limit}-token context after the prompt")
    info(f"tokenizer: {tok_source}; prompt: {len(ids)} tokens; context: {limit}")

    out = sys.stdout
    if hasattr(out, "reconfigure"):
        out.reconfigure(errors="replace")  # a non-UTF-8 terminal gets '?' rather than a crash
    out.write(prompt)
    out.flush()
    started, count = time.perf_counter(), 0

    def counted(stream):
        nonlocal count
        for token_id in stream:
            count += 1
            yield token_id

    new_ids = stream_ids(model, ids, max_new_tokens=max_new_tokens, sampling=sampling, eos_id=eos_id(tok), seed=seed)
    for piece in stream_text(tok, counted(new_ids)):
        out.write(piece)
        out.flush()
    out.write("\n")
    out.flush()
    seconds = time.perf_counter() - started
    engine = describe(getattr(torch, dtype))
    info(f"{count} tokens in {seconds:.2f} s ({count / max(seconds, 1e-9):.1f} tokens/s, {dtype}, {engine})")
