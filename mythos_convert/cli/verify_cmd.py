"""`mythos-convert verify OUT`: parity of an exported folder (or .gguf file) with the native model."""

from __future__ import annotations

from mythos_convert.cli import options as o
from mythos_convert.cli.common import skip_exit_collection


def verify(
    out: o.VerifyTargetArg,
    ckpt: o.VerifyCheckpointOpt = None,
    tokenizer: o.TokenizerOpt = None,
    config: o.ConfigOpt = None,
    layerwise: o.LayerwiseOpt = None,
    quiet: o.QuietOpt = False,
) -> None:
    """Run the native model and the export on the same tokens; exit non-zero past tolerance."""
    from mythos_convert.api import verify as run_verify

    mode = "auto" if layerwise is None else ("layerwise" if layerwise else "whole")
    run_verify(out, ckpt, tokenizer=tokenizer, config_yaml=config, mode=mode)
    skip_exit_collection()  # verify.json is written and closed, the hashing thread joined
