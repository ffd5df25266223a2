"""`push` against a real HTTP server (tests/hub_server.py) through the real huggingface_hub client.

Xet is disabled the supported way (HF_HUB_DISABLE_XET=1 in a subprocess's environment, or the
`huggingface_hub.constants` attribute in-process), so uploads use plain LFS, which the emulator
speaks. HfApi itself is never patched. Downloads go back through `snapshot_download`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hub_server import HubServer
from huggingface_hub import ModelCard, constants, snapshot_download
from typer.testing import CliRunner

from mythos_convert.api import export_hf
from mythos_convert.card import card_problems
from mythos_convert.cli import app
from mythos_convert.errors import MythosError
from mythos_convert.hub.checks import check_folder
from mythos_convert.hub.files import local_files
from mythos_convert.hub.push import plan_push, push
from mythos_convert.verify.record import record_result

TOKEN = "hf_test_write_token"


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_ckpt) -> Path:
    """A real, verified `mythos-convert hf` folder (README, verify.json and all)."""
    out = tmp_path_factory.mktemp("push") / "out"
    export = export_hf(tiny_ckpt, out)
    assert export.verify and export.verify["passed"]
    return export.folder


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """The emulator, with this process's huggingface_hub pointed at it (constants patched, not HfApi)."""
    # multipart above 512 KiB so the ~620 KiB tiny weights go through parts + completion
    with HubServer(multipart_chunk=256 * 1024, multipart_threshold=512 * 1024) as server:
        for key, value in server.client_env(tmp_path / "hf_home", TOKEN).items():
            monkeypatch.setenv(key, value)
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
        monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf_home" / "token"))
        monkeypatch.setenv("MYTHOS_PUSH_BACKOFF", "0.01")
        yield server


def download(hub: HubServer, repo_id: str, dest: Path, revision: str | None = None) -> Path:
    return Path(
        snapshot_download(
            repo_id,
            revision=revision,
            endpoint=hub.url,
            token=TOKEN,
            local_dir=dest,
            cache_dir=dest.parent / "cache",
        )
    )


def lfs_paths(commit) -> set[str]:
    return {line["value"]["path"] for line in commit.lines if line["key"] == "lfsFile"}


def committed_paths(commit) -> set[str]:
    return {line["value"]["path"] for line in commit.lines if line["key"] in ("file", "lfsFile")}


def subprocess_env(hub: HubServer, home: Path, token: str = TOKEN) -> dict[str, str]:
    """The user's shell: only --endpoint names the server (HF_ENDPOINT unset), Xet off, fast retries."""
    env = {**os.environ, **hub.client_env(home, token), "MYTHOS_PUSH_BACKOFF": "0.01"}
    env.pop("HF_ENDPOINT")
    env.pop("HF_HUB_DISABLE_TELEMETRY")  # telemetry on: its global-endpoint requests must reach the emulator too
    return env


