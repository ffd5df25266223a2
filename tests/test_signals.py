"""SIGINT, SIGTERM and SIGKILL sent to the real `mythos-convert` command in the middle of its work.

Each command runs under `stall` (this folder): one function of the command is made to stop, mid
write, until a signal arrives, and the test sends its signal only once the command says it has
stopped there. So the signal lands while the command writes, on a fast idle machine and on a loaded
one, with no sleep and no timing in the test.

- SIGINT and SIGTERM: the command cleans up (no temporary file or folder, no lock, the previous
  output intact), prints one line (`interrupted` / `terminated`) and exits 130 / 143.
- SIGKILL: nothing can clean up, but no process the command started outlives it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import stall
from helpers import make_checkpoint, sample_corpus, tiny_config

from mythos_convert.api import export_hf

pytestmark = pytest.mark.slow

TIMEOUT = 300  # a bound for a hung command, never a pause the result depends on
ENDINGS = {signal.SIGINT: (130, "interrupted"), signal.SIGTERM: (143, "terminated")}


@dataclass(frozen=True)
class Inputs:
    root: Path  # never written by a test
    env: dict[str, str]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, ref_tokenizer_path: Path) -> Inputs:
    """A tiny checkpoint with its tokenizer, its HF export, a bigger checkpoint and some text."""
    root = tmp_path_factory.mktemp("signals")
    (root / "ck").mkdir()
    shutil.copy(ref_tokenizer_path, root / "ck" / "tokenizer.json")
    make_checkpoint(root / "ck" / "ckpt.pt", tiny_config(vocab_size=512))
    export_hf(root / "ck" / "ckpt.pt", root / "hf", verify=False)
    # rows long enough that quantizing one matrix into every type goes to the worker processes
    big = tiny_config(vocab_size=512, d_model=384, n_layers=1, n_heads=6, n_kv_heads=2, d_ff=1024)
    (root / "big").mkdir()
    shutil.copy(ref_tokenizer_path, root / "big" / "tokenizer.json")
    make_checkpoint(root / "big" / "ckpt.pt", big, with_optimizer=False)
    (root / "text.txt").write_text("\n\n".join(sample_corpus(20_000)))
    (root / "hf_home").mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "MYTHOS_DEBUG")}
    env.update(HF_HOME=str(root / "hf_home"), HF_HUB_DISABLE_TELEMETRY="1", TOKENIZERS_PARALLELISM="false")
    env.update(OMP_NUM_THREADS="1", MYTHOS_QUANT_WORKERS="2")
    return Inputs(root, stall.environment(env))


def start_stalled(inputs: Inputs, tmp_path: Path, target: str, when: str, args: list[str], **env: str):
    """Start the CLI in `tmp_path/work` with `target` stalled; return (process, marker, stderr log).

    The command leads its own process group, as a command started from a shell does."""
    marker, log = tmp_path / "stalled", tmp_path / "stderr.txt"
    with log.open("w") as fh:
        proc = subprocess.Popen(
            stall.command(marker, target, when, args),
            env={**inputs.env, **env},
            cwd=tmp_path / "work",
            stdout=subprocess.DEVNULL,
            stderr=fh,
            start_new_session=True,
        )
    return proc, marker, log


def wait_stalled(proc: subprocess.Popen, marker: Path, log: Path) -> None:
    """Until the command has stopped at its stall (it creates `marker`); fail if it ends first."""
    deadline = time.monotonic() + TIMEOUT
    while not marker.exists():
        if proc.poll() is not None:
            pytest.fail(f"the command ended (exit {proc.returncode}) before it stalled:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("the command never reached its stall")
        time.sleep(0.01)


def leftovers(folder: Path) -> list[str]:
    """Temporary outputs, swapped-out old outputs and output locks anywhere under `folder`."""
    return sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob(".*")
        if ".tmp-" in p.name or ".old-" in p.name or p.name.endswith(".lock")
    )


def files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- SIGINT and SIGTERM: clean up


@dataclass(frozen=True)
class Write:
    """A command (`{R}` the inputs, `{W}` its work folder holding a copy of the HF export), where it
    stalls, and the outputs it may have completed before the stall (all else must be as before)."""

    id: str
    argv: str
    target: str
    when: str
    completed: tuple[str, ...] = ()


PUBLISH = "mythos_convert.support.atomic:_publish_mode"  # an atomic output written, not yet renamed into place
WRITES = [
    Write("hf", "hf {R}/ck/ckpt.pt {W}/hf --force", "mythos_convert.formats.tensor_bytes:RangeCopier.write", "after"),
    Write(  # the first type's file is complete and in place; the others are still temporaries
        "gguf-all",
        "gguf {R}/ck/ckpt.pt --outtype all --outfile {W}/m-{{ftype}}.gguf --no-verify",
        "mythos_convert.export.gguf_writer:_Output.commit",
        "after",
        completed=("m-F32.gguf",),
    ),
    Write(
        "imatrix", "imatrix {R}/ck/ckpt.pt --out {W}/im.gguf --data {R}/text.txt --chunks 1 --ctx 64", PUBLISH, "before"
    ),
    Write("eval", "eval {W}/hf --data {R}/text.txt --chunks 1 --ctx 64", PUBLISH, "before"),
    Write("verify", "verify {W}/hf", PUBLISH, "before"),
    Write("card", "card {W}/hf", PUBLISH, "before"),
    Write("space-dry-run", "space {W}/space --repo owner/name-demo --dry-run", PUBLISH, "before"),
    Write("native", "native {W}/hf {W}/n.pt", PUBLISH, "before"),
    Write(
        "tokenizer-train", "tokenizer train --data {R}/text.txt --vocab-size 300 --out {W}/tok.json", PUBLISH, "before"
    ),
    Write("train-run-folder", "train --preset tiny --data {R}/text.txt --max-steps 1 --out {W}/run", PUBLISH, "before"),
    Write(  # the run folder is in place; the first checkpoint is being written
        "train-checkpoint",
        "train --preset tiny --data {R}/text.txt --max-steps 1 --out {W}/run",
        "torch:save",
        "after",
        completed=("run/",),
    ),
]
CASES = [pytest.param(w, signal.SIGTERM, id=f"{w.id}-SIGTERM") for w in WRITES] + [
    pytest.param(w, signal.SIGINT, id=f"{w.id}-SIGINT") for w in WRITES if w.id in ("gguf-all", "train-run-folder")
]


@pytest.mark.parametrize(("write", "signum"), CASES)
def test_signal_mid_write_cleans_up(write: Write, signum: signal.Signals, inputs: Inputs, tmp_path: Path):
    """The signal lands while the command writes: it cleans up, says one word and exits 128+signal."""
    work = tmp_path / "work"
    work.mkdir()
    shutil.copytree(inputs.root / "hf", work / "hf")
    before = files(work)
    args = write.argv.format(R=inputs.root, W=work).split()
    proc, marker, log = start_stalled(inputs, tmp_path, write.target, write.when, args)
    wait_stalled(proc, marker, log)
    proc.send_signal(signum)
    assert_ended_by(signum, proc, log)
    assert leftovers(work) == [], "temporary files left behind"
    after = files(work)
    new = {name for name in after if name not in before and not name.startswith(write.completed)}
    assert new == set(), f"outputs under their final names: {sorted(new)}"
    assert {name: after[name] for name in before} == before, "a previous output changed"


# ---------------------------------------------------------------- SIGKILL: no process outlives it


@dataclass(frozen=True)
class Pool:
    """A command that starts worker processes, and the function its workers stall in."""

    id: str
    argv: str
    target: str
    env: tuple[tuple[str, str], ...] = ()


CORPUS_TASK = "mythos_convert.data.corpus:_docstrings_of_file"  # the embedded corpus's workers
QUANTIZE_TASK = "mythos_convert.quant.kquants:quantize"  # the numpy quantizers' (compiled ones use threads)
NUMPY_QUANTIZERS = (("MYTHOS_KERNELS", "0"),)
GGUF_BIG = "gguf {R}/big/ckpt.pt --outtype all --outfile {W}/m-{{ftype}}.gguf --no-verify"
POOLS = [
    Pool("train-corpus", "train --preset tiny --max-steps 1 --out {W}/run", CORPUS_TASK),
    Pool("eval-corpus", "eval {W}/hf --chunks 60", CORPUS_TASK),
    Pool("gguf-quantizers", GGUF_BIG, QUANTIZE_TASK, env=NUMPY_QUANTIZERS),
]


@pytest.mark.parametrize("pool", POOLS, ids=[p.id for p in POOLS])
def test_killed_command_leaves_no_process(pool: Pool, inputs: Inputs, tmp_path: Path):
    """SIGKILL to the command while its workers are busy: every process it started ends too."""
    work = tmp_path / "work"
    work.mkdir()
    shutil.copytree(inputs.root / "hf", work / "hf")
    args = pool.argv.format(R=inputs.root, W=work).split()
    proc, marker, log = start_stalled(inputs, tmp_path, pool.target, "before", args, **dict(pool.env))
    tree: list[psutil.Process] = []
    try:
        wait_stalled(proc, marker, log)
        assert int(marker.read_text()) != proc.pid, "the command stalled itself, not a worker"
        tree = psutil.Process(proc.pid).children(recursive=True)
        proc.kill()
        proc.wait(timeout=TIMEOUT)
        assert_ended(tree)
    finally:
        kill_all(proc, tree)


@dataclass(frozen=True)
class Busy:
    """A command stopped while its worker processes are up: in a worker's task, or in the command
    once a first batch of work went through them."""

    id: str
    argv: str
    target: str
    when: str
    env: tuple[tuple[str, str], ...] = ()


BUSY = [
    # a worker's task never ends: the command must not wait for it
    Busy("corpus-task", "train --preset tiny --max-steps 1 --out {W}/run", CORPUS_TASK, "before"),
    Busy("quantizer-task", GGUF_BIG, QUANTIZE_TASK, "before", NUMPY_QUANTIZERS),
    # the command stops after its first tensor went through the workers
    Busy("quantizers-idle", GGUF_BIG, "mythos_convert.export.gguf_writer:_Output.write", "after", NUMPY_QUANTIZERS),
]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT-to-group", "SIGTERM"])
@pytest.mark.parametrize("busy", BUSY, ids=[b.id for b in BUSY])
def test_signal_while_workers_run_ends_them_and_cleans_up(
    busy: Busy, signum: signal.Signals, inputs: Inputs, tmp_path: Path
):
    """Ctrl-C as a terminal sends it (to the whole process group), or SIGTERM to the command alone,
    while its worker processes are up: the workers end with it (without waiting for their task),
    no traceback from them, no temporary, one line, exit 128+signal."""
    work = tmp_path / "work"
    work.mkdir()
    args = busy.argv.format(R=inputs.root, W=work).split()
    proc, marker, log = start_stalled(inputs, tmp_path, busy.target, busy.when, args, **dict(busy.env))
    tree: list[psutil.Process] = []
    try:
        wait_stalled(proc, marker, log)
        tree = psutil.Process(proc.pid).children(recursive=True)
        assert len(tree) >= 2, "the worker processes are not running"
        if signum == signal.SIGINT:
            os.killpg(proc.pid, signum)
        else:
            proc.send_signal(signum)
        assert_ended_by(signum, proc, log)
        assert list(work.iterdir()) == [], sorted(p.name for p in work.iterdir())  # not even a temporary
        assert_ended(tree)
    finally:
        kill_all(proc, tree)


def assert_ended_by(signum: signal.Signals, proc: subprocess.Popen, log: Path) -> None:
    """The command ends as `signum` must end it: exit 128+signal, its one word as the last line, no traceback."""
    proc.wait(timeout=TIMEOUT)
    err = log.read_text()
    code, word = ENDINGS[signum]
    assert proc.returncode == code, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == word, err


def assert_ended(tree: list[psutil.Process]) -> None:
    """Every process of `tree` ends within a bound (the kernel signals a worker as its parent goes,
    and a process ends asynchronously): the bound is the assertion, not a pause."""
    deadline = time.monotonic() + 60
    while _running(tree) and time.monotonic() < deadline:
        time.sleep(0.05)
    alive = _running(tree)
    assert alive == [], f"processes outlived the command: {alive}"


def kill_all(proc: subprocess.Popen, tree: list[psutil.Process]) -> None:
    """Leave nothing running whatever the test found (the old code's workers would stay forever)."""
    for p in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=TIMEOUT)


