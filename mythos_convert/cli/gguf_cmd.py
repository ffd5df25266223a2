"""`mythos-convert gguf SRC`: an HF folder or a native checkpoint -> verified GGUF file(s) for llama.cpp/Ollama."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from typer import Argument, Option

from mythos_convert.cli import options as o


def gguf(
    src: Annotated[Path, Argument(help="HF folder written by `mythos-convert hf` (files go into it) or a ckpt.pt.")],
    outtype: Annotated[str | None, Option(help=f"{o.OUTTYPE_HELP} (or a comma list; default f16).")] = None,
    outfile: Annotated[Path | None, Option(help=o.OUTFILE)] = None,
    force: o.ForceOpt = False,
    modelfile: Annotated[bool, Option("--modelfile", help="Also write an Ollama Modelfile beside the GGUF.")] = False,
    tokenizer: o.TokenizerOpt = None,
    config: o.ConfigOpt = None,
    split_max_size: Annotated[str | None, Option(help="Split into shards of at most this size (500M, 2G).")] = None,
    no_verify: Annotated[bool, Option("--no-verify", help="Skip the llama.cpp parity check.")] = False,
    imatrix: Annotated[Path | None, Option(help=o.IMATRIX)] = None,
    target_bpw: Annotated[str | None, Option(help=o.TARGET_BPW)] = None,
    target_size: Annotated[str | None, Option(help=o.TARGET_SIZE)] = None,
    data: Annotated[list[Path] | None, Option(help=o.SEARCH_DATA)] = None,
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
