"""`mythos-convert space`: the generated Gradio app, run for real and used as people use it.

The app runs as a Space runs it (`python app.py`) on 127.0.0.1 against a local export of the
reference implementation's checkpoint (`MYTHOS_MODEL`), and is asked through `gradio_client`
and through the page in headless Chromium (Debian's package, installed by the fixture with
apt-get when missing), driven by Playwright. The expected text is the reference's own greedy
generation. The push goes to the Hub emulator (tests/hub_server.py) as a Space.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import REFERENCE, export_reference
from hub_server import HubServer
from servers import free_port, serve
from tokenizers import Tokenizer

from mythos_convert.errors import MythosError
from mythos_convert.hub.files import PlannedFile
from mythos_convert.hub.push import plan_push
from mythos_convert.hub.space import push_space, write_space

pytestmark = pytest.mark.slow

TOKEN = "hf_test_write_token"
EOS = 2
MODEL_ID = "tester/mythos-ref"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def greedy_texts(reference) -> list[str]:
    """The reference's greedy continuation of each prompt up to its first <eos> (where generate stops), decoded."""
    tok = Tokenizer.from_file(str(REFERENCE / "tokenizer" / "tokenizer.json"))
    texts = []
    for ids, greedy in zip(reference["ids"], reference["greedy"], strict=True):
        new = greedy[len(ids) :]
        texts.append(tok.decode(new[: new.index(EOS)] if EOS in new else new))
    return texts


@pytest.fixture(scope="module")
def export(tmp_path_factory, reference) -> Path:
    return export_reference(tmp_path_factory.mktemp("space-model") / "hf")


@pytest.fixture(scope="module")
def space_dir(tmp_path_factory) -> Path:
    return write_space(tmp_path_factory.mktemp("space") / "space", MODEL_ID).folder


@pytest.fixture(scope="module")
def app(space_dir, export, tmp_path_factory):
    """The generated app.py, run as a Space runs it, on 127.0.0.1, loading the local export."""
    port = free_port()
    env = {
        **os.environ,
        "MYTHOS_MODEL": str(export),
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_OFFLINE": "1",
        "NO_PROXY": "127.0.0.1,localhost",
    }
    log = tmp_path_factory.mktemp("space-log") / "app.log"
    with serve([sys.executable, "app.py"], port=port, ready_path="/", log=log, env=env, cwd=space_dir) as server:
        yield server


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's Chromium: installed with apt-get when missing (CI and developers run as root)."""
    found = shutil.which("chromium")
    if found:
        return found
    if os.geteuid() != 0:
        pytest.skip("Debian's chromium is not installed and this user cannot apt-get it: apt-get install chromium")
    for step in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "chromium"]):
        done = subprocess.run(
            step, capture_output=True, text=True, timeout=900, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        )
        assert done.returncode == 0, f"{' '.join(step)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return shutil.which("chromium") or pytest.fail("apt-get installed chromium but it is not on PATH")


def test_space_files(space_dir):
    import gradio

    assert sorted(p.name for p in space_dir.iterdir()) == ["README.md", "app.py", "requirements.txt"]
    card = (space_dir / "README.md").read_text()
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py" and meta["models"] == [MODEL_ID]
    assert meta["sdk_version"] == gradio.__version__ == "6.31.0"  # the Gradio these tests run the app with
    assert (space_dir / "requirements.txt").read_text().split() == ["transformers>=4.46,<6", "torch>=2.5,<3"]
    source = (space_dir / "app.py").read_text()
    compile(source, "app.py", "exec")
    assert 'os.environ.get("MYTHOS_MODEL", "tester/mythos-ref")' in source


def test_app_answers_gradio_client_with_native_greedy_text(app, reference, greedy_texts):
    from gradio_client import Client

    client = Client(app.url + "/", verbose=False)
    params = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/generate"]["parameters"]
    defaults = {p["parameter_name"]: p["parameter_default"] for p in params}
    assert defaults["temperature"] == 0.8 and defaults["top_p"] == 0.9  # the card's (generation_config.json)
    for prompt, text in zip(reference["prompts"], greedy_texts, strict=True):
        assert client.predict(prompt, 20, 0, 0.9, api_name="/generate") == text, app.tail()


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_page_in_headless_chromium(app, chromium, reference, greedy_texts, tmp_path):
    """A person's path: open the page, type a prompt, set temperature 0, press Generate, read the output."""
    from playwright.sync_api import sync_playwright

    shot = tmp_path / "space.png"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            hosts: set[str] = set()
            page.on("request", lambda request: hosts.add(request.url.split("/")[2]))
            page.goto(app.url + "/", wait_until="networkidle", timeout=60_000)
            page.locator("#prompt textarea").fill(reference["prompts"][0])
            for slider, value in (("#temperature", "0"), ("#max_new_tokens", "20")):
                box = page.locator(f"{slider} input[type=number]")
                box.fill(value)
                box.press("Enter")
            page.locator("#generate").click()
            page.wait_for_function(
                "document.querySelector('#output textarea').value.length > 0", timeout=60_000, polling=200
            )
            output = page.locator("#output textarea").input_value()
            page.screenshot(path=str(shot), full_page=True)
            boxes = {name: page.locator(f"#{name}").bounding_box() for name in ("prompt", "output")}
        finally:
            browser.close()
    assert output == greedy_texts[0]
    assert hosts == {app.url.split("/")[2]}  # the page loads nothing from elsewhere (fonts, analytics)
    width, height = _png_size(shot)
    for box in boxes.values():  # both fields lie inside the screenshot
        assert box and box["width"] > 100 and box["y"] + box["height"] <= height and box["x"] + box["width"] <= width
    assert boxes["prompt"]["y"] < boxes["output"]["y"]


