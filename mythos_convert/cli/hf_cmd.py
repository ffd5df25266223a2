"""`mythos-convert hf CKPT OUT`: native checkpoint -> verified transformers Llama folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from typer import Argument, Option

from mythos_convert.cli import options as o
from mythos_convert.cli.common import skip_exit_collection


def hf(
    ckpt: o.CheckpointArg,
    out: Annotated[Path, Argument(help="Output folder (refused if not empty, unless --force).")],
    tokenizer: o.TokenizerOpt = None,
    config: o.ConfigOpt = None,
    dtype: Annotated[str | None, Option(help="float32 | bfloat16 | float16 (default: the checkpoint's).")] = None,
    max_shard_size: Annotated[str, Option(help="Shard the weights above this size (5GB, 500MB or bytes).")] = "5GB",
    force: o.ForceOpt = False,
    no_verify: Annotated[bool, Option("--no-verify", help="Skip the parity check against the native model.")] = False,
    allow_nonfinite: Annotated[
        bool, Option("--allow-nonfinite", help="Export NaN/Inf weights instead of refusing.")
    ] = False,
    temperature: Annotated[float, Option(help="Sampling temperature in generation_config.json.")] = 0.8,
    top_p: Annotated[float, Option(help="Nucleus sampling top_p in generation_config.json.")] = 0.9,
    quiet: o.QuietOpt = False,
) -> None:
    """Export CKPT as a LlamaForCausalLM folder (safetensors, config, tokenizer, card) and verify it."""
    from mythos_convert.api import export_hf
    from mythos_convert.support.ui import result

    options = dict(tokenizer=tokenizer, config_yaml=config, dtype=dtype, max_shard_size=max_shard_size, force=force)
    sampling = dict(temperature=temperature, top_p=top_p)  # generation_config.json
    export = export_hf(ckpt, out, verify=not no_verify, allow_nonfinite=allow_nonfinite, **options, **sampling)
    skip_exit_collection()  # the folder is written and moved into place, verify.json too; no thread runs
    result(str(export.folder))
