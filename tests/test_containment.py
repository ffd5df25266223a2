"""What must never happen: files from outside a folder read or published, inputs destroyed, wrong dtypes
converted in silence, two runs to one output both "succeeding".

Every case runs the real CLI in a subprocess and asserts exit 2, one `error:` line naming the problem,
and the files before and after (nothing lost, nothing written). Pushes go to the Hub emulator, whose
stored files are checked: nothing from outside the folder, no credentials.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import make_checkpoint, tiny_config
from hub_server import HubServer
from test_bad_inputs import (
    WRITING_SAFETENSORS,
    assert_one_error_line,
    cli,
    cli_env,
    run_cli,
    snapshot,
    start_stalled_cli,
    wait_for,
)

from mythos_convert.api import export_hf
from mythos_convert.errors import MythosError
from mythos_convert.support.atomic import atomic_dir

pytestmark = pytest.mark.slow

SECRET = b"root:x:0:0:root:/root:/bin/bash\n"  # stands for /etc/passwd: a file outside the folder
TOKEN = "hf_" + "Ab1" * 12  # what a real token looks like (hf_ + 36 characters)


@pytest.fixture(scope="module")
def base(tmp_path_factory, ref_tokenizer_path: Path) -> Path:
    """A run folder (ckpt.pt, tokenizer.json, preset.yaml, data/) and an unverified export of it."""
    root = tmp_path_factory.mktemp("containment")
    run = root / "run"
    run.mkdir()
    make_checkpoint(run / "ckpt.pt", tiny_config(vocab_size=512))
    shutil.copy(ref_tokenizer_path, run / "tokenizer.json")
    (run / "preset.yaml").write_text("model: {}\n")
    (run / "data").mkdir()
    (run / "data" / "train.bin").write_bytes(b"\0" * 64)
    export_hf(run / "ckpt.pt", root / "hf", verify=False)
    return root


@pytest.fixture
def case(base: Path, tmp_path: Path) -> Path:
    """A private copy of the inputs, so a case can break them."""
    shutil.copytree(base / "run", tmp_path / "run")
    shutil.copytree(base / "hf", tmp_path / "hf")
    (tmp_path / "home").mkdir()
    return tmp_path


def env_for(d: Path) -> dict[str, str]:
    return cli_env(d / "home")


def refused(d: Path, args: list[str], *expect: str, env: dict[str, str] | None = None) -> str:
    """Run the CLI; assert exit 2, one error line holding `expect`, and no file under `d` changed."""
    before = snapshot(d)
    proc = run_cli(args, env or env_for(d), d)
    line = assert_one_error_line(proc, expect)
    assert snapshot(d) == before, "files changed"
    return line


# ---------------------------------------------------------------- push: nothing from outside the folder


def _plant_links(d: Path) -> None:
    (d / "outside.txt").write_bytes(SECRET)
    (d / "home" / "token").write_text(TOKEN)
    os.symlink(d / "outside.txt", d / "hf" / "notes.txt")
    os.symlink(d / "home" / "token", d / "hf" / "extra.txt")


@contextlib.contextmanager
def push_with_links(case: Path) -> Iterator[tuple[HubServer, dict[str, str], list[str]]]:
    """The links planted, a Hub emulator up, the environment that reaches it with a write token, and
    the push to it (checks skipped, so only the containment refuses)."""
    _plant_links(case)
    with HubServer() as hub:
        env = {**env_for(case), **hub.client_env(case / "home", "hf_test_write_token")}
        yield hub, env, ["push", str(case / "hf"), "--repo", "me/x", "--endpoint", hub.url, "--skip-checks"]


def test_push_dry_run_refuses_symlinks_naming_each(case: Path):
    _plant_links(case)
    line = refused(case, ["push", str(case / "hf"), "--repo", "me/x", "--dry-run"], "notes.txt", "extra.txt")
    assert "symbolic link" in line and "replace links" in line


def test_push_uploads_nothing_from_a_folder_with_links(case: Path):
    """The issue's attack, for real against the emulator: exit 2, and the Hub holds no repo at all."""
    with push_with_links(case) as (hub, env, args):
        refused(case, args, "notes.txt", "symbolic link", env=env)
        assert hub.commits("me/x") == []
        assert not any(m == "POST" for m, _ in hub.requests)