def _env(hub: HubServer, home: Path) -> dict[str, str]:
    env = {**os.environ, **hub.client_env(home, TOKEN), "MYTHOS_PUSH_BACKOFF": "0.01"}
    env.pop("HF_ENDPOINT")  # only --endpoint names the server, as a user's shell would
    return env


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mythos_convert", *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_push_reaches_the_hub_as_a_gradio_space(tmp_path):
    from huggingface_hub import snapshot_download

    out = tmp_path / "space"
    with HubServer() as hub:
        env = _env(hub, tmp_path / "hf_home")
        dry = _cli(["space", str(out), "--repo", "tester/mythos-ref-demo", "--endpoint", hub.url, "--dry-run"], env)
        assert dry.returncode == 0, dry.stderr
        assert "would upload 3 files" in dry.stdout and f"{hub.url}/spaces/tester/mythos-ref-demo" in dry.stdout
        assert hub.requests == [] and (out / "app.py").is_file()  # nothing sent

        done = _cli(["space", str(out), "--repo", "tester/mythos-ref-demo", "--endpoint", hub.url, "--force"], env)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip().splitlines()[-1] == f"{hub.url}/spaces/tester/mythos-ref-demo"
        repo = hub.repos["spaces/tester/mythos-ref-demo"]
        assert (repo.repo_type, repo.sdk) == ("space", "gradio") and "tester/mythos-ref-demo" not in hub.repos
        head = hub.head("spaces/tester/mythos-ref-demo")
        assert {"app.py", "requirements.txt", "README.md"} <= set(head.files)
        back = Path(
            snapshot_download(
                "tester/mythos-ref-demo", repo_type="space", endpoint=hub.url, token=TOKEN, local_dir=tmp_path / "back"
            )
        )
        for name in ("app.py", "requirements.txt", "README.md"):
            assert (back / name).read_bytes() == (out / name).read_bytes()
        assert 'os.environ.get("MYTHOS_MODEL", "tester/mythos-ref")' in (back / "app.py").read_text()


def test_push_rechecks_for_credentials_right_before_the_commit(tmp_path, monkeypatch):
    """hub's safety checks hold for Spaces: a token file appearing after the plan is never uploaded."""
    folder = write_space(tmp_path / "space", MODEL_ID).folder
    with HubServer() as hub:
        plan = plan_push(folder, "tester/mythos-ref-demo", endpoint=hub.url)
        (folder / "notes.txt").write_text("hf_" + "A" * 34 + "\n")
        plan.files.append(PlannedFile("notes.txt", folder / "notes.txt", 38, False, "text"))
        with pytest.raises(MythosError, match=r"refusing to upload credentials: notes\.txt"):
            push_space(plan, TOKEN)
        assert hub.repos == {}
        (folder / "notes.txt").unlink()
        (folder / "link").symlink_to("/etc/passwd")
        with pytest.raises(MythosError, match="link"):
            plan_push(folder, "tester/mythos-ref-demo", endpoint=hub.url)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--repo", "tester/mythos"], "does not end in -demo"),
        (["--repo", "not a repo"], "is not a Hub repo id"),
        (["--repo", "tester/x-demo", "--model", "bad id"], "is not a Hub repo id"),
        ([], "--repo is required"),
    ],
)
def test_bad_input_is_one_error_line(tmp_path, args, message):
    done = _cli(["space", str(tmp_path / "space"), *args, "--dry-run"], {**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and done.stderr.startswith("error: ")
    assert message in done.stderr and not (tmp_path / "space").exists()


def test_existing_space_folder_needs_force(space_dir):
    done = _cli(["space", str(space_dir), "--repo", "tester/mythos-ref-demo", "--dry-run"], dict(os.environ))
    assert done.returncode == 2 and done.stderr.startswith("error: ") and "--force" in done.stderr