@pytest.mark.slow
def test_cli_push_then_download_back_byte_for_byte(exported: Path, hub: HubServer, tmp_path: Path):
    cmd = [sys.executable, "-m", "mythos_convert", "push", str(exported), "--repo", "tester/tiny"]
    cmd += ["--endpoint", hub.url, "--quiet"]
    run = subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env(hub, tmp_path / "home"), timeout=600)
    assert run.returncode == 0, run.stderr
    head = hub.head("tester/tiny")
    assert run.stdout.strip().splitlines()[-1] == f"{hub.url}/tester/tiny/commit/{head.oid}"
    assert len(hub.commits("tester/tiny")) == 2  # the repo's initial commit + ONE commit with everything
    local = local_files(exported)
    assert committed_paths(head) == set(local)
    # LFS vs regular as the server recorded it, and as the local plan predicted
    plan = plan_push(exported, "tester/tiny", endpoint=hub.url)
    assert lfs_paths(head) == {f.path_in_repo for f in plan.files if f.lfs} == {"model.safetensors"}
    assert hub.count(r"PUT /lfs-upload/\w+/part/") >= 2 and hub.count(r"/complete$") == 1  # multipart
    # README validation and agent detection use huggingface_hub's global endpoint: they reached the emulator
    assert hub.count("POST /api/validate-yaml") >= 1 and hub.count("GET /api/agent-harnesses") >= 1
    back = download(hub, "tester/tiny", tmp_path / "dl")
    assert 'AutoModelForCausalLM.from_pretrained("tester/tiny")' in (back / "README.md").read_text()
    for rel in local:
        assert (back / rel).read_bytes() == (exported / rel).read_bytes(), rel
    assert set(local_files(back)) == set(local)
    # The card's own quickstart, run as a user would (HF_ENDPOINT pointing at this "Hub"), loads and generates.
    code = re.search(r"```python\n(.*?)```", (back / "README.md").read_text(), re.S).group(1)
    code = code.replace("max_new_tokens=64", "max_new_tokens=4") + "\nprint('IDS', inputs['input_ids'][0].tolist())\n"
    env = {**subprocess_env(hub, tmp_path / "home2"), "HF_ENDPOINT": hub.url}
    user = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert user.returncode == 0, user.stderr[-2000:]
    assert "IDS [1," in user.stdout  # <bos> (id 1 in the reference tokenizer) and then the prompt


def test_revision_creates_the_branch(exported: Path, hub: HubServer, tmp_path: Path):
    result = push(plan_push(exported, "tester/tiny", endpoint=hub.url, revision="dev", commit_message="to dev"))
    repo = hub.repos["tester/tiny"]
    assert set(repo.refs) == {"main", "dev"}
    assert hub.head("tester/tiny", "dev").message == "to dev" and result.commit_oid == repo.refs["dev"]
    assert set(hub.head("tester/tiny", "main").files) == {".gitattributes"}  # main untouched
    back = download(hub, "tester/tiny", tmp_path / "dl", revision="dev")
    assert (back / "model.safetensors").read_bytes() == (exported / "model.safetensors").read_bytes()


def test_create_pr_opens_a_pull_request(exported: Path, hub: HubServer):
    result = push(plan_push(exported, "tester/tiny", endpoint=hub.url, create_pr=True))
    assert result.pr_url == f"{hub.url}/tester/tiny/discussions/1"
    assert committed_paths(hub.head("tester/tiny", "refs/pr/1")) == set(local_files(exported))
    assert set(hub.head("tester/tiny").files) == {".gitattributes"}
    with pytest.raises(MythosError, match="--create-pr opens a pull request against main"):
        plan_push(exported, "tester/tiny", endpoint=hub.url, create_pr=True, revision="dev")


@pytest.fixture
def with_extras(exported: Path, tmp_path: Path) -> Path:
    """The export plus a GGUF file and a binary blob without an LFS pattern."""
    folder = Path(shutil.copytree(exported, tmp_path / "out"))
    (folder / "mythos-tiny-F16.gguf").write_bytes(b"GGUF" + os.urandom(4096))
    (folder / "extra.dat").write_bytes(b"\0\1\2" * 100)
    return folder


def test_include_exclude_and_lfs_plan_agree_with_the_server(with_extras: Path, hub: HubServer):
    plan = plan_push(with_extras, "tester/a", endpoint=hub.url)
    push(plan)
    head = hub.head("tester/a")
    assert lfs_paths(head) == {f.path_in_repo for f in plan.files if f.lfs}
    assert lfs_paths(head) == {"model.safetensors", "mythos-tiny-F16.gguf", "extra.dat"}  # pattern, pattern, binary
    push(plan_push(with_extras, "tester/b", endpoint=hub.url, exclude=["*.gguf"]))
    assert "mythos-tiny-F16.gguf" not in committed_paths(hub.head("tester/b"))
    assert "model.safetensors" in committed_paths(hub.head("tester/b"))
    push(plan_push(with_extras, "tester/c", endpoint=hub.url, include=["*.gguf", "README.md"]))
    assert committed_paths(hub.head("tester/c")) == {"mythos-tiny-F16.gguf", "README.md"}


