"""`mythos-convert hf CKPT OUT`: native checkpoint -> verified transformers Llama folder."""

from __future__ import annotations

from mythos_convert.cli import options as o
from mythos_convert.cli.common import skip_exit_collection


def hf(
    ckpt: o.CheckpointArg,
    out: o.HFOutArg,
    tokenizer: o.TokenizerOpt = None,
    config: o.ConfigOpt = None,
    dtype: o.DtypeOpt = None,
    max_shard_size: o.MaxShardSizeOpt = "5GB",
    force: o.ForceOpt = False,
    no_verify: o.NoVerifyOpt = False,
    allow_nonfinite: o.AllowNonfiniteOpt = False,
    temperature: o.HFTemperatureOpt = 0.8,
    top_p: o.HFTopPOpt = 0.9,
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
