"""GGUF files run by real llama.cpp (llama-cpp-python) and transformers against the native model."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import pytest
import torch
from helpers import make_checkpoint, tiny_config
from typer.testing import CliRunner

from mythos_convert.api import export_gguf, verify
from mythos_convert.cli import app
from mythos_convert.data.tokenizer import load_tokenizer
from mythos_convert.engines.hf import load_hf_model, transformers_from_gguf
from mythos_convert.engines.llamacpp import load_llama
from mythos_convert.verify.gguf import tokenization_diffs, verify_gguf
from mythos_convert.verify.inputs import PROMPTS, TOKENIZER_TEXTS

pytestmark = pytest.mark.llama_cpp


@pytest.fixture(scope="module")
def tiny_ggufs(tiny_ckpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("gguf-parity")
    export = export_gguf(tiny_ckpt, "f32,f16,q8_0,q4_0", out / "tiny-{ftype}.gguf", verify=False)
    return {w.outtype.name: w.path for w in export.written}


@pytest.fixture(scope="module")
def tiny_results(tiny_ggufs, tiny_ckpt):
    return {
        name: verify_gguf(path, tiny_ckpt, check_transformers=False, record=False, show=False)
        for name, path in tiny_ggufs.items()
    }


def test_f32_matches_native_logits_and_greedy(tiny_results):
    r = tiny_results["f32"]
    assert r["passed"], r["failures"]
    assert r["max_abs_diff"] / max(1.0, r["logit_std"]) <= 1e-4 and r["greedy_equal"] and r["argmax_agreement"] == 1.0


def test_f16_within_its_gate(tiny_results):
    r = tiny_results["f16"]
    assert r["passed"], r["failures"]
    assert 0 < r["max_abs_diff"] / max(1.0, r["logit_std"]) <= 0.05 and r["argmax_agreement"] >= 0.965


@pytest.mark.parametrize(("outtype", "mean_kl", "p99_kl"), [("q8_0", 0.0082, 0.02), ("q4_0", 0.67, 1.8)])
def test_quantized_types_are_gated_by_kl_divergence(tiny_results, outtype, mean_kl, p99_kl):
    r = tiny_results[outtype]
    assert r["passed"], r["failures"]
    assert "mean KL<=" in r["tolerance"] and "p99 KL<=" in r["tolerance"]
    assert 0 < r["mean_kl"] <= mean_kl and r["p99_kl"] <= p99_kl


def test_4_bit_moves_further_than_8_bit(tiny_results):
    q4, q8 = tiny_results["q4_0"], tiny_results["q8_0"]
    assert 0.3 < q4["argmax_agreement"] <= 1.0  # far above chance (1/512), below f32
    assert q4["mean_kl"] > q8["mean_kl"] and q4["max_abs_diff"] > q8["max_abs_diff"]


def test_tokenization_differs_only_where_nfkc_changes_the_text(tiny_results):
    diffs = tiny_results["f32"]["tokenizer_differences"]
    assert diffs and all(d["expected"] for d in diffs)
    assert "ﬁle" in {d["text"] for d in diffs}
    assert not {d["text"] for d in diffs} & {"Hello, world! This is a plain ASCII sentence.", *PROMPTS}


def test_llama_cpp_tokenizes_like_the_tokenizer_without_its_normalizer(tiny_ggufs, ref_tokenizer_path):
    tok = load_tokenizer(ref_tokenizer_path)
    tok.normalizer = None
    llm = load_llama(tiny_ggufs["f32"], n_ctx=64)
    texts = [*TOKENIZER_TEXTS, "ﬁle ｆｕｌｌ１２３", "x\u00a0y \u2126", "<bos>hello<eos>", *PROMPTS]
    agreement, diffs = tokenization_diffs(llm, tok, texts)
    llm.close()
    assert agreement == 1.0, diffs


RANDOM_CONFIGS = {
    "3 heads / 1 kv, vocab 517": dict(vocab_size=517, d_model=96, n_heads=3, n_kv_heads=1, d_ff=256),
    "5 heads / 5 kv, head_dim 32, vocab 600": dict(
        vocab_size=600, d_model=160, n_heads=5, n_kv_heads=5, d_ff=300, n_layers=3
    ),
    "8 heads / 4 kv, head_dim 8, vocab 530": dict(vocab_size=530, d_model=64, n_heads=8, n_kv_heads=4, d_ff=200),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(RANDOM_CONFIGS))
def test_random_configs_f32(name, tmp_path, ref_tokenizer_path):
    cfg = tiny_config(**RANDOM_CONFIGS[name])
    (tmp_path / "tokenizer.json").write_bytes(ref_tokenizer_path.read_bytes())
    ckpt = make_checkpoint(tmp_path / "ckpt.pt", cfg, seed=3, with_optimizer=False)
    export = export_gguf(ckpt, "f32", verify=True)
    result = export.verify[export.written[0].path.name]
    assert result["passed"] and result["greedy_equal"], result["failures"]
    assert result["max_abs_diff"] / max(1.0, result["logit_std"]) <= 1e-4
    assert result["transformers"]["max_abs_diff"] <= 1e-4
    recorded = json.loads((tmp_path / "verify.json").read_text())["results"]
    assert recorded[export.written[0].path.name]["passed"]


def test_split_file_runs_in_llama_cpp(tmp_path, tiny_ckpt):
    written = export_gguf(tiny_ckpt, "f32", tmp_path / "s.gguf", split_max_size="100K", verify=False).written[0]
    assert len(written.paths) > 1
    r = verify_gguf(written.path, tiny_ckpt, check_transformers=False, record=False, show=False)
    assert r["passed"] and r["max_abs_diff"] / max(1.0, r["logit_std"]) <= 1e-4, r["failures"]


@pytest.fixture(scope="module")
def hf_folder(tiny_ckpt, tmp_path_factory):
    from mythos_convert.api import export_hf

    out = tmp_path_factory.mktemp("hf") / "out"
    export_hf(tiny_ckpt, out, verify=False)
    return out


def test_transformers_loads_the_f32_gguf_with_exactly_equal_logits(hf_folder):
    written = export_gguf(hf_folder, "f32", verify=False).written[0]
    assert written.path.parent == hf_folder
    ids = torch.tensor([[1, 5, 77, 300, 12, 9, 401, 33, 2, 256, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26]])
    with torch.no_grad():
        want = load_hf_model(hf_folder)(ids).logits
        got = transformers_from_gguf(written.path)(ids).logits
    assert torch.equal(want, got)


def test_hf_folder_source_verified_recorded_and_listed(hf_folder):
    export = export_gguf(hf_folder, "q8_0", modelfile=True, force=True)
    written = export.written[0]
    result = json.loads((hf_folder / "verify.json").read_text())["results"][written.path.name]
    assert result["passed"] and result["kind"] == "gguf" and result["dtype"] == "Q8_0"
    assert f"FROM ./{written.path.name}" in (hf_folder / "Modelfile").read_text()
    readme = hf_folder / "README.md"
    if readme.is_file():  # the card lists the GGUF files of its folder
        assert written.path.name in readme.read_text()
    # the verify dispatcher reaches the same verifier, reference taken from the folder
    again = verify(written.path)
    assert again["passed"] and again["max_abs_diff"] == pytest.approx(result["max_abs_diff"])


def test_cli_writes_verifies_and_prints_the_table(tmp_path, tiny_ckpt):
    out = tmp_path / "cli.gguf"
    run = CliRunner().invoke(app, ["gguf", str(tiny_ckpt), "--outtype", "f16", "--outfile", str(out), "--quiet"])
    assert run.exit_code == 0, run.output
    assert "pass" in run.output and out.is_file()
    assert gguf.GGUFReader(out).get_field("general.file_type").contents() == 1
    again = CliRunner().invoke(app, ["gguf", str(tiny_ckpt), "--outtype", "f16", "--outfile", str(out)])
    assert again.exit_code != 0 and "--force" in str(again.exception)


def test_verify_command_needs_a_reference_for_a_lone_file(tmp_path, tiny_ggufs):
    lone = tmp_path / Path(tiny_ggufs["f16"]).name
    lone.write_bytes(Path(tiny_ggufs["f16"]).read_bytes())
    run = CliRunner().invoke(app, ["verify", str(lone)])
    assert run.exit_code != 0 and "--ckpt" in str(run.exception)


def test_several_types_share_one_native_reference(tmp_path, tiny_ckpt, monkeypatch):
    """`gguf` with three types opens and hashes the source once, builds the native model once and
    runs its greedy decoding once per greedy prompt, not once per file."""
    import mythos_convert.engines.native as native_module
    import mythos_convert.verify.reference as reference_module

    calls = {"open_source": 0, "file_digest": 0, "load_model": 0, "native_greedy": 0, "native_logits": 0}

    def counted(module, name):
        original = getattr(module, name)

        def wrapper(*args, **kwargs):
            calls[name] += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapper)

    for name in ("open_source", "file_digest", "load_model"):
        counted(reference_module, name)
    for name in ("native_greedy", "native_logits"):
        counted(native_module, name)
    export = export_gguf(tiny_ckpt, "f32,f16,q8_0", tmp_path / "t-{ftype}.gguf")
    assert len(export.verify) == 3 and all(r["passed"] for r in export.verify.values())
    n_seqs = export.verify["t-F32.gguf"]["n_sequences"]
    assert calls == {"open_source": 1, "file_digest": 1, "load_model": 1, "native_greedy": 2, "native_logits": n_seqs}
