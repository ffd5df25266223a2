"""The native engine and KL divergence, held to independent computations written here.

- `native_greedy` allocates the KV cache for exactly the prompt and the tokens asked (a long-context
  model must not get a cache of its whole context per verify), fuses nothing where the compiled
  one-token path reads the weights in place, and decodes what a full recompute per step decodes.
- `native_engine_of` / `native_engine` report the model's vocabulary, target, kind and dtype.
- KL divergence and its summary against numpy on distributions written out here.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import random_model, tiny_config

from mythos_convert.engines.divergence import DivergenceAccumulator, divergence, kl_per_position, log_probs
from mythos_convert.engines.native import native_engine, native_engine_of, native_greedy, native_logits
from mythos_convert.formats.checkpoint import NativeCheckpoint
from mythos_convert.model.decode import compiled_ops_for


def _recompute_greedy(model, seq: list[int], n: int) -> list[int]:
    """Greedy decoding by a full forward per step, no cache: the independent answer."""
    seq, out = list(seq), []
    with torch.no_grad():
        for _ in range(n):
            token = int(model(torch.tensor([seq]))[0, -1].argmax())
            seq.append(token)
            out.append(token)
    return out


@pytest.fixture(scope="module")
def model():
    return random_model(tiny_config(96, max_seq_len=64), seed=3)


def _record_setup(model, monkeypatch) -> list[dict]:
    """What each `setup_cache` left behind: the cache's length and whether copies were fused."""
    seen: list[dict] = []
    original = model.setup_cache

    def setup(*args, **kwargs):
        original(*args, **kwargs)
        attention = model.layers[0].attention
        seen.append(
            {
                "length": model.caches[0].k.shape[2],
                "plan": model.decode_plan is not None,
                "fused": attention.wqkv is not None,
            }
        )

    monkeypatch.setattr(model, "setup_cache", setup)
    return seen


@pytest.mark.parametrize("prompt, n", [([1, 5, 9], 4), ([2, 3, 4, 5, 6, 7, 8], 1), ([1], 12)])
def test_native_greedy_caches_exactly_the_prompt_and_the_tokens_asked(model, monkeypatch, prompt, n):
    seen = _record_setup(model, monkeypatch)
    logits, tokens = native_greedy(model, prompt, n)
    assert [s["length"] for s in seen] == [len(prompt) + n]
    assert tokens == _recompute_greedy(model, prompt, n) and len(tokens) == n
    assert logits.shape == (len(prompt), 96)
    assert model.caches is None  # cleared for the next verify


def test_native_greedy_where_the_prompt_and_tokens_fill_the_context(model):
    """64 = max_seq_len: a cache one position short, or one step too many, fails here."""
    prompt = list(range(1, 41))
    tokens = native_greedy(model, prompt, 24)[1]
    assert tokens == _recompute_greedy(model, prompt, 24)


def test_native_greedy_uses_the_in_place_plan_and_no_fused_copies(model, monkeypatch):
    seen = _record_setup(model, monkeypatch)
    native_greedy(model, [4, 5, 6], 3)
    has_kernels = compiled_ops_for(model) is not None
    assert seen[0]["plan"] is has_kernels
    assert seen[0]["fused"] is False


def test_native_greedy_on_weights_the_kernels_cannot_read_fuses_nothing(monkeypatch):
    """Non-contiguous weights: no compiled path, and no fused q|k|v copy (a verifier holds one model)."""
    model = random_model(tiny_config(96, max_seq_len=64), seed=4)
    layer = model.layers[0].attention
    with torch.no_grad():
        layer.wq.weight = torch.nn.Parameter(layer.wq.weight.detach().t().contiguous().t())
    assert compiled_ops_for(model) is None
    seen = _record_setup(model, monkeypatch)
    tokens = native_greedy(model, [7, 8], 5)[1]
    assert seen[0] == {"length": 7, "plan": False, "fused": False}
    assert tokens == _recompute_greedy(model, [7, 8], 5)


def test_native_logits_are_float32_rows_of_the_whole_sequence(model):
    logits = native_logits(model, [3, 1, 4, 1, 5])
    assert logits.shape == (5, 96) and logits.dtype == torch.float32
    with torch.no_grad():
        want = model(torch.tensor([[3, 1, 4, 1, 5]]))[0]
    assert torch.equal(logits, want)


def test_native_engine_of_names_and_runs_the_model(model):
    engine = native_engine_of(model, "ckpt.pt", "bfloat16")
    assert (engine.target, engine.kind, engine.engine, engine.dtype, engine.vocab) == (
        "ckpt.pt",
        "native",
        "native (torch)",
        "bfloat16",
        96,
    )
    assert engine.model is model
    assert torch.equal(engine.logits([2, 7, 1]), native_logits(model, [2, 7, 1]))
    assert engine.greedy([2, 7, 1], 6) == _recompute_greedy(model, [2, 7, 1], 6)
    assert native_engine_of(model, "x").dtype == "float32"


