"""Options shared by several commands, defined once (and what their commands share in printing)."""

from __future__ import annotations

import atexit
import gc
from pathlib import Path
from typing import Annotated, Any

from typer import Argument, Option


def apply_quiet(quiet: bool) -> bool:
    """--quiet's callback: commands take it too, so it works after the command name as well as before it.

    Returns the value, which click keeps as the option's value.
    """
    if quiet:
        from mythos_convert.support.ui import set_quiet

        set_quiet(True)
    return quiet


CheckpointArg = Annotated[Path, Argument(help="Native checkpoint (ckpt.pt), ours or the reference's.")]
TokenizerOpt = Annotated[
    Path | None, Option(help="tokenizer.json (default: beside the checkpoint, else the copy inside it).")
]
ConfigOpt = Annotated[Path | None, Option(help="YAML with a `model:` mapping, for checkpoints without a config.")]
ForceOpt = Annotated[bool, Option("--force", help="Replace an existing output (atomically).")]
ChunksOpt = Annotated[int | None, Option(help="At most this many windows (default: all).")]
QuietOpt = Annotated[bool, Option("--quiet", "-q", help="No progress bars or chatter.", callback=apply_quiet)]
CorpusOpt = Annotated[
    list[Path] | None,
    Option(help="Text, JSONL (`text`) or Parquet files or folders; repeat. Default: embedded corpus."),
]
# The Hub options of `push` and `space`: each command words its help for what it publishes.
TokenOpt = Annotated[str | None, Option(help="Write token (default: HF_TOKEN or `hf auth login`).")]
EndpointOpt = Annotated[str | None, Option(help="Hub URL (default: HF_ENDPOINT or huggingface.co).")]


def repo_option(help: str) -> Any:
    """--repo, the Hub repo id to publish to."""
    return Option("--repo", help=help)


def dry_run_option(help: str) -> Any:
    """--dry-run: show the upload, upload nothing."""
    return Option("--dry-run", help=help)


def show_published(published: Any, dry_run: bool, *, space: bool = False) -> None:
    """What `push` and `space` print: a dry run's plans, else each commit's URL (a Space's page)."""
    from mythos_convert.hub.push import dry_run_summary, plan_table
    from mythos_convert.support.ui import result

    if dry_run:
        for plan in published.plans:
            table, summary = plan_table(plan), dry_run_summary(plan)
            if space:
                table.title = f"{plan.endpoint}/spaces/{plan.repo_id} @ {plan.revision}"
                summary = summary.replace(f"{plan.endpoint}/", f"{plan.endpoint}/spaces/", 1)
            result(table)
            result(summary)
        return
    for pushed in published.pushed:
        result(pushed.repo_url if space else pushed.commit_url)
        if pushed.pr_url and not space:
            result(pushed.pr_url)


def skip_exit_collection() -> None:
    """Leave this process's objects to the OS at exit, not to Python's last garbage collection.

    That collection walks every object torch and transformers made (measured: 0.6-0.8 s of a
    verify, about 0.6 s of an `hf` or `eval` of the reference fixture) to free memory the OS frees
    anyway. Call it where a command's work is done (files written and closed, threads joined):
    objects still in reference cycles at exit are then never finalized. The freeze waits for the exit
    because commands also run inside other processes (typer's CliRunner in the tests), whose objects
    must stay collectable until then.
    """
    atexit.register(gc.freeze)
