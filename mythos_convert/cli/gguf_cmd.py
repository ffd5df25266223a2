"""`mythos-convert gguf SRC`: an HF folder or a native checkpoint -> verified GGUF file(s) for llama.cpp/Ollama."""

from __future__ import annotations

from mythos_convert.cli import options as o


def gguf(
    src: o.GGUFSourceArg,
    outtype: o.OuttypeOpt = None,
    outfile: o.OutfileOpt = None,
    force: o.ForceOpt = False,
    modelfile: o.ModelfileOpt = False,
    tokenizer: o.TokenizerOpt = None,
    config: o.ConfigOpt = None,
    split_max_size: o.SplitMaxSizeOpt = None,
    no_verify: o.NoGGUFVerifyOpt = False,
    imatrix: o.ImatrixOpt = None,
    target_bpw: o.TargetBpwOpt = None,
    target_size: o.TargetSizeOpt = None,
    data: o.SearchDataOpt = None,
    quiet: o.QuietOpt = False,
) -> None:
    """Write GGUF file(s) for llama.cpp and Ollama, then check them in llama.cpp against the native model."""
    from mythos_convert.api import export_gguf
    from mythos_convert.errors import VerificationFailed
    from mythos_convert.export.gguf import render_export
    from mythos_convert.support.ui import results

    options = dict(force=force, tokenizer=tokenizer, config_yaml=config, split_max_size=split_max_size, imatrix=imatrix)
    options |= dict(target_bpw=target_bpw, target_size=target_size, data=data, modelfile=modelfile)
    try:
        export = export_gguf(src, outtype, outfile, verify=not no_verify, **options)
    except VerificationFailed as failed:  # the files were written: show them, then the failure
        results(render_export(failed.output))
        raise
    results(render_export(export))
