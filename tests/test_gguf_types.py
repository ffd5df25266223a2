"""Each tensor's type in every file type is the one llama.cpp's own quantizer gives it.

The ground truth is llama.cpp itself: an F32 GGUF written by this project is quantized with
`llama_model_quantize` (llama-cpp-python) for every file type, and the tensor types it stored are
compared with `plan_tensors` for the same config. Two configs: rows of 256 and 16 layers (so the
_M/_L layer schedules, the first-eighth and first-sixteenth rules and GQA 4:1 all show), and rows
of 64 / 192 (so every fallback shows). Plus the facts the issue measured on mythos-172m's shapes.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import pytest
from ggml_reference import llama_quantize
from helpers import make_checkpoint, tiny_config

from mythos_convert.api import export_gguf
from mythos_convert.export.gguf_plan import OUTTYPES, plan_tensors
from mythos_convert.model.config import MythosConfig, load_preset

Q = gguf.GGMLQuantizationType
QUANTIZED = [name for name, t in OUTTYPES.items() if name not in ("f32", "f16", "bf16")]

CONFIGS = {
    # rows of 256 everywhere, 16 layers: n/8 = 2, n/16 = 1; GQA 4:1 (Q2_K's attn_v rule)
    "rows256-gqa4": dict(d_model=256, n_layers=16, n_heads=4, n_kv_heads=1, d_ff=512),
    # rows of 64 (attn, embedding) and 192 (ffn_down): fallbacks to 32-blocks; GQA 2:1
    "rows64-gqa2": dict(d_model=64, n_layers=3, n_heads=4, n_kv_heads=2, d_ff=192),
}


@pytest.fixture(scope="module", params=list(CONFIGS))
def f32_file(request, tmp_path_factory, ref_tokenizer_path) -> tuple[MythosConfig, Path]:
    folder = tmp_path_factory.mktemp(request.param)
    cfg = tiny_config(512, **CONFIGS[request.param])
    (folder / "tokenizer.json").write_bytes(ref_tokenizer_path.read_bytes())
    ckpt = make_checkpoint(folder / "ckpt.pt", cfg, with_optimizer=False)
    written = export_gguf(ckpt, "f32", folder / "m-F32.gguf", verify=False).written[0]
    return cfg, written.path


@pytest.mark.llama_cpp
@pytest.mark.parametrize("outtype", QUANTIZED)
def test_types_match_llama_quantize(f32_file, outtype: str, tmp_path: Path):
    cfg, src = f32_file
    dst = tmp_path / f"m-{outtype}.gguf"
    llama_quantize(src, dst, OUTTYPES[outtype].file_type)
    theirs = {t.name: Q(t.tensor_type) for t in gguf.GGUFReader(dst).tensors}
    ours = {p.name: p.qtype for p in plan_tensors(cfg, OUTTYPES[outtype])}
    differ = {n: (ours[n].name, theirs[n].name) for n in ours if ours[n] != theirs.get(n)}
    assert set(ours) == set(theirs)
    assert differ == {}, f"(ours, llama.cpp) for {len(differ)} tensor(s)"


def _types(preset: str, outtype: str) -> dict[str, gguf.GGMLQuantizationType]:
    cfg = load_preset(preset).model
    return {p.name: p.qtype for p in plan_tensors(cfg, OUTTYPES[outtype])}


def test_q4_k_m_on_mythos_172m_is_the_mix_the_issue_measured():
    """token_embd Q6_K; attn_v and ffn_down Q6_K in layers 0,1,2,5,8,11,14,17,20,21,22,23; else Q4_K."""
    types = _types("mythos-172m", "q4_k_m")
    more = {0, 1, 2, 5, 8, 11, 14, 17, 20, 21, 22, 23}
    assert types["token_embd.weight"] == Q.Q6_K
    for i in range(24):
        for kind in ("attn_v", "ffn_down"):
            assert types[f"blk.{i}.{kind}.weight"] == (Q.Q6_K if i in more else Q.Q4_K), (i, kind)
        for kind in ("attn_q", "attn_k", "attn_output", "ffn_gate", "ffn_up"):
            assert types[f"blk.{i}.{kind}.weight"] == Q.Q4_K
        assert types[f"blk.{i}.attn_norm.weight"] == Q.F32
    assert types["output_norm.weight"] == Q.F32


def test_legacy_q4_0_on_mythos_172m_stores_the_tied_embedding_as_q6_k():
    types = _types("mythos-172m", "q4_0")
    assert types["token_embd.weight"] == Q.Q6_K
    assert {t for n, t in types.items() if n != "token_embd.weight" and not n.endswith("norm.weight")} == {Q.Q4_0}


def test_sizes_on_mythos_172m_are_llama_cpps():
    """The file sizes the issue measured with llama.cpp (tensor data; metadata adds < 0.2 MB)."""
    cfg = load_preset("mythos-172m").model
    mb = {t: sum(p.nbytes for p in plan_tensors(cfg, OUTTYPES[t])) / 1e6 for t in ("q4_k_m", "q5_k_m", "q6_k")}
    assert mb["q4_k_m"] == pytest.approx(92.6, abs=0.3)
    assert mb["q5_k_m"] == pytest.approx(108.8, abs=0.3)
    assert mb["q6_k"] == pytest.approx(126.1, abs=0.3)


def test_every_differing_tensor_says_why():
    cfg = tiny_config(512)
    for outtype in OUTTYPES.values():
        for plan in plan_tensors(cfg, outtype):
            if len(plan.shape) > 1 and plan.qtype != outtype.qtype:
                assert plan.note, (outtype.name, plan.name)


@pytest.mark.llama_cpp
def test_modelfile_and_card_point_at_q4_k_m(tmp_path: Path, tiny_ckpt: Path):
    """Q4_K_M is what people download first: when it is written, the Modelfile and the card use it."""
    from mythos_convert.api import export_hf

    folder = export_hf(tiny_ckpt, tmp_path / "out", verify=False).folder
    export = export_gguf(folder, "q8_0,q4_k_m,f16", modelfile=True, verify=False)
    q4 = next(w.path.name for w in export.written if w.outtype.name == "q4_k_m")
    assert q4.endswith("-Q4_K_M.gguf")
    assert f"FROM ./{q4}" in (folder / "Modelfile").read_text().splitlines()
    card = (folder / "README.md").read_text()
    assert f"llama-cli -m {q4} " in card


@pytest.mark.parametrize("pool", ["threads", "processes"])
def test_quantizing_in_workers_changes_no_byte(tmp_path: Path, monkeypatch, ref_tokenizer_path: Path, pool: str):
    """Rows sliced over 2 workers give the files one gives (and the pool really ran): threads with the
    compiled quantizers, processes with the numpy fallback."""
    import concurrent.futures

    import mythos_convert.export.gguf_encode as gguf_module
    from mythos_convert.quant import kquants

    if pool == "processes":
        monkeypatch.setenv("MYTHOS_KERNELS", "0")  # the workers' own kquants too
        monkeypatch.setattr(kquants, "kernel_status", lambda: kquants.KernelStatus(None, "MYTHOS_KERNELS=0"))
    elif kquants.kernel_status().quantize is None:
        pytest.skip(f"compiled quantizers unavailable: {kquants.kernel_status().reason}")
    (tmp_path / "tokenizer.json").write_bytes(ref_tokenizer_path.read_bytes())
    ckpt = make_checkpoint(tmp_path / "ckpt.pt", tiny_config(512, **CONFIGS["rows256-gqa4"]), with_optimizer=False)
    files = {}
    started = []
    real_start = gguf_module.ParallelEncoder._start
    monkeypatch.setattr(
        gguf_module.ParallelEncoder, "_start", lambda self: started.append(real_start(self)) or started[-1]
    )
    monkeypatch.setattr(gguf_module, "MIN_PARALLEL", 0)
    monkeypatch.setattr(gguf_module, "MIN_PARALLEL_THREADS", 0)
    for workers in ("1", "2"):
        monkeypatch.setenv("MYTHOS_QUANT_WORKERS", workers)
        written = export_gguf(ckpt, "q4_k_m,q6_k,q4_0,f16", tmp_path / f"w{workers}-{{ftype}}.gguf", verify=False)
        files[workers] = {w.outtype.name: w.path.read_bytes() for w in written.written}
    assert started, "the worker pool never started"
    kind = concurrent.futures.ThreadPoolExecutor if pool == "threads" else concurrent.futures.ProcessPoolExecutor
    assert all(isinstance(p, kind) for p in started)
    assert files["1"] == files["2"]
