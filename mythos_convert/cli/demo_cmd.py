"""`mythos-convert demo [OUT]`: the whole product on the embedded default, ending with one table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from typer import Argument, Option

from mythos_convert.cli.common import ForceOpt, QuietOpt


def demo(
    out: Annotated[Path, Argument(help="Folder for everything the demo makes.")] = Path("demo-out"),
    max_steps: Annotated[int | None, Option(help="Training steps (default: the tiny preset's).")] = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Train tiny on the embedded corpus, export to HF and GGUF (f16, q8_0), verify, eval, card, push --dry-run."""
    from mythos_convert.demo import load_commands, run_demo, summary_table
    from mythos_convert.hub.push import plan_table
    from mythos_convert.support.ui import result

    outcome = run_demo(out, force=force, max_steps=max_steps)
    result(plan_table(outcome.push_plan))
    result(summary_table(outcome))
    for line in load_commands(outcome):
        result(f"  {line}")
    if outcome.val_loss is not None:
        times = ", ".join(f"{step} {outcome.seconds[step]:.0f}s" for step in ("train", "hf", "gguf", "eval"))
        result(f"validation loss {outcome.val_loss:.3f} (uniform baseline {outcome.uniform_loss:.3f}); {times}")
    result(f"next: mythos-convert push {outcome.hf_folder} --repo OWNER/NAME --dry-run")
    result(f"then: mythos-convert push {outcome.hf_folder} --repo OWNER/NAME")
