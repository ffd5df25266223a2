"""The native generation engine: cache correctness, sampling, stopping, streaming text, the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import make_checkpoint, make_reference_tokenizer, random_model, sample_corpus
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from mythos_convert.cli import app
from mythos_convert.data.tokenizer import load_tokenizer, special_tokens
from mythos_convert.errors import MythosError
from mythos_convert.formats.checkpoint import load_checkpoint, load_model
from mythos_convert.model.generate import (
    Sampling,
    TextStream,
    generate_ids,
    next_token,
    prompt_ids,
    recompute_greedy,
    stream_text,
)

NON_ASCII = "Unicode: café naïve 東京 😀 Ω — “quotes” ünïcödé ∑ 𝔘"


@pytest.fixture(scope="module")
def model(tiny_cfg):
    return random_model(tiny_cfg, seed=3)


@pytest.fixture(scope="module")
def tok(ref_tokenizer_path):
    return load_tokenizer(ref_tokenizer_path)


def _prompt(n: int, vocab: int, seed: int = 0) -> list[int]:
    return torch.randint(5, vocab, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


# ---- the cache -------------------------------------------------------------------------------------


@pytest.mark.parametrize("fuse", [True, False])
def test_chunked_prefill_matches_full_pass_at_every_position(model, fuse):
    """Three prompt chunks and single tokens on top of the cache give the full pass's logits."""
    ids = torch.tensor([_prompt(40, model.config.vocab_size)])
    with torch.inference_mode():
        model.clear_cache()
        full = model(ids)
        model.setup_cache(1, 64, fuse=fuse)
        pieces = [model(ids[:, a:b], start=a) for a, b in ((0, 7), (7, 19), (19, 33))]
        pieces += [model(ids[:, i : i + 1], start=i) for i in range(33, 40)]
        model.clear_cache()
    cached = torch.cat(pieces, dim=1)
    scale = full.abs().max().item()
    assert full.std() > 0.3  # logits far from uniform: the comparison has teeth
    torch.testing.assert_close(cached, full, rtol=0, atol=1e-5 * scale)


def test_chunk_on_cache_needs_the_end_aligned_mask(model, monkeypatch):
    """The comparison above can fail: with the reference's top-left mask the chunks go wrong."""
    import mythos_convert.model.model as model_module

    def top_left(start, n_new, device=None):
        return torch.ones(n_new, start + n_new, dtype=torch.bool, device=device).tril()

    ids = torch.tensor([_prompt(30, model.config.vocab_size)])
    with torch.inference_mode():
        full = model(ids)
        monkeypatch.setattr(model_module, "causal_mask", top_left)
        model.setup_cache(1, 32)
        chunks = torch.cat([model(ids[:, :10]), model(ids[:, 10:30], start=10)], dim=1)
        model.clear_cache()
    assert (chunks[:, 10:] - full[:, 10:]).abs().max() > 1.0
    torch.testing.assert_close(chunks[:, :10], full[:, :10])


@pytest.mark.parametrize("seed", [1, 2])
def test_cached_greedy_equals_recompute(model, seed):
    prompt = _prompt(12, model.config.vocab_size, seed=seed)
    expected = recompute_greedy(model, prompt, 40)
    assert generate_ids(model, prompt, max_new_tokens=40) == expected
    assert generate_ids(model, prompt, max_new_tokens=40, prefill_chunk=5) == expected
    assert len(set(expected)) > 1  # not one token repeated


def test_bfloat16_decode_matches_its_full_pass(tiny_cfg):
    """bf16 decoding (the AVX2 kernels, or torch.mv where they cannot run): F.linear's logits, within bf16."""
    model = random_model(tiny_cfg, seed=4).to(torch.bfloat16)
    ids = torch.tensor([_prompt(24, tiny_cfg.vocab_size, seed=2)])
    with torch.inference_mode():
        full = model(ids).float()
        model.setup_cache(1, 32)
        steps = [model(ids[:, :16])] + [model(ids[:, i : i + 1], start=i) for i in range(16, 24)]
        model.clear_cache()
    cached = torch.cat(steps, 1).float()
    scale = full.abs().max().item()
    assert (cached - full).abs().max().item() < 0.03 * scale
    assert (cached.argmax(-1) == full.argmax(-1)).float().mean() >= 0.9


def test_bfloat16_prompt_products_are_float32_products_rounded_once():
    """The widened-in-chunks bf16 product equals one float32 product rounded to bf16, bit for bit."""
    from mythos_convert.model.layers import _widened_linear

    gen = torch.Generator().manual_seed(0)
    x, w = torch.randn(3, 5, 40, generator=gen).bfloat16(), torch.randn(20, 40, generator=gen).bfloat16()
    want = torch.nn.functional.linear(x.float(), w.float()).bfloat16()
    assert torch.equal(_widened_linear(x, w, rows=7), want)  # 7, 7, 6 rows: a short last chunk
    assert torch.equal(_widened_linear(x, w), want)


# ---- sampling --------------------------------------------------------------------------------------


