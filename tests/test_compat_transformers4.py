"""The export loads right in transformers 4.x (4.46 and the last, 4.57), in venvs this test builds.

4.x ignores v5's `rope_parameters` and silently uses theta 10000, so the checkpoint here uses
theta 500000: only the hybrid config makes 4.x compute the right logits. Each venv gets its own
transformers/tokenizers/huggingface_hub and reaches the main venv's torch and numpy through a
`.pth` file placed after its own site-packages (checked: the probe reports where it imported from).
Venvs are cached under `.compat/` (or `$MYTHOS_COMPAT_DIR`); the first run needs the package index.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch
from helpers import compat_root, make_checkpoint, tiny_config

from mythos_convert.api import export_hf
from mythos_convert.data.tokenizer import load_tokenizer, special_tokens
from mythos_convert.formats.checkpoint import load_checkpoint, load_model
from mythos_convert.verify.inputs import PROMPTS, TOKENIZER_TEXTS, random_ids

pytestmark = [pytest.mark.slow, pytest.mark.compat]

ENVS = {
    "4.46.3": ("transformers==4.46.3", "tokenizers==0.20.3", "huggingface_hub==0.26.5"),
    "4.57.6": ("transformers==4.57.6", "tokenizers==0.22.2", "huggingface_hub==0.36.2"),
}
PROBE = Path(__file__).parent / "compat" / "probe_transformers4.py"
THETA = 500000.0


def _build_venv(version: str) -> Path:
    """A venv with the pinned 4.x packages whose other imports fall through to the main venv."""
    spec = list(ENVS[version])
    final = compat_root() / f"transformers-{version}"
    marker = final / "mythos-compat.json"
    if marker.is_file() and json.loads(marker.read_text()) == {"spec": spec, "main": sys.prefix}:
        return final / "bin" / "python"
    tmp = compat_root() / f".transformers-{version}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(tmp)], check=True)
    python = tmp / "bin" / "python"
    own = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    main = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    # .pth lines are appended to sys.path after the venv's own site-packages: its packages win.
    (Path(own) / "zz_mythos_main_venv.pth").write_text("\n".join(main) + "\n")
    # pip sees the main venv's packages through the .pth, so it downloads only what differs; it
    # never uninstalls them ("outside environment").
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", *spec],
        capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode:
        pytest.fail(f"could not install {spec} into {tmp}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    (tmp / "mythos-compat.json").write_text(json.dumps({"spec": spec, "main": sys.prefix}))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)  # venv scripts hard-code their path, so re-point bin/python's prefix:
    return _fix_prefix(final, tmp)


def _fix_prefix(final: Path, old: Path) -> Path:
    """venv records its folder in pyvenv.cfg and scripts; the interpreter itself only needs pyvenv.cfg."""
    cfg = final / "pyvenv.cfg"
    cfg.write_text(cfg.read_text().replace(str(old), str(final)))
    return final / "bin" / "python"


@pytest.fixture(scope="session", params=list(ENVS))
def compat_python(request) -> tuple[str, Path]:
    compat_root().mkdir(parents=True, exist_ok=True)
    return request.param, _build_venv(request.param)


@pytest.fixture(scope="module")
def theta_export(tmp_path_factory, ref_tokenizer_path) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("compat")
    ckpt = make_checkpoint(folder / "ckpt.pt", tiny_config(rope_theta=THETA))
    return ckpt, export_hf(ckpt, folder / "hf", tokenizer=ref_tokenizer_path, verify=False, card=False).folder


def test_transformers4_loads_export(compat_python, theta_export, ref_tokenizer_path):
    version, python = compat_python
    ckpt, folder = theta_export
    tok = load_tokenizer(ref_tokenizer_path)
    specials = special_tokens(tok)
    ids = [specials.id("bos"), *tok.encode(PROMPTS[-1], add_special_tokens=False).ids][:64] + random_ids(512, 24)
    texts = [t for t in (*TOKENIZER_TEXTS, *PROMPTS) if t]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [str(python), str(PROBE), str(folder), json.dumps(ids), json.dumps(texts)],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])

    # the venv really ran its own pinned packages, not the main venv's 5.x
    pins = dict(p.split("==") for p in ENVS[version])
    assert got["versions"] == {k.replace("-", "_"): v for k, v in pins.items()}
    venv_root = str(Path(python).parent.parent)
    assert all(path.startswith(venv_root) for path in got["files"].values()), got["files"]

    assert not any(got["loading_info"].get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    assert got["on_meta"] == [] and got["tied"]
    assert got["rope_theta"] == pytest.approx(THETA, rel=1e-6)  # not the silent 10000 fallback
    assert got["rms_norm_eps"] == 1e-5 and got["torch_dtype"] == "torch.float32"

    assert got["tokenizer_class"] == "PreTrainedTokenizerFast"
    bos, eos = specials.id("bos"), specials.id("eos")
    assert got["bos_eos"] == [bos, eos]
    for text, encoded in zip(texts, got["encoded"], strict=True):
        assert encoded[0] == bos and encoded[-1] != eos
        assert encoded[1:] == tok.encode(text, add_special_tokens=False).ids

    native = load_model(load_checkpoint(ckpt))
    with torch.no_grad():
        ref = native(torch.tensor([ids]))[0]
        seq = ids[:16]
        for _ in range(12):
            seq.append(int(native(torch.tensor([seq]))[0, -1].argmax()))
    assert (ref - torch.tensor(got["logits"])).abs().max().item() <= 1e-4
    assert got["generated"] == seq[16:]
