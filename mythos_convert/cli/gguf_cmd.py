"""`mythos-convert gguf SRC`: an HF folder or a native checkpoint -> verified GGUF file(s) for llama.cpp/Ollama."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from typer import Argument, Option

from mythos_convert.cli.common import ConfigOpt, ForceOpt, QuietOpt, TokenizerOpt

# Spelled out so the CLI starts without importing torch (2 s); tests/test_cli.py checks it
# against mythos_convert.export.gguf_plan.OUTTYPES.
OUTTYPE_HELP = (
    "f32 | f16 | bf16 | q8_0 | q6_k | q5_k_m | q5_k_s | q5_1 | q5_0 | q4_k_m | q4_k_s | q4_1 | q4_0 | "
    "q3_k_l | q3_k_m | q3_k_s | q2_k | all"
)
IMATRIX = "Importance matrix (`mythos-convert imatrix`) to weight the quantizers."
OUTFILE = "Output path; `{ftype}` in it becomes the type (default: NAME-SIZE-TYPE.gguf)."
TARGET_BPW = "Bits per weight, a comma list (3.5,4.5): one file each, tensor types chosen by measured KL."
TARGET_SIZE = "File sizes, a comma list (95MB,120MB): one file each, tensor types chosen by measured KL."
DATA = "Text the type search calibrates and scores on (as `train --data`); default: the run's validation split."


def gguf(
    src: Annotated[Path, Argument(help="HF folder written by `mythos-convert hf` (files go into it) or a ckpt.pt.")],
    outtype: Annotated[str | None, Option(help=f"{OUTTYPE_HELP} (or a comma list; default f16).")] = None,
    outfile: Annotated[Path | None, Option(help=OUTFILE)] = None,
    force: ForceOpt = False,
    modelfile: Annotated[bool, Option("--modelfile", help="Also write an Ollama Modelfile beside the GGUF.")] = False,
    tokenizer: TokenizerOpt = None,
    config: ConfigOpt = None,
    split_max_size: Annotated[str | None, Option(help="Split into shards of at most this size (500M, 2G).")] = None,
    no_verify: Annotated[bool, Option("--no-verify", help="Skip the llama.cpp parity check.")] = False,
    imatrix: Annotated[Path | None, Option(help=IMATRIX)] = None,
    target_bpw: Annotated[str | None, Option(help=TARGET_BPW)] = None,
    target_size: Annotated[str | None, Option(help=TARGET_SIZE)] = None,
    data: Annotated[list[Path] | None, Option(help=DATA)] = None,
    quiet: QuietOpt = False,
) -> None:
    """Write GGUF file(s) for llama.cpp and Ollama, then check them in llama.cpp against the native model."""
    from mythos_convert.api import export_gguf
    from mythos_convert.errors import VerificationFailed

    options = dict(force=force, tokenizer=tokenizer, config_yaml=config, split_max_size=split_max_size, imatrix=imatrix)
    options |= dict(target_bpw=target_bpw, target_size=target_size, data=data)
    if outtype is None and not (target_bpw or target_size):
        outtype = "f16"
    try:
        export = export_gguf(src, outtype, outfile, modelfile=modelfile, verify=not no_verify, **options)
    except VerificationFailed as failed:  # the files were written: show them, then the failure
        _show(failed.output)
        raise
    _show(export)


def _show(export) -> None:
    from mythos_convert.export.gguf import render_export
    from mythos_convert.support.ui import result

    result(render_export(export))
    for found in export.searched:
        choice = found.choice
        result(
            f"{found.target.label}: {choice.file_bytes:,} bytes ({choice.bpw:.3f} bits/weight, budget "
            f"{choice.target_bytes:,}), mean KL {found.scored_kl:.4g} on held-apart text ({found.calibration})"
        )
        result(f"  same file with llama.cpp: {found.command}")
    if export.modelfile is not None:
        result(f"Ollama: ollama create mythos -f {export.modelfile}")
