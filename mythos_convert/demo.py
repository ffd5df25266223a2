"""From nothing to a publish-ready model in one call: the product's whole pipeline on the embedded corpus.

`run_demo` trains the `tiny` preset on the embedded default corpus, then runs the real pipeline on
the result (no shortcuts): `hf` export with its verify, GGUF f16 and q8_0 with theirs, a short
`eval` (perplexity and KL divergence per file, so the card's Files table and chart hold figures), the
card, and a dry-run push plan. Every step is the same library call the individual commands make.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mythos_convert.errors import MythosError
from mythos_convert.support import ui
from mythos_convert.support.atomic import check_output_dir

DEMO_REPO = "your-name/mythos-tiny"  # only planned (dry run), never contacted
DEMO_GGUF_TYPES = "f16,q8_0"
DEMO_EVAL_CHUNKS = 16  # windows of the validation split: enough to rank F16 against Q8_0, a few seconds on tiny


@dataclass
class Artifact:
    """One row of the demo's closing table."""

    name: str
    path: Path
    size: int
    parity: str
    load: str


@dataclass
class DemoResult:
    out: Path
    checkpoint: Path
    hf_folder: Path
    artifacts: list[Artifact] = field(default_factory=list)
    val_loss: float | None = None
    uniform_loss: float | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    push_plan: Any = None

    @property
    def passed(self) -> bool:
        return all(a.parity.startswith("ok") or a.parity == "-" for a in self.artifacts)


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _parity(result: dict[str, Any] | None, eval_row: dict[str, Any] | None = None) -> str:
    """`ok: max|diff| 3.1e-06, greedy equal, mean KL 1.1e-04` from a verify result (and an eval row)."""
    if not result:
        return "-"
    status = "ok" if result.get("passed") else "FAILED"
    greedy = result.get("greedy_equal")
    greedy_text = "greedy equal" if greedy else ("greedy differs" if greedy is not None else "")
    top1 = result.get("argmax_agreement")
    top1_text = f"top-1 {100 * top1:.1f}%" if isinstance(top1, (int, float)) else ""
    diff = result.get("max_abs_diff")
    diff_text = f"max|diff| {diff:.1e}" if isinstance(diff, (int, float)) else ""
    kl = ((eval_row or {}).get("kl") or {}).get("mean_kl")
    kl_text = f"mean KL {kl:.1e}" if isinstance(kl, (int, float)) else ""
    return f"{status}: " + ", ".join(t for t in (diff_text, top1_text, greedy_text, kl_text) if t)


def _eval_rows(report: Any) -> dict[str, dict[str, Any]]:
    """The eval report's rows by file name (a GGUF's row is the one to quote beside its verify)."""
    return {Path(str(row["target"])).name: row for row in report.rows}


@contextlib.contextmanager
def _timed(seconds: dict[str, float], step: str) -> Iterator[None]:
    """Record how long the block took as `seconds[step]` (only when it succeeds)."""
    started = time.perf_counter()
    yield
    seconds[step] = time.perf_counter() - started


def run_demo(out: str | Path = "demo-out", *, force: bool = False, max_steps: int | None = None) -> DemoResult:
    """Train tiny on the embedded corpus, export to HF and GGUF, verify, card, plan a push.

    Raises:
        MythosError: a non-empty `out` without `force`, or any failing step (named).
    """
    from mythos_convert.api import evaluate, export_gguf, export_hf
    from mythos_convert.card import write_card
    from mythos_convert.model.config import load_preset
    from mythos_convert.train.trainer import train

    out = check_output_dir(out, force)
    run_dir, hf_dir = out / "run", out / "hf"
    seconds: dict[str, float] = {}
    with _timed(seconds, "train"):
        ui.info("[bold]1/6[/bold] training the tiny preset on the embedded corpus")
        trained = train("tiny", None, run_dir, max_steps=max_steps, force=force)
    with _timed(seconds, "hf"):
        ui.info("[bold]2/6[/bold] exporting to a transformers folder and verifying it")
        hf = export_hf(trained.checkpoint, hf_dir, force=force, verify=True)
    with _timed(seconds, "gguf"):
        ui.info("[bold]3/6[/bold] writing GGUF f16 and q8_0 and verifying them in llama.cpp")
        gguf = export_gguf(hf_dir, DEMO_GGUF_TYPES, force=force, modelfile=True, verify=True)
    with _timed(seconds, "eval"):
        ui.info(
            f"[bold]4/6[/bold] measuring perplexity and KL divergence ({DEMO_EVAL_CHUNKS} windows of the "
            "validation split)"
        )
        report = evaluate([hf_dir], chunks=DEMO_EVAL_CHUNKS)

    ui.info("[bold]5/6[/bold] rendering the model card")
    card = write_card(hf_dir)
    ui.info("[bold]6/6[/bold] planning the push (dry run: nothing is uploaded)")
    plan = _plan_push(hf_dir)

    artifacts = _artifacts(trained.checkpoint, hf_dir, hf.verify, gguf, _eval_rows(report), card)
    vocab = load_preset("tiny").model.vocab_size
    result = DemoResult(
        out=out,
        checkpoint=trained.checkpoint,
        hf_folder=hf_dir,
        artifacts=artifacts,
        val_loss=trained.val_loss,
        uniform_loss=math.log(vocab),
        seconds=seconds,
        push_plan=plan,
    )
    if not result.passed:
        failed = [a.name for a in result.artifacts if a.parity.startswith("FAILED")]
        raise MythosError(f"demo parity check failed for {', '.join(failed)}: see the verify tables above")
    return result


