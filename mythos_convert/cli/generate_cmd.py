"""`mythos-convert generate MODEL PROMPT`: print the prompt, then stream the model's continuation."""

from __future__ import annotations

from mythos_convert.cli import options as o
from mythos_convert.formats.hf_config import DEFAULT_TEMPERATURE, DEFAULT_TOP_P


def generate(
    model: o.ModelArg,
    prompt: o.PromptArg,
    tokenizer: o.TokenizerOpt = None,
    max_new_tokens: o.MaxNewTokensOpt = 128,
    temperature: o.TemperatureOpt = DEFAULT_TEMPERATURE,
    top_p: o.TopPOpt = DEFAULT_TOP_P,
    top_k: o.TopKOpt = 0,
    seed: o.SeedOpt = None,
    dtype: o.GenerateDtypeOpt = "float32",
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