def test_sampling_is_reproducible_and_seeds_differ(model):
    prompt = _prompt(6, model.config.vocab_size, seed=5)
    hot = Sampling(temperature=1.5)
    first = generate_ids(model, prompt, max_new_tokens=30, sampling=hot, seed=7)
    assert generate_ids(model, prompt, max_new_tokens=30, sampling=hot, seed=7) == first
    others = [generate_ids(model, prompt, max_new_tokens=30, sampling=hot, seed=s) for s in (8, 9)]
    assert all(other != first for other in others)
    state = torch.get_rng_state()
    generate_ids(model, prompt, max_new_tokens=5, sampling=hot)  # no seed: fresh entropy
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is left alone


def test_top_k_one_and_tiny_top_p_are_greedy(model):
    prompt = _prompt(8, model.config.vocab_size, seed=6)
    greedy = generate_ids(model, prompt, max_new_tokens=20)
    top_k = Sampling(temperature=1.0, top_k=1)
    tiny_p = Sampling(temperature=1.0, top_p=1e-6)
    assert generate_ids(model, prompt, max_new_tokens=20, sampling=top_k, seed=1) == greedy
    assert generate_ids(model, prompt, max_new_tokens=20, sampling=tiny_p, seed=1) == greedy


def test_top_k_and_top_p_filter_the_distribution():
    logits = torch.log(torch.tensor([[0.05, 0.5, 0.15, 0.3]]))
    gen = torch.Generator().manual_seed(0)

    def draws(sampling: Sampling) -> set[int]:
        return {int(next_token(logits, sampling, gen)) for _ in range(400)}

    assert draws(Sampling(temperature=1.0)) == {0, 1, 2, 3}
    assert draws(Sampling(temperature=1.0, top_k=2)) == {1, 3}
    assert draws(Sampling(temperature=1.0, top_p=0.7)) == {1, 3}  # 0.5 + 0.3 reaches 0.7
    assert draws(Sampling(temperature=1.0, top_p=0.85)) == {1, 2, 3}
    assert draws(Sampling(temperature=0.0)) == {1}


@pytest.mark.parametrize("bad", [dict(temperature=-1), dict(top_k=-2), dict(top_p=0.0), dict(top_p=1.5)])
def test_bad_sampling_settings_are_refused(bad):
    with pytest.raises(MythosError):
        Sampling(**bad)


# ---- stopping --------------------------------------------------------------------------------------


def _eos_model(cfg, eos: int):
    """Residual branches zeroed and every embedding row near one direction, eos's twice as long:
    the hidden state always points along that direction, so eos has the largest logit everywhere."""
    model = random_model(cfg, seed=0)
    with torch.no_grad():
        for layer in model.layers:
            layer.attention.wo.weight.zero_()
            layer.feed_forward.w2.weight.zero_()
        model.norm.weight.fill_(1.0)
        direction = torch.randn(cfg.d_model)
        model.embedding.weight.copy_(direction + 0.05 * torch.randn_like(model.embedding.weight))
        model.embedding.weight[eos] = 2 * direction
    return model


def test_generation_stops_at_the_tokenizers_eos(tiny_cfg, tok):
    eos = special_tokens(tok).id("eos")
    model = _eos_model(tiny_cfg, eos)
    prompt = prompt_ids(tok, "Return the value")
    assert recompute_greedy(model, prompt, 3) == [eos, eos, eos]  # the model really wants eos
    assert generate_ids(model, prompt, max_new_tokens=20, eos_id=eos) == [eos]
    assert len(generate_ids(model, prompt, max_new_tokens=20, eos_id=None)) == 20


def test_stops_at_eos_sampled_midway(model):
    prompt = _prompt(5, model.config.vocab_size, seed=9)
    run = generate_ids(model, prompt, max_new_tokens=30)
    stop = run[6]
    assert generate_ids(model, prompt, max_new_tokens=30, eos_id=stop) == run[: run.index(stop) + 1]


def test_new_tokens_are_bounded_by_the_context(model):
    limit = model.config.max_seq_len
    prompt = _prompt(limit - 4, model.config.vocab_size)
    assert len(generate_ids(model, prompt, max_new_tokens=50)) == 4
    with pytest.raises(MythosError, match="context"):
        generate_ids(model, _prompt(limit, model.config.vocab_size), max_new_tokens=1)


# ---- prompts and text ------------------------------------------------------------------------------


def test_prompt_gets_bos_and_no_eos(tok):
    specials = special_tokens(tok)
    assert tok.encode("hello").ids[-1] == specials.id("eos")  # the post-processor appends eos...
    ids = prompt_ids(tok, "hello")
    assert ids[0] == specials.id("bos") and specials.id("eos") not in ids  # ...the prompt does not
    assert ids[1:] == tok.encode("hello", add_special_tokens=False).ids


def test_prompt_is_nfkc_normalised_when_the_tokenizer_has_no_normalizer(tmp_path):
    plain = load_tokenizer(make_reference_tokenizer(tmp_path / "tokenizer.json", nfkc=False))
    assert plain.normalizer is None
    assert prompt_ids(plain, "ﬁle ｆｕｌｌ１２３") == prompt_ids(plain, "file full123")


