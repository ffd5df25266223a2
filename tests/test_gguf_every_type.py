"""Every GGUF type the exporter writes runs in real llama.cpp and meets its measured gate.

On the reference fixture (written by the reference implementation; every row 256 wide, so the
K-quant blocks fit and llama.cpp runs the K-quant kernels themselves, not the fallback types) and on
random configs with odd head counts and GQA 1:1, 3:1 and 4:1. Each file goes through the real
verifier (logits at every position, greedy, tokenization, every tensor dequantised), and the figures
are held to this file's own numbers: the gates of docs/parity.md, written here literally so that widening a
gate in the code cannot pass these tests.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import REFERENCE, random_model, tiny_config

from mythos_convert.api import export_gguf
from mythos_convert.export.gguf_plan import OUTTYPES
from mythos_convert.quant.types import MAIN_TYPE
from mythos_convert.verify.gguf import verify_gguf

pytestmark = [pytest.mark.llama_cpp, pytest.mark.usefixtures("one_thread")]


# type -> (mean KL, p99 KL) bounds: docs/parity.md, ~4x the worst measured by benchmarks/measure_gates.py
KL_GATES: dict[str, tuple[float, float]] = {
    "q8_0": (0.0082, 0.02),
    "q6_k": (0.02, 0.045),
    "q5_k_m": (0.15, 0.42),
    "q5_k_s": (0.15, 0.42),
    "q5_1": (0.15, 0.43),
    "q5_0": (0.19, 0.45),
    "q4_k_m": (0.21, 0.54),
    "q4_k_s": (0.22, 0.52),
    "q4_1": (0.62, 1.5),
    "q4_0": (0.67, 1.8),
    "q3_k_l": (0.47, 1.2),
    "q3_k_m": (0.5, 1.2),
    "q3_k_s": (0.82, 1.7),
    "q2_k": (1.3, 2.5),
}
# float types: (max |diff| / max(1, sigma), mean |diff| / max(1, sigma), min top-1, greedy equal)
DIFF_GATES: dict[str, tuple[float, float, float, bool]] = {
    "f32": (1e-4, 1e-5, 1.0, True),
    "f16": (0.05, 6e-3, 0.965, False),
    "bf16": (0.35, 0.05, 0.92, False),
}

# name -> (config fields, weight scale): odd heads, GQA 1:1 / 3:1 / 4:1, odd vocabularies
RANDOM_CONFIGS: dict[str, tuple[dict, float]] = {
    "3h/1kv (3:1), d768": (dict(vocab_size=517, d_model=768, n_heads=3, n_kv_heads=1, d_ff=384, n_layers=1), 2.0),
    "12h/3kv (4:1), d768": (dict(vocab_size=601, d_model=768, n_heads=12, n_kv_heads=3, d_ff=384, n_layers=2), 2.0),
    "5h/5kv (1:1), d160": (dict(vocab_size=600, d_model=160, n_heads=5, n_kv_heads=5, d_ff=300, n_layers=3), 5.0),
}
CONFIGS = ["reference fixture", *RANDOM_CONFIGS]


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, tuple[Path, Path, dict[str, Path]]]:
    """config name -> (checkpoint, tokenizer, {outtype: file}), every type written in one pass."""
    tok = REFERENCE / "tokenizer" / "tokenizer.json"
    if not tok.is_file():
        pytest.fail(f"the reference fixture is missing: expected {REFERENCE} beside the clone (../shared)")
    out = {}
    for i, name in enumerate(CONFIGS):
        folder = tmp_path_factory.mktemp(f"every-type-{i}")
        if name == "reference fixture":
            ckpt = REFERENCE / "ref_small.pt"
        else:
            fields, scale = RANDOM_CONFIGS[name]
            cfg = tiny_config(**fields)
            ckpt = folder / "ckpt.pt"
            torch.save({"model": random_model(cfg, 3, scale).state_dict(), "step": 1, "config": cfg.to_dict()}, ckpt)
        written = export_gguf(ckpt, "all", folder / "m-{ftype}.gguf", tokenizer=tok, verify=False).written
        out[name] = (ckpt, tok, {w.outtype.name: w.path for w in written})
    return out


@pytest.mark.parametrize("outtype", list(OUTTYPES))
@pytest.mark.parametrize("config", CONFIGS)
def test_every_type_runs_in_llama_cpp_within_its_gate(exports, config, outtype):
    ckpt, tok, files = exports[config]
    r = verify_gguf(files[outtype], ckpt, tokenizer=tok, check_transformers=False, record=False, show=False)
    assert r["passed"], r["failures"]
    main = MAIN_TYPE[OUTTYPES[outtype].file_type].name
    if config != "5h/5kv (1:1), d160" or not main.endswith("_K"):  # 160-wide rows take llama.cpp's fallback types
        assert main in r["tensors"]["worst_rel_error"], r["tensors"]  # the type's own kernels ran
    scale = max(1.0, r["logit_std"])
    if outtype in DIFF_GATES:
        max_diff, mean_diff, top1, greedy = DIFF_GATES[outtype]
        assert r["max_abs_diff"] / scale <= max_diff and r["mean_abs_diff"] / scale <= mean_diff
        assert r["argmax_agreement"] >= top1 and (r["greedy_equal"] or not greedy)
    else:
        mean_kl, p99_kl = KL_GATES[outtype]
        assert 0 < r["mean_kl"] <= mean_kl and r["p99_kl"] <= p99_kl
