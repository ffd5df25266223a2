"""Layerwise verify: native blocks against transformers' blocks on the export's tensors, one at a time.

Clean exports (HF float32/bfloat16, GGUF F32/F16; native side a ckpt.pt or a two-rank DCP folder)
pass; the tampered exports of tests/test_verify_tampered.py fail naming the block; the gate is held
just above and just below its bound; quantized GGUF files are refused by name; `verify` says which
mode it ran.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from dcpkit import save_pair
from test_verify_tampered import CASES, _edit_weight

from mythos_convert.api import export_gguf, export_hf
from mythos_convert.errors import MythosError
from mythos_convert.source import open_source
from mythos_convert.verify.fit import choose_mode
from mythos_convert.verify.gates import LAYERWISE_REL
from mythos_convert.verify.layerwise import export_side, layerwise_compare, verify_layerwise

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def exports(tiny_ckpt, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("lw")
    out = {
        "hf-float32": export_hf(tiny_ckpt, root / "hf", verify=False, card=False).folder,
        "hf-bfloat16": export_hf(tiny_ckpt, root / "hfbf", verify=False, card=False, dtype="bfloat16").folder,
    }
    for w in export_gguf(tiny_ckpt, "f32,f16,q8_0", root / "m-{ftype}.gguf", verify=False).written:
        out[w.path.name] = w.path
    return out


@pytest.mark.parametrize("name", ["hf-float32", "hf-bfloat16", "m-F32.gguf", "m-F16.gguf"])
def test_a_clean_export_passes_every_stage(name, exports, tiny_ckpt, tiny_cfg):
    r = verify_layerwise(exports[name], tiny_ckpt, show=False)
    assert r["passed"], r["failures"]
    assert [s["name"] for s in r["stages"]] == ["embedding", "block 0", "block 1", "output head"]
    assert tiny_cfg.n_layers == 2 and r["worst"] < 4e-6


def test_the_native_side_can_be_a_two_rank_dcp_folder(tmp_path, tiny_cfg, ref_tokenizer_path):
    _, folder = save_pair(tmp_path, tiny_cfg, ref_tokenizer_path, world_size=2)
    hf = export_hf(folder, tmp_path / "hf", verify=False, card=False).folder
    r = verify_layerwise(hf, show=False)  # the DCP folder recorded at export time
    assert r["passed"] and r["reference"] == folder.name, r["failures"]


# The tampered exports of test_verify_tampered that change what a block computes, and the stage
# layerwise verify must name first. Tokenizer edits are not what layerwise compares (whole verify
# and the tokenizer checks catch them); the header's head_count_kv makes the file unreadable as
# the native shape (refused on opening); the Q4_0 case is a quantized file (refused by type).
FIRST_BAD_STAGE = {
    "rope_theta changed in config.json": "block 0",
    "rms_norm_eps changed in config.json": "block 0",
    "k_proj scaled by 1.01 (HF)": "block 0",
    "NaN in one weight (HF)": "block 1",
    "q/k rows not permuted (GGUF)": "block 0",
    "k permuted with the query head count (GGUF)": "block 0",
    "attn_k scaled by 1.01 (GGUF)": "block 0",
    "NaN in one weight (GGUF F32)": "block 0",
}
REFUSED = {
    "head_count_kv wrong in the GGUF header": "tensor blk.0.attn_k.weight has shape",
    "NaN block scale in a Q4_0 file (finite logits)": "holds Q4_0(, Q8_0)? tensors: layerwise verify compares float exports",
}


def _tampered(name: str, exports, tiny_ckpt, tmp_path, monkeypatch) -> Path:
    case = CASES[name]
    if case.kind == "hf":
        folder = tmp_path / "hf"
        shutil.copytree(exports["hf-float32"], folder)
        target = case.tamper(folder, monkeypatch, tiny_ckpt)
    else:
        target = case.tamper(tmp_path / f"t-{case.kind}.gguf", monkeypatch, tiny_ckpt)
    monkeypatch.undo()
    return target


def test_the_table_is_covered():
    assert set(FIRST_BAD_STAGE) | set(REFUSED) <= set(CASES)
    assert len(FIRST_BAD_STAGE) + len(REFUSED) >= 10


@pytest.mark.parametrize("name", list(FIRST_BAD_STAGE))
def test_a_tampered_export_fails_naming_the_block(name, exports, tiny_ckpt, tmp_path, monkeypatch):
    target = _tampered(name, exports, tiny_ckpt, tmp_path, monkeypatch)
    r = verify_layerwise(target, tiny_ckpt, show=False)
    assert not r["passed"]
    assert r["failures"][0].startswith(FIRST_BAD_STAGE[name] + ":"), r["failures"]
    assert all(s["rel"] <= 4e-6 for s in r["stages"] if s["name"] == "embedding")


@pytest.mark.parametrize("name", list(REFUSED))
def test_what_layerwise_cannot_judge_is_refused_by_name(name, exports, tiny_ckpt, tmp_path, monkeypatch):
    target = _tampered(name, exports, tiny_ckpt, tmp_path, monkeypatch)
    with pytest.raises(MythosError, match=REFUSED[name]):
        verify_layerwise(target, tiny_ckpt, show=False)


def test_a_clean_q8_0_file_is_refused_with_the_way_out(exports, tiny_ckpt):
    with pytest.raises(MythosError, match=r"m-Q8_0.gguf holds Q8_0 tensors.*verify it whole \(--whole\)"):
        verify_layerwise(exports["m-Q8_0.gguf"], tiny_ckpt, show=False)


def test_the_gate_is_4e_6_and_holds_at_its_edge(exports, tiny_ckpt, tmp_path):
    """The final norm scaled by 1 + e scales the logits by exactly 1 + e: the head stage reads e."""
    assert LAYERWISE_REL == 4e-6
    native = open_source(tiny_ckpt)
    results = {}
    for e in (3.4e-6, 4.6e-6):
        folder = tmp_path / f"norm-{e}"
        shutil.copytree(exports["hf-float32"], folder)
        _edit_weight(folder, "model.norm.weight", lambda w, e=e: w * (1 + e))
        r = layerwise_compare(native, export_side(folder), [[1, 5, 9, 200, 7, 3, 88, 41]])
        results[e] = r
        head = r["stages"][-1]
        assert head["name"] == "output head" and abs(head["rel"] - e) < 3e-7, head
    assert results[3.4e-6]["passed"]
    assert not results[4.6e-6]["passed"] and results[4.6e-6]["failures"][0].startswith("output head:")


def test_auto_mode_goes_layerwise_only_where_two_models_do_not_fit(exports, tiny_cfg):
    folder = exports["hf-float32"]
    need = 2 * 4 * tiny_cfg.num_parameters()  # float32 weights, twice
    stored = (folder / "model.safetensors").stat().st_size
    assert choose_mode(folder, "auto", lambda: tiny_cfg, available=need - 1)[0] == "layerwise"
    assert choose_mode(folder, "auto", lambda: tiny_cfg, available=need + 1)[0] == "whole"
    unread = choose_mode(folder, "auto", lambda: pytest.fail("the config was read"), available=4 * stored)
    assert unread[0] == "whole" and "at most" in unread[1]  # the files' sizes were enough to decide
    assert choose_mode(folder, "whole", lambda: tiny_cfg, available=1) == ("whole", "--whole asked for")


def _verify_cli(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "mythos_convert", "verify", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def test_the_command_says_which_mode_ran_and_fails_a_tampered_folder(exports, tiny_ckpt, tmp_path):
    run = _verify_cli(str(exports["hf-float32"]), "--ckpt", str(tiny_ckpt), "--layerwise")
    assert run.returncode == 0, run.stdout + run.stderr
    out = " ".join((run.stdout + run.stderr).split())
    assert "verify: layerwise (--layerwise asked for)" in out and "passed" in out
    folder = tmp_path / "bad"
    shutil.copytree(exports["hf-float32"], folder)
    _edit_weight(folder, "model.layers.1.mlp.down_proj.weight", lambda w: w * 1.01)
    bad = _verify_cli(str(folder), "--ckpt", str(tiny_ckpt), "--layerwise", "--quiet")
    assert bad.returncode != 0 and "block 1:" in bad.stderr, bad.stderr
    quantized = _verify_cli(str(exports["m-Q8_0.gguf"]), "--ckpt", str(tiny_ckpt), "--layerwise", "--quiet")
    lines = quantized.stderr.strip().splitlines()
    assert quantized.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:"), quantized.stderr
