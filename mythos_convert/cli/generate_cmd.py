"""`mythos-convert generate MODEL PROMPT`: print the prompt, then stream the model's continuation."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from typer import Argument, Option

from mythos_convert.cli import options as o
from mythos_convert.formats.hf_config import DEFAULT_TEMPERATURE, DEFAULT_TOP_P


def generate(
    model: Annotated[Path, Argument(help="A native checkpoint (ckpt.pt), HF folder or GGUF file (run dequantised).")],
    prompt: Annotated[str, Argument(help="Text to continue (gets <bos>, never <eos>).")],
    tokenizer: o.TokenizerOpt = None,
    max_new_tokens: Annotated[int, Option(help="Most tokens to add (bounded by the context).")] = 128,
    temperature: Annotated[float, Option(help="0 is greedy decoding.")] = DEFAULT_TEMPERATURE,
    top_p: Annotated[float, Option(help="Nucleus sampling mass (1 keeps every token).")] = DEFAULT_TOP_P,
    top_k: Annotated[int, Option(help="Sample among the k most likely tokens (0: all).")] = 0,
    seed: Annotated[int | None, Option(help="Seed for reproducible sampling.")] = None,
    dtype: Annotated[str, Option(help="float32 or bfloat16.")] = "float32",
    config: o.ConfigOpt = None,
    quiet: o.QuietOpt = False,
) -> None:
    """Continue PROMPT with the native model, streaming the text as it is generated.

    Example: mythos-convert generate runs/tiny/ckpt.pt "Return the" --temperature 0
    """
    from mythos_convert.model.generate import Sampling
    from mythos_convert.support.ui import info, stream, warn
    from mythos_convert.textgen import prepare_generation

    sampling = Sampling(temperature=temperature, top_k=top_k or None, top_p=top_p)
    options = dict(tokenizer=tokenizer, config_yaml=config, sampling=sampling, seed=seed, dtype=dtype)
    run = prepare_generation(model, prompt, max_new_tokens=max_new_tokens, **options)
    if run.budget_warning:
        warn(run.budget_warning)
    info(run.header)
    stream(prompt, run.pieces())  # each piece shown as soon as it is decoded
    info(run.summary())