def test_streamed_text_equals_decode_including_non_ascii(tok):
    ids = tok.encode(NON_ASCII, add_special_tokens=False).ids
    pieces = list(stream_text(tok, ids))
    assert "".join(pieces) == tok.decode(ids)
    assert not any("\ufffd" in p for p in pieces)  # no piece ends inside a split character
    assert len(pieces) > 5


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 511), max_size=40))
def test_streamed_text_equals_decode_for_any_ids(ref_tokenizer_path, ids):
    tok = load_tokenizer(ref_tokenizer_path)
    for skip in (True, False):
        assert "".join(stream_text(tok, ids, skip_special_tokens=skip)) == tok.decode(ids, skip_special_tokens=skip)


def test_text_stream_holds_back_a_split_character(tok):
    ids = tok.encode("😀", add_special_tokens=False).ids
    assert len(ids) > 1  # the emoji's 4 bytes are split across byte-level tokens
    stream = TextStream(tok)
    assert [stream.push(i) for i in ids[:-1]] == [""] * (len(ids) - 1)
    assert stream.push(ids[-1]) == "😀" and stream.finish() == ""


# ---- the command -----------------------------------------------------------------------------------


def test_cli_prints_prompt_then_greedy_continuation(tiny_ckpt):
    prompt = "Return the number of"
    res = CliRunner().invoke(
        app, ["generate", str(tiny_ckpt), prompt, "--temperature", "0", "--max-new-tokens", "12", "--quiet"]
    )
    assert res.exit_code == 0, res.output
    source = load_checkpoint(tiny_ckpt)
    tok = load_tokenizer(tiny_ckpt.parent / "tokenizer.json")
    new = generate_ids(
        load_model(source), prompt_ids(tok, prompt), max_new_tokens=12, eos_id=special_tokens(tok).id("eos")
    )
    assert res.stdout == prompt + tok.decode(new) + "\n"


def test_cli_sampling_with_seed_is_reproducible(tiny_ckpt):
    args = ["generate", str(tiny_ckpt), "Return a", "--seed", "3", "--max-new-tokens", "15", "-q"]
    first, second = CliRunner().invoke(app, args), CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert first.stdout == second.stdout and first.stdout.startswith("Return a")


def test_cli_bfloat16_and_embedded_tokenizer(tmp_path, tiny_cfg, ref_tokenizer_path):
    """No tokenizer.json beside the checkpoint: the copy inside it is used."""
    ckpt = make_checkpoint(
        tmp_path / "ckpt.pt", tiny_cfg, extra={"tokenizer_json": Path(ref_tokenizer_path).read_text()}
    )
    res = CliRunner().invoke(
        app, ["generate", str(ckpt), NON_ASCII, "--dtype", "bfloat16", "--max-new-tokens", "8", "-q"]
    )
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith(NON_ASCII)


def test_cli_refuses_missing_tokenizer(tmp_path, tiny_cfg):
    ckpt = make_checkpoint(tmp_path / "ckpt.pt", tiny_cfg)  # no tokenizer beside or inside
    res = CliRunner().invoke(app, ["generate", str(ckpt), "hi"])
    assert isinstance(res.exception, MythosError) and "--tokenizer" in str(res.exception)
    res = CliRunner().invoke(app, ["generate", str(ckpt), "hi", "--tokenizer", str(tmp_path / "nope.json")])
    assert isinstance(res.exception, MythosError) and "nope.json" in str(res.exception)


def test_cli_prompt_longer_than_context_is_one_line_exit_2(tiny_ckpt):
    long_prompt = " ".join(sample_corpus(5000))  # far more than the 128-token context
    proc = subprocess.run(
        [sys.executable, "-m", "mythos_convert", "generate", str(tiny_ckpt), long_prompt],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: the prompt is") and "context is 128" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stdout == ""


def test_cli_warns_when_max_new_tokens_exceeds_context(tiny_ckpt):
    res = CliRunner().invoke(app, ["generate", str(tiny_ckpt), "Return", "--max-new-tokens", "500", "-q"])
    assert res.exit_code == 0, res.output
    assert "new tokens fit" in res.output


def test_cli_generates_the_checkpoints_greedy_tokens_from_an_hf_folder_and_a_gguf(tiny_ckpt, tmp_path):
    """Every command takes every source: the float32 HF export and its F32 GGUF (tokenizer.json beside
    both, in the folder) continue the prompt with the checkpoint's own greedy tokens."""
    from mythos_convert.api import export_gguf, export_hf

    folder = export_hf(tiny_ckpt, tmp_path / "hf", dtype="float32", verify=False).folder
    gguf_file = export_gguf(folder, "f32", verify=False).written[0].path
    args = ["Return the number of", "--temperature", "0", "--max-new-tokens", "12", "--quiet"]
    outputs = [CliRunner().invoke(app, ["generate", str(path), *args]) for path in (tiny_ckpt, folder, gguf_file)]
    assert all(res.exit_code == 0 for res in outputs), [res.output for res in outputs]
    assert outputs[1].stdout == outputs[0].stdout and outputs[2].stdout == outputs[0].stdout
    assert len(outputs[0].stdout) > len(args[0]) + 1  # something was generated