def test_push_refuses_a_linked_folder_and_a_fifo(case: Path):
    (case / "elsewhere").mkdir()
    (case / "elsewhere" / "passwd").write_bytes(SECRET)
    os.symlink(case / "elsewhere", case / "hf" / "docs")
    os.mkfifo(case / "hf" / "pipe")
    line = refused(case, ["push", str(case / "hf"), "--repo", "me/x", "--dry-run"], "docs", "pipe")
    assert "named pipe" in line and "symbolic link" in line


def test_push_excluded_link_is_left_alone_and_never_uploaded(case: Path):
    """--exclude takes a link out of the upload; what is uploaded is the folder's own files only."""
    with push_with_links(case) as (hub, env, args):
        args += ["--exclude", "notes.txt", "--exclude", "extra.txt", "--quiet"]
        proc = run_cli(args, env, case)
        assert proc.returncode == 0, proc.stderr
        stored = hub.head("me/x").files
        assert "notes.txt" not in stored and "extra.txt" not in stored
        assert not any(SECRET in f.data or TOKEN.encode() in f.data for f in stored.values())


@pytest.mark.parametrize(
    ("name", "content", "expect"),
    [
        ("notes.txt", f"my token is {TOKEN}\n", "looks like an access token"),
        ("token", "anything\n", "named like a credentials file"),
        ("deploy/id_rsa", "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n", "named like a credentials file"),
        ("key.txt", "-----BEGIN RSA PRIVATE KEY-----\nabc\n", "private key"),
    ],
)
def test_push_refuses_credentials(case: Path, name: str, content: str, expect: str):
    (case / "hf" / name).parent.mkdir(exist_ok=True)
    (case / "hf" / name).write_text(content)
    refused(case, ["push", str(case / "hf"), "--repo", "me/x", "--dry-run"], name, expect, "--exclude")


def test_push_refuses_a_file_holding_the_token_in_use(case: Path):
    """The exact token being pushed with, even in a shape the patterns do not know."""
    odd_token = "custom-token-7f3a9c"
    (case / "hf" / "notes.txt").write_text(f"token: {odd_token}\n")
    with HubServer() as hub:
        env = {**env_for(case), **hub.client_env(case / "home", odd_token)}
        args = ["push", str(case / "hf"), "--repo", "me/x", "--endpoint", hub.url, "--skip-checks"]
        refused(case, args, "notes.txt", "access token", env=env)
        assert hub.commits("me/x") == []


# ---------------------------------------------------------------- no output over an input


@pytest.mark.parametrize(
    ("argv", "expect"),
    [
        ("hf {D}/run/ckpt.pt {D}/run --force", ("contains the checkpoint",)),
        ("hf {D}/run/ckpt.pt {D} --force", ("contains the checkpoint",)),
        ("hf {D}/run/ckpt.pt {D}/run/ckpt.pt --force", ("is the checkpoint",)),
        ("hf {D}/run/ckpt.pt {D}/hf --tokenizer {D}/hf/tokenizer.json --force", ("contains the tokenizer",)),
        ("gguf {D}/hf --outfile {D}/hf/model.safetensors --force", ("model.safetensors", "must end in .gguf")),
        ("gguf {D}/run/ckpt.pt --outfile {D}/run/ckpt.pt --force", ("ckpt.pt", "must end in .gguf")),
        ("native {D}/hf {D}/hf/model.safetensors --force", ("model.safetensors",)),
        ("native {D}/hf {D}/hf/config.json --force", ("config.json",)),
        ("train --data {D}/run/data --out {D}/run/data/new --max-steps 1", ("lies inside the data folder",)),
        ("train --data {D}/run/data --out {D}/run --force --max-steps 1", ("contains the data",)),
        ("train --tokenizer {D}/run/tokenizer.json --out {D}/run --force --max-steps 1", ("contains the tokenizer",)),
        ("tokenizer train --data {D}/run/data --out {D}/run/data/tok.json", ("lies inside the data folder",)),
    ],
    ids=[
        "hf-out-is-ckpt-folder",
        "hf-out-is-parent",
        "hf-out-is-ckpt",
        "hf-out-holds-tokenizer",
        "gguf-over-shard",
        "gguf-over-ckpt",
        "native-over-shard",
        "native-over-config",
        "train-out-in-data",
        "train-out-holds-data",
        "train-out-holds-tokenizer",
        "tokenizer-out-in-data",
    ],
)
def test_output_over_an_input_is_refused(case: Path, argv: str, expect: tuple[str, ...]):
    refused(case, [a.format(D=case) for a in argv.split()], *expect)


