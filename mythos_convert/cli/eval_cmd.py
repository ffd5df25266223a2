"""`mythos-convert eval TARGET...`: perplexity of every format, KL divergence of every GGUF and MLX folder from float32."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from typer import Argument, Option

from mythos_convert.cli import options as o
from mythos_convert.cli.common import skip_exit_collection


def eval_(
    targets: Annotated[list[Path], Argument(help=o.TARGETS)],
    data: Annotated[list[Path] | None, Option(help=o.EVAL_DATA)] = None,
    ctx: Annotated[int | None, Option(help=o.EVAL_CTX)] = None,
    chunks: o.ChunksOpt = None,
    json_out: Annotated[Path | None, Option("--json", help="Also write the whole report as JSON here.")] = None,
    tokenizer: Annotated[Path | None, Option(help=o.EVAL_TOKENIZER)] = None,
    no_record: Annotated[bool, Option("--no-record", help="Do not write eval.json (nor re-render the card).")] = False,
    flash_attn: Annotated[bool, Option("--flash-attn/--no-flash-attn", help=o.FLASH_ATTN)] = True,
    repack: Annotated[bool, Option("--repack/--no-repack", help=o.REPACK)] = True,
    mlx_python: Annotated[Path | None, Option(help=o.EVAL_MLX_PYTHON)] = None,
    config: o.ConfigOpt = None,
    force: o.ForceOpt = False,
    quiet: o.QuietOpt = False,
) -> None:
    """Perplexity (llama-perplexity's windows) per engine, and each GGUF's KL divergence from the float32 model.

    Example: mythos-convert eval out/ --ctx 512 --chunks 64 --json eval-report.json
    """
    from mythos_convert.api import evaluate
    from mythos_convert.evaluate.report import render_report
    from mythos_convert.support.ui import results

    options = dict(data=data, ctx=ctx, chunks=chunks, tokenizer=tokenizer, config_yaml=config, record=not no_record)
    options |= dict(mlx_python=mlx_python, force=force, flash_attn=flash_attn, repack=repack)
    report = evaluate(targets, report_json=json_out, **options)
    results(render_report(report, json_out))
    skip_exit_collection()  # eval.json, the card and the report are written and closed