def test_native_engine_builds_float32_from_a_checkpoints_own_weights(model):
    state = {k: v.to(torch.bfloat16) for k, v in model.state_dict().items()}
    ckpt = NativeCheckpoint(config=model.config, state_dict=state)
    engine = native_engine("ckpt.pt (native)", ckpt)
    assert (engine.target, engine.kind, engine.dtype, engine.vocab) == ("ckpt.pt (native)", "native", "float32", 96)
    assert engine.model.embedding.weight.dtype == torch.float32
    assert torch.equal(engine.model.embedding.weight, state["embedding.weight"].float())
    assert native_engine("t", ckpt, "bfloat16").dtype == "bfloat16"


# --- KL divergence against numpy ----------------------------------------------------------------


def _np_kl(p_logits: np.ndarray, q_logits: np.ndarray) -> np.ndarray:
    p = np.exp(p_logits - p_logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    q = np.exp(q_logits - q_logits.max(-1, keepdims=True))
    q /= q.sum(-1, keepdims=True)
    return (p * (np.log(p) - np.log(q))).sum(-1)


def test_kl_per_position_matches_numpy_on_three_token_rows():
    ref = np.array([[0.0, 1.0, 2.0], [3.0, -1.0, 0.5], [0.0, 0.0, 0.0]])
    out = np.array([[0.5, 1.0, 1.0], [3.0, -1.0, 0.5], [2.0, 0.0, -2.0]])
    got = kl_per_position(torch.tensor(ref), torch.tensor(out)).numpy()
    np.testing.assert_allclose(got, _np_kl(ref, out), rtol=1e-12, atol=1e-15)
    assert got[1] == 0.0 and got[0] > 0 and got[2] > 0
    # KL(P||Q) is not KL(Q||P): the reference is the first argument
    back = kl_per_position(torch.tensor(out), torch.tensor(ref)).numpy()
    assert abs(back[2] - got[2]) > 1e-3


def test_summary_of_101_positions_matches_numpy_median_p99_max():
    rng = np.random.default_rng(7)
    ref = rng.normal(size=(101, 5)) * 2
    out = ref + rng.normal(size=(101, 5)) * np.linspace(0.01, 1.0, 101)[:, None]
    kl = _np_kl(ref, out)
    acc = DivergenceAccumulator()
    acc.add(torch.tensor(ref[:40]), torch.tensor(out[:40]))
    acc.add(torch.tensor(ref[40:]), torch.tensor(out[40:]))
    got = acc.summary()
    assert got.positions == 101
    assert got.mean_kl == pytest.approx(kl.mean(), rel=1e-10)
    assert got.median_kl == pytest.approx(np.median(kl), rel=1e-10)
    assert got.p99_kl == pytest.approx(np.percentile(kl, 99), rel=1e-10)
    assert got.p99_kl != pytest.approx(np.percentile(kl, 90), rel=1e-3)
    assert got.max_kl == pytest.approx(kl.max(), rel=1e-10)
    agree = (ref.argmax(-1) == out.argmax(-1)).mean()
    assert got.top1_agreement == pytest.approx(agree) and 0 < agree < 1


def test_a_nan_position_keeps_agreement_and_count_but_no_kl():
    ref = torch.tensor([[0.0, 2.0], [1.0, 0.0], [0.0, 1.0]])
    out = torch.tensor([[0.0, 1.0], [math.nan, 0.0], [1.0, 0.0]])
    got = divergence(ref, out)
    assert math.isnan(got.mean_kl) and math.isnan(got.median_kl) and math.isnan(got.p99_kl)
    assert math.isnan(got.max_kl)
    assert got.positions == 3
    # argmax of a NaN row is the NaN's index (0) under torch: row 1 agrees, row 2 does not
    assert got.top1_agreement == pytest.approx(2 / 3)


def test_log_probs_argmax_is_per_row():
    lp = log_probs(torch.tensor([[0.0, 3.0, 1.0], [5.0, 0.0, 1.0]]))
    assert lp.argmax.tolist() == [1, 0]
    np.testing.assert_allclose(lp.logp.exp().sum(-1).numpy(), [1.0, 1.0], rtol=1e-15)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_native_from_hf_runs_the_folders_weights_and_names_their_dtype(tmp_path, ref_tokenizer_path, dtype):
    from helpers import make_checkpoint

    from mythos_convert.api import export_hf
    from mythos_convert.engines.native import native_from_hf

    (tmp_path / "tokenizer.json").write_bytes(ref_tokenizer_path.read_bytes())
    config = tiny_config(512, max_seq_len=64)
    ckpt = make_checkpoint(tmp_path / "ckpt.pt", config, seed=5, with_optimizer=False)
    folder = export_hf(ckpt, tmp_path / "my-hf", verify=False, card=False, dtype=dtype).folder
    engine = native_from_hf(folder)
    assert (engine.target, engine.kind, engine.dtype, engine.vocab) == ("my-hf/ (native)", "native", dtype, 512)
    assert engine.model.embedding.weight.dtype == torch.float32  # run in float32 whatever is stored
    if dtype == "float32":  # the folder's weights are the checkpoint's: the same logits
        with torch.no_grad():
            expected = random_model(config, seed=5)(torch.tensor([[1, 17, 40, 3]]))[0]
        torch.testing.assert_close(engine.logits([1, 17, 40, 3]), expected, rtol=0, atol=1e-5)