def test_card_meta_inside_the_card_it_writes_is_refused(case: Path):
    (case / "hf" / "README.md").write_text("---\nlicense: mit\n---\n")
    refused(case, ["card", str(case / "hf"), "--meta", str(case / "hf" / "README.md")], "README.md")


# ---------------------------------------------------------------- paths read from a folder stay inside it


def _index_escaping(d: Path) -> None:
    """The issue's broken repo: an index whose shard is ../elsewhere/model.safetensors (a valid file there)."""
    (d / "elsewhere").mkdir()
    shutil.move(d / "hf" / "model.safetensors", d / "elsewhere" / "model.safetensors")
    from safetensors import safe_open

    with safe_open(d / "elsewhere" / "model.safetensors", framework="pt") as handle:
        names = list(handle.keys())
    index = {"metadata": {}, "weight_map": dict.fromkeys(names, "../elsewhere/model.safetensors")}
    (d / "hf" / "model.safetensors.index.json").write_text(json.dumps(index))


def _linked_weights(d: Path) -> None:
    (d / "elsewhere").mkdir()
    shutil.move(d / "hf" / "model.safetensors", d / "elsewhere" / "model.safetensors")
    os.symlink(d / "elsewhere" / "model.safetensors", d / "hf" / "model.safetensors")


def _linked_config(d: Path) -> None:
    shutil.move(d / "hf" / "config.json", d / "config.json")
    os.symlink(d / "config.json", d / "hf" / "config.json")


def _fifo_tokenizer(d: Path) -> None:
    """A named pipe where tokenizer.json should be: reading it would hang the command forever."""
    (d / "hf" / "tokenizer.json").unlink()
    os.mkfifo(d / "hf" / "tokenizer.json")


BREAKS = {
    "index-escapes": _index_escaping,
    "linked-weights": _linked_weights,
    "linked-config": _linked_config,
    "fifo-tokenizer": _fifo_tokenizer,
}
EXPECT = {
    "index-escapes": ("../elsewhere/model.safetensors", "outside the folder"),
    "linked-weights": ("model.safetensors", "symbolic link"),
    "linked-config": ("config.json", "symbolic link"),
    "fifo-tokenizer": ("tokenizer.json", "named pipe"),
}
COMMANDS = {
    "native": "native {D}/hf {D}/back.pt",
    "gguf": "gguf {D}/hf --outfile {D}/m.gguf --no-verify",
    "verify": "verify {D}/hf",
    "push": "push {D}/hf --repo me/x --dry-run",
    "card": "card {D}/hf",
}


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("brk", list(BREAKS))
def test_nothing_outside_the_folder_is_read(case: Path, brk: str, command: str):
    BREAKS[brk](case)
    expect = EXPECT[brk]
    if command == "push" and brk == "index-escapes":
        expect = ("../elsewhere/model.safetensors",)  # listed among the failed checks
    refused(case, [a.format(D=case) for a in COMMANDS[command].split()], *expect)


# ---------------------------------------------------------------- dtypes the header claims


def _header_says(path: Path, tensor: str, dtype: str) -> None:
    """Rewrite one tensor's dtype in a safetensors header in place (same length: F32 -> I32)."""
    data = bytearray(path.read_bytes())
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    header[tensor]["dtype"] = dtype
    text = json.dumps(header, separators=(",", ":")).encode().ljust(size)
    assert len(text) == size
    data[8 : 8 + size] = text
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("command", ["native", "gguf", "push"])
def test_integer_header_dtype_is_refused(case: Path, command: str):
    _header_says(case / "hf" / "model.safetensors", "model.layers.0.self_attn.q_proj.weight", "I32")
    line = refused(case, [a.format(D=case) for a in COMMANDS[command].split()], "q_proj", "I32")
    assert "float" in line


