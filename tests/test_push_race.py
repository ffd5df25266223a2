"""Push publishes exactly the bytes it checked, even when the folder changes while it uploads.

The CLI runs as a user runs it (a subprocess, `--endpoint` naming a proxy in front of the Hub
emulator). The proxy (tests/hold_proxy.py) holds the push's preupload request; while the push
waits on it, the test edits the folder, then lets the request go. An edit then must fail the push
with one `error:` line naming the file, exit 2, and no new commit on the Hub; with no edit the
Hub holds the very bytes that were checked (the sha256 `verify` bound). An edit too late to fail
the push is not published either, and neither Ctrl-C nor SIGKILL leaves push's private copy behind.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import test_push
from hold_proxy import HoldProxy
from hub_server import HubServer

from mythos_convert.hub.files import local_files
from mythos_convert.verify.record import load_results

exported, hub, with_ggufs = test_push.exported, test_push.hub, test_push.with_ggufs  # their fixtures, shared
subprocess_env = test_push.subprocess_env

TOKEN_LINE = "\naccess: hf_" + "Q" * 34 + "\n"


def _append_token(path: Path) -> None:
    with path.open("a", encoding="utf-8") as fh:
        fh.write(TOKEN_LINE)


def _overwrite_tail(path: Path) -> None:
    with path.open("r+b") as fh:
        fh.seek(-64, os.SEEK_END)
        fh.write(b"\xa5" * 64)


def _grow(path: Path) -> None:
    with path.open("ab") as fh:
        fh.write(b" " * 100)


EDITS: dict[str, tuple[str, Callable[[Path], None]]] = {
    "token appended to README.md": ("README.md", _append_token),
    "last 64 bytes of the weights overwritten": ("model.safetensors", _overwrite_tail),
    "config.json grown by 100 bytes": ("config.json", _grow),
}


def _snapshots_beside(folder: Path) -> list[Path]:
    """Private copies a push made beside `folder` and did not remove."""
    return sorted(folder.parent.glob(f".{folder.name}.push-*"))


def held_run(
    args: list[str], proxy: HoldProxy, env: dict[str, str], during_hold: Callable[[], None]
) -> subprocess.CompletedProcess:
    """Run the CLI; once the proxy holds its request, call `during_hold`, then let the request go."""
    cmd = [sys.executable, "-m", "mythos_convert", *args, "--endpoint", proxy.url]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) as proc:
        try:
            while not proxy.holding.wait(0.2):  # ends early if the CLI exits without reaching the request
                if proc.poll() is not None:
                    pytest.fail(f"the request was never held (exit {proc.returncode}): {proc.communicate()[1][-2000:]}")
            during_hold()
        finally:
            proxy.release.set()
        out, err = proc.communicate(timeout=600)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def one_error_line(run: subprocess.CompletedProcess) -> str:
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), run.stderr[-3000:]
    return lines[0]


@pytest.mark.slow
@pytest.mark.parametrize("edit", list(EDITS))
def test_an_edit_during_the_upload_fails_the_push_and_commits_nothing(
    exported: Path, hub: HubServer, tmp_path: Path, edit: str
):
    folder = Path(shutil.copytree(exported, tmp_path / "out"))
    name, change = EDITS[edit]
    with HoldProxy(hub.url, b"POST /api/models/tester/tiny/preupload/") as proxy:
        run = held_run(
            ["push", str(folder), "--repo", "tester/tiny", "--quiet"],
            proxy,
            subprocess_env(hub, tmp_path / "home"),
            lambda: change(folder / name),
        )
    line = one_error_line(run)
    assert name in line and str(folder) in line and "push" in line
    assert len(hub.commits("tester/tiny")) == 1  # the repo's initial commit: nothing was committed
    assert _snapshots_beside(folder) == []


@pytest.mark.slow
def test_without_edits_the_hub_holds_exactly_the_checked_bytes(exported: Path, hub: HubServer, tmp_path: Path):
    folder = Path(shutil.copytree(exported, tmp_path / "out"))
    with HoldProxy(hub.url, b"POST /api/models/tester/tiny/preupload/") as proxy:
        run = held_run(
            ["push", str(folder), "--repo", "tester/tiny", "--quiet"],
            proxy,
            subprocess_env(hub, tmp_path / "home"),
            lambda: None,
        )
    assert run.returncode == 0, run.stderr
    head = hub.head("tester/tiny")
    assert run.stdout.strip().splitlines()[-1].endswith(f"/tester/tiny/commit/{head.oid}")
    bound = load_results(folder)["hf"]["files"]
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= set(bound)
    for name, digest in bound.items():  # what verify checked is what the Hub holds
        assert head.files[name].sha256 == digest["sha256"], name
    for rel in local_files(folder):  # and every other file as the folder holds it (the card as push pointed it)
        assert head.files[rel].data == (folder / rel).read_bytes(), rel
    assert _snapshots_beside(folder) == []


@pytest.mark.slow
def test_a_file_changed_since_verify_is_refused_on_the_copy_naming_the_folder(
    exported: Path, hub: HubServer, tmp_path: Path
):
    folder = Path(shutil.copytree(exported, tmp_path / "out"))
    _overwrite_tail(folder / "model.safetensors")
    cmd = [sys.executable, "-m", "mythos_convert", "push", str(folder), "--repo", "tester/tiny", "--quiet"]
    env = subprocess_env(hub, tmp_path / "home")
    run = subprocess.run([*cmd, "--endpoint", hub.url], capture_output=True, text=True, env=env, timeout=600)
    line = one_error_line(run)
    assert "model.safetensors changed since `verify` checked it (hf)" in line
    assert f"re-run `mythos-convert verify {folder}`" in line and ".push-" not in line  # the folder, not the copy
    assert "tester/tiny" not in hub.repos and _snapshots_beside(folder) == []


@pytest.mark.slow
def test_an_edit_after_the_last_comparison_never_reaches_the_hub(exported: Path, hub: HubServer, tmp_path: Path):
    """Once the commit is being made an edit is too late to fail the push, and too late to be
    published: huggingface_hub reads the card it validates, then the files it commits, from the copy."""
    folder = Path(shutil.copytree(exported, tmp_path / "out"))
    with HoldProxy(hub.url, b"POST /api/validate-yaml") as proxy:  # inside create_commit, before the payload
        run = held_run(
            ["push", str(folder), "--repo", "tester/tiny", "--quiet"],
            proxy,
            subprocess_env(hub, tmp_path / "home"),
            lambda: _append_token(folder / "README.md"),
        )
    assert run.returncode == 0, run.stderr
    card = (folder / "README.md").read_text(encoding="utf-8")
    assert card.endswith(TOKEN_LINE)
    assert hub.head("tester/tiny").files["README.md"].data.decode() == card.removesuffix(TOKEN_LINE)


@pytest.mark.slow
@pytest.mark.llama_cpp
def test_gguf_repo_refuses_a_gguf_changed_during_its_upload(with_ggufs: Path, hub: HubServer, tmp_path: Path):
    folder = Path(shutil.copytree(with_ggufs, tmp_path / "out"))
    gguf = sorted(folder.glob("*.gguf"))[0]
    with HoldProxy(hub.url, b"POST /api/models/tester/tiny-GGUF/preupload/") as proxy:
        run = held_run(
            ["push", str(folder), "--repo", "tester/tiny", "--gguf-repo", "tester/tiny-GGUF", "--quiet"],
            proxy,
            subprocess_env(hub, tmp_path / "home"),
            lambda: _overwrite_tail(gguf),
        )
    line = one_error_line(run)
    assert gguf.name in line
    assert len(hub.commits("tester/tiny-GGUF")) == 1  # nothing committed to the GGUF repo
    assert _snapshots_beside(folder) == []


@pytest.mark.slow
def test_space_refuses_a_token_added_during_its_upload(tmp_path: Path):
    out = tmp_path / "space"
    with HubServer() as server, HoldProxy(server.url, b"POST /api/spaces/tester/mythos-ref-demo/preupload/") as proxy:
        run = held_run(
            ["space", str(out), "--repo", "tester/mythos-ref-demo", "--quiet"],
            proxy,
            subprocess_env(server, tmp_path / "home"),
            lambda: _append_token(out / "app.py"),
        )
        line = one_error_line(run)
        assert "app.py" in line
        assert len(server.commits("spaces/tester/mythos-ref-demo")) == 1  # the Space's initial commit only
    assert _snapshots_beside(out) == []


@pytest.mark.slow
def test_ctrl_c_while_uploading_removes_the_private_copy(exported: Path, hub: HubServer, tmp_path: Path):
    folder = Path(shutil.copytree(exported, tmp_path / "out"))
    env = subprocess_env(hub, tmp_path / "home")
    with HoldProxy(hub.url, b"POST /api/models/tester/tiny/preupload/") as proxy:
        cmd = [sys.executable, "-m", "mythos_convert", "push", str(folder), "--repo", "tester/tiny", "--quiet"]
        with subprocess.Popen([*cmd, "--endpoint", proxy.url], stderr=subprocess.PIPE, text=True, env=env) as proc:
            assert proxy.holding.wait(600), proc.communicate()[1][-2000:]
            copies = _snapshots_beside(folder)
            proc.send_signal(signal.SIGINT)
            err = proc.communicate(timeout=600)[1]
    assert proc.returncode == 130, err
    assert len(copies) == 1 and not copies[0].exists()  # there was a private copy; it is gone
    assert len(hub.commits("tester/tiny")) == 1


@pytest.mark.slow
def test_the_copy_a_killed_push_left_is_removed_by_the_next_push(exported: Path, hub: HubServer, tmp_path: Path):
    folder = Path(shutil.copytree(exported, tmp_path / "out"))
    env = subprocess_env(hub, tmp_path / "home")
    cmd = [sys.executable, "-m", "mythos_convert", "push", str(folder), "--repo", "tester/tiny", "--quiet"]
    with HoldProxy(hub.url, b"POST /api/models/tester/tiny/preupload/") as proxy:
        with subprocess.Popen([*cmd, "--endpoint", proxy.url], stderr=subprocess.PIPE, text=True, env=env) as proc:
            assert proxy.holding.wait(600), proc.communicate()[1][-2000:]
            proc.kill()  # SIGKILL: no cleanup runs
            proc.communicate(timeout=60)
    assert len(_snapshots_beside(folder)) == 1
    again = subprocess.run([*cmd, "--endpoint", hub.url], capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0, again.stderr
    assert _snapshots_beside(folder) == [] and len(hub.commits("tester/tiny")) == 2