def _running(procs: list[psutil.Process]) -> list[str]:
    """Those still running (a zombie has ended; only its parent's reaping is left)."""
    out = []
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(f"{p.pid} {' '.join(p.cmdline())[:80]}")
    return out


# ---------------------------------------------------------------- a signal inside a swap


@pytest.fixture
def handled_signals():
    """The CLI's handlers, in this process, for one test; then pytest's own again."""
    from mythos_convert.support import interrupts

    with interrupts.handled():
        yield interrupts


def test_signal_during_the_swap_is_raised_after_it(handled_signals, tmp_path: Path, monkeypatch):
    """SIGTERM between moving the old output aside and renaming the new one in: the new output is
    in place before the signal is raised (the output is never missing, no `.old-*` is left)."""
    from mythos_convert.support import atomic

    out = tmp_path / "out"
    out.mkdir()
    (out / "a.txt").write_text("old\n")
    rename = os.replace

    def replace_then_signal(src, dst) -> None:
        rename(src, dst)
        if Path(dst).name.startswith(".out.old-"):  # the old output just moved aside
            signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr(atomic.os, "replace", replace_then_signal)
    with pytest.raises(handled_signals.Interrupted), atomic.atomic_dir(out, force=True) as tmp:
        (tmp / "a.txt").write_text("new\n")
    monkeypatch.undo()

    assert (out / "a.txt").read_text() == "new\n"
    assert leftovers(tmp_path) == []