def test_header_dtype_unlike_the_config_is_refused(case: Path):
    """F16 bytes where config.json declares float32: refused, naming both."""
    import torch
    from safetensors.torch import load_file, save_file

    weights = load_file(case / "hf" / "model.safetensors")
    weights["model.norm.weight"] = weights["model.norm.weight"].to(torch.float16)
    save_file(weights, case / "hf" / "model.safetensors", metadata={"format": "pt"})
    refused(case, ["native", str(case / "hf"), str(case / "back.pt")], "model.norm.weight", "float16", "float32")


# ---------------------------------------------------------------- two runs to one output


def test_second_run_to_a_locked_output_is_refused(case: Path):
    """A run holding the output's lock (here a process that took it and sleeps) refuses the next."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from mythos_convert.support.atomic import output_lock\n"
            f"with output_lock(Path({str(case / 'out')!r})):\n"
            "    print('locked', flush=True); time.sleep(120)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        line = refused(case, ["hf", str(case / "run" / "ckpt.pt"), str(case / "out"), "--no-verify"], "another")
        assert f"pid {holder.pid}" in line and str(case / "out") in line
    finally:
        holder.kill()
        holder.wait()
    # the holder died without cleaning up: its lock file is stale and the next run takes it over
    assert (case / ".out.lock").exists()
    proc = run_cli(["hf", str(case / "run" / "ckpt.pt"), str(case / "out"), "--no-verify"], env_for(case), case)
    assert proc.returncode == 0, proc.stderr
    assert not (case / ".out.lock").exists()


def test_two_concurrent_runs_one_wins_the_other_is_refused(case: Path):
    """`hf a.pt out & hf b.pt out`: exactly one succeeds; the other exits 2 and out is the winner's."""
    make_checkpoint(case / "b" / "ckpt.pt", tiny_config(vocab_size=512), seed=1)
    shutil.copy(case / "run" / "tokenizer.json", case / "b" / "tokenizer.json")
    env = env_for(case)
    procs = [
        subprocess.Popen(cli(["hf", str(ck), str(case / "out")]), env=env, cwd=case, stderr=subprocess.PIPE, text=True)
        for ck in (case / "run" / "ckpt.pt", case / "b" / "ckpt.pt")
    ]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    loser = next(err for code, err in results if code == 2)
    assert "another mythos-convert run" in loser or "not empty" in loser, loser
    meta = json.loads((case / "out" / "mythos.json").read_text())
    assert meta["source_checkpoint"] == "ckpt.pt"
    assert not list(case.glob(".out.*")), "a lock or temporary left behind"


def test_rename_time_recheck_keeps_what_appeared_meanwhile(tmp_path: Path):
    """Something written to the output while the new one was being built is never replaced without force."""
    final = tmp_path / "out"
    with pytest.raises(MythosError, match="not empty"), atomic_dir(final) as tmp:
        (tmp / "a.txt").write_text("new")
        final.mkdir()
        (final / "theirs.txt").write_text("theirs")  # as a run without our lock would
    assert (final / "theirs.txt").read_text() == "theirs"
    assert not list(tmp_path.glob(".out.tmp-*"))


def test_stale_temporaries_of_a_dead_run_are_removed(case: Path):
    """SIGKILL leaves .out.tmp-* (a whole export) and .out.lock: the next run to out removes them."""
    args = ["hf", str(case / "run" / "ckpt.pt"), str(case / "out")]
    log = case / "stderr.txt"
    proc, marker = start_stalled_cli(args, env_for(case), case, log, WRITING_SAFETENSORS, "after")
    wait_for(marker.exists, proc, log, "the new model.safetensors was being written")
    proc.kill()
    proc.wait()
    assert list(case.glob(".out.tmp-*")) and (case / ".out.lock").exists()
    again = run_cli([*args, "--no-verify"], env_for(case), case)
    assert again.returncode == 0, again.stderr
    assert sorted(p.name for p in case.glob(".out*")) == [], "stale temporaries left"
