"""`mythos-convert eval` on the reference implementation's own checkpoint, through real engines:
the native model, transformers and llama.cpp (llama-cpp-python), and the real CLI for bad input."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import REFERENCE, require_reference

from mythos_convert.api import export_gguf, export_hf
from mythos_convert.data.held_out import windows
from mythos_convert.engines.llama_buffers import extra_buffer_names
from mythos_convert.engines.llamacpp import gguf_engine
from mythos_convert.engines.native import native_engine
from mythos_convert.evaluate.measure import measure
from mythos_convert.evaluate.record import bound_eval, load_eval, read_gguf_header
from mythos_convert.evaluate.run import run_eval
from mythos_convert.formats.checkpoint import load_checkpoint

pytestmark = pytest.mark.llama_cpp

TOKENIZER = REFERENCE / "tokenizer" / "tokenizer.json"


@pytest.fixture(scope="module")
def reference() -> Path:
    return require_reference("ref_small.pt")


@pytest.fixture(scope="module")
def folders(tmp_path_factory, reference) -> dict[str, Path]:
    """`hf`: the fixture's HF export alone; `out`: a copy with F32, F16, Q8_0 and Q4_0 GGUF files in it."""
    root = tmp_path_factory.mktemp("eval")
    hf = export_hf(reference, root / "hf", tokenizer=TOKENIZER, verify=False).folder
    out = root / "out"
    shutil.copytree(hf, out)
    export_gguf(out, "f32,f16,q8_0,q4_0", verify=False)
    return {"hf": hf, "out": out}


def gguf_of(folder: Path, label: str) -> Path:
    return next(folder.glob(f"*-{label}.gguf"))


def cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "mythos_convert", "eval", *map(str, args), "--quiet"]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=600)


def test_perplexity_of_every_engine_is_the_fixtures_own(folders, reference):
    """native, transformers and llama.cpp F32 on the fixture's sequence: exp(mean cross-entropy) of the
    reference implementation's own logits for it (computed here, without running our model). llama.cpp
    without flash attention (as verify runs it) is float32 to 1e-5; with it (eval's default, llama.cpp's
    own) its CPU kernel rounds differently: 2.1e-5 measured, gated at 1e-4."""
    saved = torch.load(REFERENCE / "ref_small_logits.pt")
    ids, logits = saved["ids"][0], saved["logits"]
    expected = math.exp(torch.nn.functional.cross_entropy(logits[:-1].double(), ids[1:]).item())
    f32 = gguf_of(folders["out"], "F32")
    targets = [reference, folders["hf"], f32]
    report = run_eval(targets, tokens=ids.numpy(), ctx=100, tokenizer=TOKENIZER, record=False, flash_attn=False)
    ppl = {r["engine"]: r["perplexity"] for r in report.rows}
    assert set(ppl) == {"native (torch)", "transformers", "llama.cpp"}
    for engine, value in ppl.items():
        assert abs(value - expected) / expected < 1e-5, (engine, value, expected)
    assert report.windows == 1 and report.scored_tokens == 99  # one window: every prediction scored
    assert all(r["scored_tokens"] == 99 for r in report.rows)
    flash = run_eval([reference, f32], tokens=ids.numpy(), ctx=100, tokenizer=TOKENIZER, record=False)
    row = next(r for r in flash.rows if r["kind"] == "gguf")
    assert row["engine"] == "llama.cpp, flash attention"
    assert abs(row["perplexity"] - expected) / expected < 1e-4, (row["perplexity"], expected)


def test_kl_divergence_of_a_file_against_itself_is_zero(folders):
    path = gguf_of(folders["out"], "Q4_0")
    header = read_gguf_header(path)
    wins = windows(torch.arange(256).numpy() % 500 + 5, 128)
    a, b = (
        gguf_engine(n, path, header.label, len(header.tokens), 128, flash_attn=True, repack=True) for n in "ab"
    )  # two loads of one file
    try:
        kl = measure([a, b], wins, reference=a)["b"].divergence.summary()
    finally:
        a.close()
        b.close()
    assert kl.mean_kl == 0.0 and kl.max_kl == 0.0 and kl.top1_agreement == 1.0
    assert kl.positions == 127 + 63


def test_without_flash_attention_an_f32_file_is_float32_exact(folders, reference):
    """--no-flash-attn (as verify runs llama.cpp): F32 at float rounding. llama.cpp's CPU flash attention
    is not float32-exact even with the F32 KV cache: over all 478 windows of the fixture F32's mean KL
    is 3.2e-12 without it, 6.1e-8 with it (F16's 1.5e-7 / 2.0e-7; Q8_0 1.10e-4 / 1.11e-4; Q4_0 3.43e-3 both)."""
    f32, q4 = gguf_of(folders["out"], "F32"), gguf_of(folders["out"], "Q4_0")
    report = run_eval([reference, f32, q4], chunks=8, tokenizer=TOKENIZER, record=False, flash_attn=False)
    rows = {r["type"]: r for r in report.rows if r["kind"] == "gguf"}
    assert rows["F32"]["engine"] == "llama.cpp"
    repacked = "CPU_REPACK" in extra_buffer_names()
    assert rows["Q4_0"]["engine"] == ("llama.cpp, repacked weights" if repacked else "llama.cpp")
    assert rows["F32"]["kl"]["mean_kl"] < 1e-9 and rows["F32"]["kl"]["top1_agreement"] == 1.0
    ref = next(r for r in report.rows if r["reference"])
    assert abs(rows["F32"]["perplexity"] - ref["perplexity"]) / ref["perplexity"] < 1e-6  # 1.4e-7 on these 8
    assert 1e-3 < rows["Q4_0"]["kl"]["mean_kl"] < 1e-2  # the quantization, as with flash attention


