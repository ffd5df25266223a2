"""`mythos-convert eval TARGET...`: perplexity of every format, KL divergence of every GGUF and MLX folder from float32."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from typer import Argument, Option

from mythos_convert.cli.common import ChunksOpt, ConfigOpt, ForceOpt, QuietOpt, skip_exit_collection

TARGETS = (
    "Checkpoints, HF folders, GGUF files, MLX folders; a folder means its model plus every GGUF and MLX folder in it."
)
MLX_PYTHON = "A Python with mlx-lm for the MLX folders (default: $MYTHOS_MLX_PYTHON, else this one; none: skipped)."
DATA = "Text to score (as `train --data`); default: the run's validation split."
CTX = "Tokens per window (default 512, or the model's context if smaller)."
TOKENIZER = "tokenizer.json (default: the checkpoint's, else the folder's)."
# llama.cpp as eval runs it (both off: exactly as verify runs it)
FLASH_ATTN = (
    "llama.cpp with flash attention, as its own tools (llama-perplexity, llama-server) run it on CPU: faster; off, "
    "an F32 file computes float32 exactly (as verify runs it), the quantized types' figures barely move."
)
REPACK = (
    "Q4_0 files on llama.cpp's repacked weights (CPU_REPACK, never its AMX path), as llama.cpp runs them on a CPU "
    "without AMX: faster, the same KL divergence to 3 digits; off, llama.cpp's plain buffer (as verify runs it)."
)


def eval_(
    targets: Annotated[list[Path], Argument(help=TARGETS)],
    data: Annotated[list[Path] | None, Option(help=DATA)] = None,
    ctx: Annotated[int | None, Option(help=CTX)] = None,
    chunks: ChunksOpt = None,
    json_out: Annotated[Path | None, Option("--json", help="Also write the whole report as JSON here.")] = None,
    tokenizer: Annotated[Path | None, Option(help=TOKENIZER)] = None,
    no_record: Annotated[bool, Option("--no-record", help="Do not write eval.json (nor re-render the card).")] = False,
    flash_attn: Annotated[bool, Option("--flash-attn/--no-flash-attn", help=FLASH_ATTN)] = True,
    repack: Annotated[bool, Option("--repack/--no-repack", help=REPACK)] = True,
    mlx_python: Annotated[Path | None, Option(help=MLX_PYTHON)] = None,
    config: ConfigOpt = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Perplexity (llama-perplexity's windows) per engine, and each GGUF's KL divergence from the float32 model.

    Example: mythos-convert eval out/ --ctx 512 --chunks 64 --json eval-report.json
    """
    from rich.markup import escape

    from mythos_convert.api import evaluate
    from mythos_convert.evaluate.report import report_lines, report_table
    from mythos_convert.support.ui import result

    options = dict(data=data, ctx=ctx, chunks=chunks, tokenizer=tokenizer, config_yaml=config, record=not no_record)
    options["mlx_python"] = mlx_python
    report = evaluate(targets, report_json=json_out, force=force, flash_attn=flash_attn, repack=repack, **options)
    result(report_table(report))
    for line in report_lines(report):
        result(escape(line))  # a line may hold brackets (`pip install 'mythos-convert[mlx]'`), not markup
    if json_out is not None:
        result(f"report: {json_out}")
    skip_exit_collection()  # eval.json, the card and the report are written and closed
