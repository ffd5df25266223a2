"""`mythos-convert generate CKPT PROMPT`: print the prompt, then stream the model's continuation."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from mythos_convert.cli.common import CheckpointArg, ConfigOpt, QuietOpt, TokenizerOpt, apply_quiet
from mythos_convert.formats.hf_config import DEFAULT_TEMPERATURE, DEFAULT_TOP_P


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
    from mythos_convert.model.generate import Sampling
    from mythos_convert.support.ui import info, warn
    from mythos_convert.textgen import prepare_generation

    sampling = Sampling(temperature=temperature, top_k=top_k or None, top_p=top_p)
    run = prepare_generation(
        ckpt,
        prompt,
        tokenizer=tokenizer,
        config_yaml=config,
        max_new_tokens=max_new_tokens,
        sampling=sampling,
        seed=seed,
        dtype=dtype,
    )
    if run.budget < max_new_tokens:
        warn(f"only {run.budget} new tokens fit in the {run.context}-token context after the prompt")
    info(f"tokenizer: {run.tokenizer_source}; prompt: {len(run.ids)} tokens; context: {run.context}")
    out = sys.stdout
    if hasattr(out, "reconfigure"):
        out.reconfigure(errors="replace")  # a non-UTF-8 terminal gets '?' rather than a crash
    out.write(prompt)
    out.flush()
    for piece in run.pieces():
        out.write(piece)
        out.flush()
    out.write("\n")
    out.flush()
    info(
        f"{run.new_tokens} tokens in {run.seconds:.2f} s ({run.tokens_per_second:.1f} tokens/s, {dtype}, {run.engine})"
    )