def test_f16_below_q8_0_below_q4_0_in_kl_divergence(folders):
    """The ordering llama.cpp users rely on, on the embedded corpus's held-out text (32 windows of 128),
    llama.cpp run as its own tools run it (flash attention). Measured over all 478 windows: F32 6.1e-8
    < F16 2.0e-7 < Q8_0 1.1e-4 < Q4_0 3.4e-3."""
    report = run_eval([folders["out"]], chunks=32, record=False)
    rows = {r["type"]: r for r in report.rows if r["kind"] == "gguf"}
    mean = {label: rows[label]["kl"]["mean_kl"] for label in ("F32", "F16", "Q8_0", "Q4_0")}
    assert mean["F32"] < 1e-6, mean  # flash attention's own rounding
    assert mean["F16"] < mean["Q8_0"] < mean["Q4_0"], mean
    assert rows["Q4_0"]["kl"]["top1_agreement"] < rows["F16"]["kl"]["top1_agreement"] <= 1.0
    assert rows["Q4_0"]["bits_per_weight"] < rows["Q8_0"]["bits_per_weight"] < rows["F16"]["bits_per_weight"]
    ref = next(r for r in report.rows if r["reference"])
    assert ref["engine"] == "native (torch)" and ref["kl"] is None
    repacked = "CPU_REPACK" in extra_buffer_names()  # built into llama-cpp-python's CPU backend here
    for label, r in rows.items():
        assert r["delta_perplexity"] == pytest.approx(r["perplexity"] - ref["perplexity"])
        assert r["tokens_per_second"] > 0
        plain = label != "Q4_0" or not repacked
        assert r["engine"] == "llama.cpp, flash attention" + ("" if plain else ", repacked weights"), label
    hf = next(r for r in report.rows if r["kind"] == "hf")
    assert hf["kl"] is None and any("perplexity only" in n for n in report.notes)


def test_q4_0_on_repacked_weights_costs_what_it_costs_plain(folders, reference):
    """eval runs Q4_0 on llama.cpp's repacked weights (faster), never on its AMX path (which crashes on
    AMX CPUs): the quantization's measured cost must not depend on that. On these 8 windows of the
    fixture, measured: mean KL from float32 3.2570e-3 repacked, 3.2594e-3 plain (0.08% apart); the two
    runs' distributions 7.1e-7 apart in mean KL, top-1 100% the same."""
    if "CPU_REPACK" not in extra_buffer_names():
        pytest.skip("this llama.cpp build has no CPU_REPACK buffer")
    before = extra_buffer_names()
    path = gguf_of(folders["out"], "Q4_0")
    header = read_gguf_header(path)
    ref = native_engine("ref", load_checkpoint(reference))
    repacked = gguf_engine("repacked", path, header.label, len(header.tokens), 128, flash_attn=True, repack=True)
    assert extra_buffer_names() == before  # AMX (where present) is back in llama.cpp's list after the load
    plain = gguf_engine("plain", path, header.label, len(header.tokens), 128, flash_attn=True, repack=False)
    assert (repacked.engine, plain.engine) == (
        "llama.cpp, flash attention, repacked weights",
        "llama.cpp, flash attention",
    )
    wins = windows(torch.arange(1024).numpy() % 500 + 5, 128)
    try:
        got = measure([ref, repacked, plain], wins, reference=ref)
        between = measure([plain, repacked], wins, reference=plain)["repacked"].divergence.summary()
    finally:
        for e in (ref, repacked, plain):
            e.close()
    kl_repacked, kl_plain = (got[n].divergence.summary().mean_kl for n in ("repacked", "plain"))
    assert 1e-3 < kl_plain < 1e-2, kl_plain  # the quantization's own cost
    assert abs(kl_repacked - kl_plain) < 0.004 * kl_plain, (kl_repacked, kl_plain)
    assert between.mean_kl < 1e-3 * kl_plain, (between.mean_kl, kl_plain)
    assert between.top1_agreement > 0.99