def _artifacts(
    checkpoint: Path, hf_dir: Path, hf_verify: Any, gguf: Any, quality: dict[str, dict[str, Any]], card: Path
) -> list[Artifact]:
    """The closing table's rows: checkpoint, HF folder, each GGUF file, the card."""
    return [
        Artifact(
            "checkpoint",
            checkpoint,
            _size(checkpoint),
            "-",
            f"mythos-convert generate {checkpoint} 'The meaning of'",
        ),
        Artifact(
            "HF folder", hf_dir, _size(hf_dir), _parity(hf_verify), f"AutoModelForCausalLM.from_pretrained('{hf_dir}')"
        ),
        *_gguf_artifacts(gguf, quality),
        Artifact("model card", card, _size(card), "-", f"less {card}"),
    ]


def _plan_push(hf_dir: Path) -> Any:
    """The dry-run push plan of the exported folder, refused if the folder fails push's checks."""
    from mythos_convert.hub.checks import check_folder
    from mythos_convert.hub.push import plan_push

    plan = plan_push(hf_dir, DEMO_REPO)
    problems = check_folder(hf_dir, {f.path_in_repo for f in plan.files})
    if problems:
        raise MythosError(
            f"the exported folder fails the push checks: {'; '.join(problems)}; rerun with --force, "
            "and report a bug if it fails again"
        )
    return plan


def _gguf_artifacts(gguf: Any, quality: dict[str, dict[str, Any]]) -> list[Artifact]:
    """One row per GGUF file written, its parity from its verify and its eval row."""
    return [
        Artifact(
            f"GGUF {written.outtype.label}",
            written.path,
            written.nbytes,
            _parity(gguf.verify.get(written.path.name), quality.get(written.path.name)),
            f"python examples/run_with_llama_cpp.py {written.path}",
        )
        for written in gguf.written
    ]


def summary_table(result: DemoResult):
    """The closing table: each artifact, its size and its parity figures (paths relative to OUT).

    Made for an 80-column terminal: no vertical rules, and only the figures wrap (between words);
    a path is never cut, so it can be copied.
    """
    from rich import box
    from rich.table import Table

    from mythos_convert.support.ui import human_size

    table = Table(title=f"mythos-convert demo: {result.out}", box=box.SIMPLE_HEAD, title_justify="left")
    table.add_column("artifact", no_wrap=True)
    table.add_column("file", no_wrap=True)
    table.add_column("size", justify="right", no_wrap=True)
    table.add_column("parity vs the native model", overflow="fold", min_width=20)
    for a in result.artifacts:
        table.add_row(a.name, _relative(a.path, result.out), human_size(a.size), a.parity)
    return table


def render_demo(result: DemoResult) -> list:
    """What `demo` prints, in order: the push plan, the summary table, how to load each artifact,
    the validation loss and step times, and the next commands."""
    from mythos_convert.hub.push import plan_table

    rendered: list = [plan_table(result.push_plan), summary_table(result)]
    rendered += [f"  {line}" for line in load_commands(result)]
    if result.val_loss is not None:
        times = ", ".join(f"{step} {result.seconds[step]:.0f}s" for step in ("train", "hf", "gguf", "eval"))
        rendered.append(f"validation loss {result.val_loss:.3f} (uniform baseline {result.uniform_loss:.3f}); {times}")
    rendered.append(f"next: mythos-convert push {result.hf_folder} --repo OWNER/NAME --dry-run")
    rendered.append(f"then: mythos-convert push {result.hf_folder} --repo OWNER/NAME")
    return rendered


def load_commands(result: DemoResult) -> list[str]:
    """How to use each artifact, one line each (printed under the table)."""
    return [f"{a.name}: {a.load}" for a in result.artifacts]


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)