def test_dry_run_plans_and_uploads_nothing(exported: Path, hub: HubServer):
    card = (exported / "README.md").read_bytes()
    run = CliRunner().invoke(
        app, ["push", str(exported), "--repo", "tester/tiny", "--dry-run", "--exclude", "*.gguf", "--endpoint", hub.url]
    )
    assert run.exit_code == 0, run.output
    assert "LFS (pattern *.safetensors)" in run.output and "tokenizer.json" in run.output
    assert "nothing uploaded" in run.output and "tester/tiny" in run.output
    assert hub.requests == [] and (exported / "README.md").read_bytes() == card  # nothing changed either


@pytest.mark.slow
def test_wrong_token_gives_one_clear_line_and_exit_2(exported: Path, hub: HubServer, tmp_path: Path):
    hub.require_tokens({TOKEN: "write"})
    cmd = [sys.executable, "-m", "mythos_convert", "push", str(exported), "--repo", "tester/tiny"]
    cmd += ["--skip-checks"]
    env = {**subprocess_env(hub, tmp_path, "hf_bad"), "HF_ENDPOINT": hub.url}  # the endpoint from the environment
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 2 and hub.count("POST /api/repos/create") == 1  # a 401 is not retried
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "401" in last and "--token" in last and "HF_TOKEN" in last
    assert "Traceback" not in run.stderr


def test_read_only_token_is_403(exported: Path, hub: HubServer):
    hub.require_tokens({"hf_read": "read"})
    with pytest.raises(MythosError, match=r"no write access to tester/tiny \(403"):
        push(plan_push(exported, "tester/tiny", endpoint=hub.url), token="hf_read")


def test_missing_repo_or_revision_is_404(exported: Path, hub: HubServer):
    hub.fail(r"POST /api/models/tester/tiny/commit/", status=404)
    with pytest.raises(MythosError, match=r"repository tester/tiny not found .*\(404\)"):
        push(plan_push(exported, "tester/tiny", endpoint=hub.url))


def test_server_errors_are_retried_then_succeed(exported: Path, hub: HubServer):
    hub.fail(r"POST /api/models/tester/tiny/commit/", status=500, times=2)
    result = push(plan_push(exported, "tester/tiny", endpoint=hub.url), attempts=4, backoff=0.01)
    assert hub.count(r"POST /api/models/tester/tiny/commit/") == 3
    assert result.commit_oid == hub.head("tester/tiny").oid
    assert committed_paths(hub.head("tester/tiny")) == set(local_files(exported))


def test_persistent_server_errors_give_up_with_a_clear_message(exported: Path, hub: HubServer):
    hub.fail(r"POST /api/repos/create", status=503, times=-1)
    with pytest.raises(MythosError, match=r"answered 503 .* after 3 attempt"):
        push(plan_push(exported, "tester/tiny", endpoint=hub.url), attempts=3, backoff=0.01)


def test_dropped_connections_are_retried_then_reported(exported: Path, hub: HubServer):
    hub.drop(r"POST /api/repos/create")
    with pytest.raises(MythosError) as err:
        push(plan_push(exported, "tester/tiny", endpoint=hub.url), attempts=3, backoff=0.01)
    assert hub.count(r"POST /api/repos/create") == 3
    assert "network failure" in str(err.value) and "3 attempt(s)" in str(err.value) and "\n" not in str(err.value)


def test_no_token_says_how_to_get_one(exported: Path, hub: HubServer, monkeypatch):
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(MythosError, match=r"no Hugging Face token: pass --token, set HF_TOKEN or run `hf auth login`"):
        push(plan_push(exported, "tester/tiny", endpoint=hub.url))
    assert hub.requests == []


def test_bad_repo_id_is_refused(exported: Path):
    with pytest.raises(MythosError, match="OWNER/NAME"):
        plan_push(exported, "no-slash")