def test_without_a_repack_buffer_q4_0_runs_plain_and_says_so(folders, monkeypatch):
    """A llama.cpp build whose ggml does not answer (or has no CPU_REPACK): plain weights, named plain."""
    import mythos_convert.engines.llama_buffers as buffers

    monkeypatch.setattr(buffers, "_extra_list", lambda: (None, []))
    path = gguf_of(folders["out"], "Q4_0")
    header = read_gguf_header(path)
    engine = gguf_engine("q4", path, header.label, len(header.tokens), 64, flash_attn=False, repack=True)
    try:
        assert engine.engine == "llama.cpp"
        assert torch.isfinite(engine.logits(torch.arange(64).numpy() % 500 + 5)).all()
    finally:
        engine.close()


@pytest.mark.slow
def test_cli_records_eval_bound_to_the_files(folders, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(folders["out"], out)
    run = cli([out, "--chunks", "4", "--json", tmp_path / "report.json", "--no-repack"], tmp_path)
    assert run.returncode == 0, run.stderr
    assert "method: non-overlapping windows of 128 tokens" in run.stdout
    assert "perplexity only" in run.stdout  # the HF folder: no checkpoint given
    report = json.loads((tmp_path / "report.json").read_text())
    assert {r["type"] for r in report["rows"] if r["kind"] == "gguf"} == {"F32", "F16", "Q8_0", "Q4_0"}
    assert {r["engine"] for r in report["rows"] if r["kind"] == "gguf"} == {"llama.cpp, flash attention"}
    assert report["windows"] == 4 and report["scored_tokens"] == 127 + 3 * 63
    recorded = load_eval(out)
    assert set(recorded) == {"hf", *(p.name for p in out.glob("*.gguf"))}
    q4 = gguf_of(out, "Q4_0").name
    assert recorded[q4]["files"][q4]["size"] == (out / q4).stat().st_size
    assert "tokens scored" in recorded[q4]["dataset"] and recorded[q4]["ctx"] == 128
    assert set(bound_eval(out)) == set(recorded)
    card = (out / "README.md").read_text()  # eval rendered the card again: the Files table and the chart
    f16 = recorded[gguf_of(out, "F16").name]
    assert f"| {f16['perplexity']:.4f} | {f16['kl']['mean_kl']:.3g} |" in card and "](gguf-quality.png)" in card
    assert (out / "gguf-quality.png").is_file()
    with (out / q4).open("r+b") as fh:  # one byte of the file changes: its figures no longer apply
        fh.seek(-1, 2)
        last = fh.read(1)
        fh.seek(-1, 2)
        fh.write(bytes([last[0] ^ 1]))
    assert q4 not in bound_eval(out) and len(bound_eval(out)) == len(recorded) - 1


def one_error(run: subprocess.CompletedProcess) -> str:
    assert run.returncode == 2, (run.returncode, run.stdout, run.stderr)
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), run.stderr
    return lines[0]


def test_text_shorter_than_one_window(folders, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("A short text, but long enough to be kept as a document by the cleaning step here.")
    run = cli([gguf_of(folders["out"], "F16"), "--data", short, "--json", tmp_path / "r.json"], tmp_path)
    line = one_error(run)
    assert "fewer than one window of 128" in line and "--data" in line and "--ctx" in line
    n = int(line.split("text has ")[1].split()[0])
    assert 0 < n < 128 and f"at most {n}" in line
    assert not (tmp_path / "r.json").exists() and not (folders["out"] / "eval.json").exists()


def test_ctx_above_the_models_context(folders, tmp_path):
    line = one_error(cli([folders["hf"], "--ctx", "129"], tmp_path))
    assert "--ctx 129 is above the model's context of 128 tokens" in line and "--ctx 128 or less" in line


def test_gguf_with_another_vocabulary(folders, tiny_ckpt, tmp_path, reference):
    """A GGUF of another model (the test tokenizer: 512 tokens, other merges) against the fixture."""
    other = export_gguf(tiny_ckpt, "f16", tmp_path / "other-{ftype}.gguf", verify=False).written[0].path
    line = one_error(cli([reference, other, "--tokenizer", TOKENIZER], tmp_path))
    assert "vocabulary mismatch" in line and other.name in line and "at id" in line


def test_hf_folder_without_a_reference_is_perplexity_only(folders, tmp_path):
    run = cli([folders["hf"], "--chunks", "2", "--no-record"], tmp_path)
    assert run.returncode == 0, run.stderr
    assert "perplexity only: no native checkpoint to compare it against for KL divergence" in run.stdout
    assert not (folders["hf"] / "eval.json").exists()


def test_a_checkpoint_takes_the_tokenizer_of_the_folder_exported_from_it(folders, reference, tmp_path):
    """`eval ckpt.pt out/` with no --tokenizer: the checkpoint holds none (nor beside it), the folder does."""
    assert not (reference.parent / "tokenizer.json").exists() and not load_checkpoint(reference).tokenizer_json
    run = cli([reference, folders["hf"], "--chunks", "2", "--no-record"], tmp_path)
    assert run.returncode == 0, run.stderr
    assert f"reference: native engine, float32, on {reference.name}" in run.stdout
    assert "perplexity only" not in run.stdout  # the HF folder is compared with the checkpoint
