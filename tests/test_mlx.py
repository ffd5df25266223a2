"""mlx-lm (CPU) runs the HF export as the native engine does: `mlx_lm.load` on the folder, in the MLX venv.

mlx-lm's llama reads only the top-level `rope_theta` (a config with only `rope_parameters` runs
with theta 10000) and defaults `tie_word_embeddings` to true, so the models here cover: the
reference implementation's own checkpoint (GQA 2:1, theta 50000), multi-head attention at the
default theta, GQA 4:1 at theta 500000, and an untied head (a folder edited to carry its own
`lm_head`, run against transformers, since the native engine always ties).

Gate: max |logit diff| <= 3.5e-5 x max(1, std of the reference logits), every position of the
verifier's sequences, and the same 32 greedy tokens (mlx-lm's generate_step, KV cache) as the
native engine. Measured worst over five configurations (docs/parity.md): 8.4e-6 x std (ref 1.5e-5
absolute at std 3.8); the gate is about 4x that.
"""

from __future__ import annotations

import json

import pytest
import torch
from helpers import REFERENCE, export_reference, make_checkpoint, require_reference, tiny_config
from mlx_venv import mlx_venv_python
from safetensors.torch import load_file, save_file

from mythos_convert.api import export_hf
from mythos_convert.data.tokenizer import load_tokenizer
from mythos_convert.formats.checkpoint import load_checkpoint, load_model
from mythos_convert.mlx.parity import native_run, run_mlx, sequences

pytestmark = [pytest.mark.slow, pytest.mark.mlx]

GATE = 3.5e-5  # x max(1, std): 4x the measured worst 8.4e-6


def within_gate(max_diff: float, std: float) -> bool:
    return max_diff <= GATE * max(1.0, std)


@pytest.fixture(scope="session")
def mlx_python() -> str:
    return str(mlx_venv_python())


CASES = {
    "reference-gqa2-theta5e4": None,
    "mha-theta1e4": dict(n_kv_heads=4),
    "gqa4-theta5e5": dict(n_kv_heads=1, rope_theta=500000.0),
}


@pytest.fixture(scope="module", params=list(CASES))
def exported(request, tmp_path_factory, ref_tokenizer_path):
    """(checkpoint, tokenizer, HF export folder) of one case."""
    folder = tmp_path_factory.mktemp(request.param)
    if CASES[request.param] is None:
        require_reference()
        ckpt, tok = REFERENCE / "ref_small.pt", REFERENCE / "tokenizer" / "tokenizer.json"
    else:
        ckpt = make_checkpoint(folder / "ckpt.pt", tiny_config(**CASES[request.param]), with_optimizer=False)
        tok = ref_tokenizer_path
    return ckpt, tok, export_hf(ckpt, folder / "hf", tokenizer=tok, verify=False, card=False).folder


def test_gate_literals():
    assert within_gate(3.49e-5, 0.5) and not within_gate(3.51e-5, 0.5)
    assert within_gate(3.49e-5 * 3.8, 3.8) and not within_gate(3.51e-5 * 3.8, 3.8)


def test_mlx_lm_runs_the_export_like_the_native_engine(mlx_python, exported):
    ckpt, tok_path, folder = exported
    checkpoint = load_checkpoint(ckpt)
    config = checkpoint.config
    seqs = sequences(load_tokenizer(tok_path), config.vocab_size, config.max_seq_len)
    got = run_mlx(mlx_python, folder, seqs)
    assert got.info["versions"] == {"mlx": "0.32.4", "mlx-lm": "0.32.2"}
    assert got.info["device"].startswith("Device(cpu")
    assert got.info["rope_theta"] == config.rope_theta and got.info["tie_word_embeddings"] is True

    logits, greedy = native_run(load_model(checkpoint, torch.float32), seqs)
    std = max(ref.std().item() for ref in logits)
    worst = max((ref - mine).abs().max().item() for ref, mine in zip(logits, got.logits, strict=True))
    assert within_gate(worst, std), f"max |diff| {worst:.3g} at logit std {std:.3g}"
    assert got.greedy == greedy


def test_untied_head_is_read(mlx_python, tmp_path):
    """tie_word_embeddings=false with its own lm_head: mlx-lm must use that head (transformers 5 as reference)."""
    from transformers import AutoModelForCausalLM

    folder = export_reference(tmp_path / "hf")
    untied = tmp_path / "untied"
    untied.mkdir()
    for f in folder.iterdir():
        (untied / f.name).write_bytes(f.read_bytes())
    config = json.loads((untied / "config.json").read_text())
    config["tie_word_embeddings"] = False
    (untied / "config.json").write_text(json.dumps(config))
    weights = load_file(untied / "model.safetensors")
    embed = weights["model.embed_tokens.weight"]
    weights["lm_head.weight"] = embed.flip(0).contiguous()  # a head that is clearly not the embedding
    save_file(weights, untied / "model.safetensors", metadata={"format": "pt"})

    seqs = sequences(load_tokenizer(untied / "tokenizer.json"), embed.shape[0], 128)[:2]
    got = run_mlx(mlx_python, untied, seqs, greedy=8)
    assert got.info["tie_word_embeddings"] is False
    model = AutoModelForCausalLM.from_pretrained(untied).eval()
    with torch.no_grad():
        for ids, mine in zip(seqs, got.logits, strict=True):
            ref = model(torch.tensor([ids])).logits[0]
            assert within_gate((ref - mine).abs().max().item(), ref.std().item())