def test_a_good_export_passes_every_check(exported: Path):
    assert check_folder(exported) == []


def test_checks_list_every_failure(exported: Path, hub: HubServer, tmp_path: Path):
    broken = Path(shutil.copytree(exported, tmp_path / "broken"))
    (broken / "tokenizer.json").unlink()
    (broken / "README.md").write_text("---\nlicense: [unclosed\n---\n# card\n")
    record_result(broken, "hf", {"passed": False, "max_abs_diff": 0.5, "tolerance": 1e-4})
    with (broken / "model.safetensors").open("r+b") as fh:
        fh.truncate(fh.seek(0, 2) - 100)
    problems = check_folder(broken)
    assert len(problems) == 4, problems
    assert any("truncated" in p for p in problems) and any("tokenizer.json is missing" in p for p in problems)
    assert any("front matter does not parse" in p for p in problems)
    assert any("last verify of hf failed (max abs diff 0.5" in p for p in problems)
    run = CliRunner().invoke(app, ["push", str(broken), "--repo", "tester/tiny", "--endpoint", hub.url])
    assert isinstance(run.exception, MythosError)
    assert "fails 4 check(s): (1)" in str(run.exception) and "--skip-checks" in str(run.exception)
    assert hub.requests == []  # nothing was sent


def test_sharded_index_consistency(tiny_ckpt: Path, tmp_path: Path):
    out = export_hf(tiny_ckpt, tmp_path / "sharded", max_shard_size=200_000, verify=False, card=False).folder
    shards = sorted(p.name for p in out.glob("*.safetensors"))
    assert len(shards) > 1 and (out / "model.safetensors.index.json").is_file()
    from mythos_convert.hub.checks import check_weights

    assert check_weights(out) == []
    (out / shards[-1]).unlink()
    problems = check_weights(out)
    assert any(f"weights file {shards[-1]} is missing" in p for p in problems)


def test_unverified_folder_or_gguf_is_refused(exported: Path, with_extras: Path):
    uploaded = set(local_files(with_extras))
    assert check_folder(with_extras, uploaded) == [
        "mythos-tiny-F16.gguf was never verified: run `mythos-convert verify` on it (or --exclude it)"
    ]
    assert check_folder(with_extras, uploaded - {"mythos-tiny-F16.gguf"}) == []  # --exclude '*.gguf'
    (with_extras / "verify.json").unlink()
    assert any("never verified (no verify.json)" in p for p in check_folder(with_extras))


def test_private_repo_and_a_repeated_push_is_a_no_op(exported: Path, hub: HubServer):
    first = push(plan_push(exported, "tester/secret", endpoint=hub.url, private=True))
    assert hub.repos["tester/secret"].private
    again = push(plan_push(exported, "tester/secret", endpoint=hub.url, private=True))
    assert again.commit_oid == first.commit_oid and len(hub.commits("tester/secret")) == 2


@pytest.fixture(scope="module")
def with_ggufs(exported: Path, tmp_path_factory) -> Path:
    """The export plus verified F16 and Q8_0 files, a Modelfile, and an eval (eval.json, the chart, the card)."""
    from mythos_convert.api import evaluate, export_gguf

    folder = Path(shutil.copytree(exported, tmp_path_factory.mktemp("gguf-push") / "out"))
    assert export_gguf(folder, "f16,q8_0", modelfile=True).passed
    evaluate([folder], chunks=2)
    return folder


@pytest.mark.slow
@pytest.mark.llama_cpp
def test_gguf_repo_holds_the_ggufs_and_a_card_naming_its_base_model(with_ggufs: Path, hub: HubServer, tmp_path):
    folder = Path(shutil.copytree(with_ggufs, tmp_path / "out"))  # the push rewrites the card's GGUF link
    cmd = [sys.executable, "-m", "mythos_convert", "push", str(folder), "--repo", "tester/tiny"]
    cmd += ["--gguf-repo", "tester/tiny-GGUF", "--endpoint", hub.url, "--quiet"]
    run = subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env(hub, tmp_path / "home"), timeout=600)
    assert run.returncode == 0, run.stderr
    urls = run.stdout.strip().splitlines()[-2:]
    assert urls == [
        f"{hub.url}/tester/tiny/commit/{hub.head('tester/tiny').oid}",
        f"{hub.url}/tester/tiny-GGUF/commit/{hub.head('tester/tiny-GGUF').oid}",
    ]
    ggufs = {p.name for p in folder.glob("*.gguf")}
    assert len(ggufs) == 2
    main = committed_paths(hub.head("tester/tiny"))
    assert not main & (ggufs | {"Modelfile"}) and {"README.md", "gguf-quality.png", "eval.json"} <= main
    assert committed_paths(hub.head("tester/tiny-GGUF")) == ggufs | {"Modelfile", "gguf-quality.png", "README.md"}
    assert lfs_paths(hub.head("tester/tiny-GGUF")) >= ggufs

    back = download(hub, "tester/tiny-GGUF", tmp_path / "dl-gguf")
    for name in ggufs | {"Modelfile", "gguf-quality.png"}:
        assert (back / name).read_bytes() == (folder / name).read_bytes(), name
    card = (back / "README.md").read_text()
    data = ModelCard(card).data.to_dict()
    assert data["base_model"] == "tester/tiny" and data["base_model_relation"] == "quantized"
    assert data["tags"][0] == "gguf" and data["library_name"] == "gguf"
    assert card_problems(card) == []
    metrics = [m for r in data["model-index"][0]["results"] for m in r["metrics"]]
    assert {m["name"] for m in metrics} == {f"Perplexity ({name}, llama.cpp, flash attention)" for name in ggufs}
    for name in ggufs:
        assert re.search(
            rf"\| `{re.escape(name)}` \| (F16|Q8_0) \| [\d.]+ [KM]iB \| [\d.]+ \| [\d.]+ \| [\d.e-]+ \| [\d.]+% \|",
            card,
        )
    assert "](gguf-quality.png)" in card and f"]({hub.url}/tester/tiny)" in card

    main_card = (download(hub, "tester/tiny", tmp_path / "dl-main") / "README.md").read_text()
    assert f"[tester/tiny-GGUF]({hub.url}/tester/tiny-GGUF)" in main_card
    assert main_card.count("<!-- gguf-repo -->") == 1


def test_gguf_repo_is_refused_without_ggufs_or_as_the_same_repo(exported: Path, with_ggufs: Path):
    from mythos_convert.hub.gguf_repo import checked_pushes

    with (
        pytest.raises(MythosError, match=r"holds no \.gguf files for --gguf-repo"),
        checked_pushes(exported, "tester/tiny", "tester/tiny-GGUF", dry_run=True),
    ):
        pass
    with (
        pytest.raises(MythosError, match="--gguf-repo is --repo"),
        checked_pushes(with_ggufs, "tester/tiny", "tester/tiny", dry_run=True),
    ):
        pass
    with (
        pytest.raises(MythosError, match="not a Hub repo id"),
        checked_pushes(with_ggufs, "tester/tiny", "no slash", dry_run=True),
    ):
        pass
    with (
        pytest.raises(MythosError, match=r"no \.gguf file of .* is selected for --gguf-repo: check --exclude"),
        checked_pushes(with_ggufs, "tester/tiny", "tester/tiny-GGUF", dry_run=True, exclude=["*.gguf"]),
    ):
        pass
    with checked_pushes(with_ggufs, "tester/tiny", "tester/tiny-GGUF", dry_run=True) as (main, gguf):
        assert not any(f.path_in_repo.endswith(".gguf") or f.path_in_repo == "Modelfile" for f in main.files)
        assert [f.path_in_repo for f in gguf.files if f.content is not None] == ["README.md"]
