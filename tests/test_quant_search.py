"""The measured type search (`quant/search.py`, `quant/sensitivity.py`, `quant/recipe.py`).

A random-weight model with 256-wide rows (so the K-quants apply; the 512-wide SwiGLU rows too)
is calibrated on one random token stream and scored on another: the text a recipe is chosen on
is never the text it is judged on.
"""

from __future__ import annotations

import itertools
import re

import gguf
import numpy as np
import pytest
from helpers import random_model, tiny_config

from mythos_convert.errors import MythosError
from mythos_convert.quant import kquants, search, sensitivity
from mythos_convert.quant import recipe as recipes
from mythos_convert.quant.types import F, choose_types

Q = gguf.GGMLQuantizationType
KV_BYTES = 4321  # any metadata size: the budget counts it


@pytest.fixture(scope="module")
def setup():
    config = tiny_config(vocab_size=256, d_model=256, n_heads=4, n_kv_heads=2, d_ff=768, max_seq_len=64)
    model = random_model(config, seed=0, scale=1.5)
    rng = np.random.default_rng(1)
    calibration = [rng.integers(0, 256, 64) for _ in range(2)]
    scoring = [np.random.default_rng(2).integers(0, 256, 64) for _ in range(3)]
    layout = search.model_layout(config, KV_BYTES)
    sens = sensitivity.measure(model, layout.matrices, calibration, method="hybrid")
    return config, model, layout, sens, scoring


def _fit(layout: search.Layout, name: str, qtype: gguf.GGMLQuantizationType) -> gguf.GGMLQuantizationType:
    from mythos_convert.quant.types import row_fallback

    return row_fallback(qtype, layout.shapes[name][-1])[0]


@pytest.mark.parametrize("bpw", [3.0, 3.9, 4.5, 5.5, 7.0])
def test_budget_is_met(setup, bpw):
    _, _, layout, sens, _ = setup
    budget = search.target_bytes(layout, bpw=bpw)
    choice = search.choose(layout, sens, budget)
    assert choice.file_bytes <= budget
    assert choice.file_bytes == layout.file_bytes(choice.recipe)
    assert choice.file_bytes > 0.97 * budget  # the budget is used, not left idle
    assert set(choice.recipe) == set(layout.matrices)


def test_file_size_counts_the_header_as_the_written_file(setup, tmp_path):
    """The size the budget counts is the size of a GGUF really written with that recipe."""
    _, model, layout, sens, _ = setup
    choice = search.choose(layout, sens, search.target_bytes(layout, bpw=4.0))
    path = tmp_path / "searched.gguf"
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_string("general.name", "x" * 40)
    writer.add_array("tokenizer.ggml.tokens", [f"tok{i}" for i in range(50)])
    layout = search.Layout(layout.shapes, search.kv_section_bytes(writer))
    writer.add_array(recipes.KEY_RECIPE, recipes.metadata_value(choice.recipe))
    weights = sensitivity.native_weights(model, layout.matrices)
    for name, shape in layout.shapes.items():
        qtype = choice.recipe.get(name, Q.F32)
        if qtype in (Q.F32, Q.F16):
            data = np.ones(shape, dtype=np.float32 if qtype == Q.F32 else np.float16)
            writer.add_tensor(name, data)
        else:
            writer.add_tensor(name, kquants.quantize(weights[name], qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert path.stat().st_size == layout.file_bytes(choice.recipe)
    assert path.stat().st_size <= layout.fixed_bytes() + sum(
        layout.tensor_bytes(n, q) for n, q in choice.recipe.items()
    )
    reader = gguf.GGUFReader(path)
    stored = [
        bytes(reader.fields[recipes.KEY_RECIPE].parts[i]).decode() for i in reader.fields[recipes.KEY_RECIPE].data
    ]
    assert recipes.parse_metadata(stored) == choice.recipe
    assert {t.name: t.tensor_type for t in reader.tensors if t.name in choice.recipe} == choice.recipe


def test_a_larger_budget_never_costs_more(setup):
    _, _, layout, sens, _ = setup
    low, high = search.reachable(layout)
    costs = [search.choose(layout, sens, int(b)).cost for b in np.linspace(low, high, 25)]
    assert all(later <= earlier for earlier, later in itertools.pairwise(costs)), costs
    assert costs[0] > 10 * costs[-1]


@pytest.mark.parametrize("qtype", [Q.Q4_K, Q.Q3_K])
def test_search_beats_the_uniform_type_of_the_same_size_on_held_apart_text(setup, qtype):
    _, model, layout, sens, scoring = setup
    uniform = {name: _fit(layout, name, qtype) for name in layout.matrices}
    choice = search.choose(layout, sens, layout.file_bytes(uniform))
    assert choice.file_bytes <= layout.file_bytes(uniform)
    searched, plain = (sensitivity.file_kl(model, r, scoring) for r in (choice.recipe, uniform))
    assert searched < 0.8 * plain, (searched, plain)


def test_search_beats_llama_cpp_mix_of_the_same_size(setup):
    config, model, layout, sens, scoring = setup
    mix = choose_types(
        F.MOSTLY_Q4_K_M, layout.shapes, n_layers=config.n_layers, n_heads=config.n_heads, n_kv_heads=config.n_kv_heads
    )
    fixed = {name: mix[name].qtype for name in layout.matrices}
    choice = search.choose(layout, sens, layout.file_bytes(fixed))
    assert sensitivity.file_kl(model, choice.recipe, scoring) < sensitivity.file_kl(model, fixed, scoring)


@pytest.mark.parametrize("kwargs", [{"bpw": 1.0}, {"bpw": 40.0}, {"size": 1000}, {"size": 10**9}])
def test_unreachable_budget_names_the_range(setup, kwargs):
    _, _, layout, _, _ = setup
    low, high = search.reachable(layout)
    with pytest.raises(MythosError, match=rf"{low:,} to {high:,} bytes .* bits per weight"):
        search.target_bytes(layout, **kwargs)
    for edge in (low, high):
        assert search.target_bytes(layout, size=edge) == edge


def test_one_target_at_a_time(setup):
    _, _, layout, _, _ = setup
    with pytest.raises(MythosError, match="one of --target-bpw or --target-size"):
        search.target_bytes(layout, bpw=4.0, size=10**6)
    with pytest.raises(MythosError, match="--target-bpw nan is not a number"):
        search.target_bytes(layout, bpw=float("nan"))


def test_recipe_round_trips_through_llama_quantize_arguments(setup):
    _, _, layout, sens, _ = setup
    recipe = search.choose(layout, sens, search.target_bytes(layout, bpw=4.5)).recipe
    line = recipes.command_line(recipe)
    assert line.startswith("llama-quantize --tensor-type '^token_embd\\.weight$=")
    assert recipes.parse_tensor_types(line) == recipe
    assert (
        recipes.parse_tensor_types("\n".join(recipes.tensor_type_args(recipe)[1::2])) == recipe
    )  # a --tensor-type-file
    assert recipes.parse_metadata(recipes.metadata_value(recipe)) == recipe


def test_each_pattern_matches_its_tensor_only(setup):
    """llama.cpp matches patterns with regex_search: a plain `output.weight` would hit attn_output too."""
    _, _, layout, _, _ = setup
    names = [*layout.shapes, "output.weight", "blk.11.attn_q.weight"]
    for name in names:
        assert [other for other in names if re.search(recipes.to_pattern(name), other)] == [name]


def test_bad_recipe_text_is_refused():
    with pytest.raises(MythosError, match="PATTERN=TYPE"):
        recipes.parse_tensor_types("--tensor-type attn_q")
    with pytest.raises(MythosError, match="unknown tensor type 'Q9_K'"):
        recipes.parse_tensor_types("--tensor-type '^output\\.weight$=Q9_K'")


def test_candidates_follow_llama_cpp_row_fallbacks():
    assert sensitivity.candidate_types(256)[:5] == [Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K]
    assert Q.Q2_K not in sensitivity.candidate_types(96) and Q.Q4_0 in sensitivity.candidate_types(96)
    assert sensitivity.candidate_types(48) == [Q.F16]


def test_knapsack_is_exact_on_a_small_case():
    rng = np.random.default_rng(0)
    units = [np.sort(rng.integers(0, 8, 3)) * [0, 1, 1] for _ in range(5)]  # option 0 free, as in `choose`
    costs = [np.sort(rng.random(3))[::-1] for _ in range(5)]
    for capacity in range(0, 36):
        picks = search._knapsack(units, costs, capacity)
        best = min(
            sum(c[k] for c, k in zip(costs, combo, strict=True))
            for combo in itertools.product(range(3), repeat=5)
            if sum(u[k] for u, k in zip(units, combo, strict=True)) <= capacity
        )
        assert sum(u[k] for u, k in zip(units, picks, strict=True)) <= capacity
        assert sum(c[k] for c, k in zip(costs, picks, strict=True)) == pytest.approx(best)


def test_proxy_ranks_types_of_a_tensor_like_measured_kl(setup):
    """Within one tensor the imatrix-free proxy orders the types nearly as the measured KL does."""
    _, model, layout, sens, scoring = setup
    name = "blk.0.attn_v.weight"
    probe = sensitivity.KLProbe(model, scoring[:1])
    weight = sensitivity.native_weights(model, [name])[name]
    types = [q for q in layout.options(name) if q != Q.F16]
    measured = [probe.kl({"layers.0.attention.wv.weight": sensitivity.roundtrip(weight, q, None)}) for q in types]
    assert sensitivity.spearman(measured, [sens.proxy[name][q] for q in types]) > 0.8


def test_probe_reruns_only_the_layers_after_the_replaced_weight(setup):
    """The kept layer inputs give the model's own logits, and a replaced weight's KL equals the
    KL of a full forward pass of the changed model."""
    import torch
    import torch.nn.functional as F

    _, model, _, _, scoring = setup
    probe = sensitivity.KLProbe(model, scoring[:1])
    tokens = torch.from_numpy(scoring[0])[None]
    with torch.no_grad():
        full = F.log_softmax(model(tokens), dim=-1)
    torch.testing.assert_close(probe.reference[0], full, rtol=0, atol=1e-6)
    for native in ("layers.1.feed_forward.w2.weight", "embedding.weight"):
        weight = dict(model.named_parameters())[native].detach().numpy()
        changed = sensitivity.roundtrip(weight, Q.Q2_K, None)
        fast = probe.kl({native: changed})
        saved = weight.copy()
        with torch.no_grad():
            dict(model.named_parameters())[native].copy_(torch.from_numpy(changed))
            logq = F.log_softmax(model(tokens), dim=-1)
            dict(model.named_parameters())[native].copy_(torch.from_numpy(saved))
        slow = float((full.exp() * (full - logq)).sum(-1).mean())
        assert fast == pytest.approx(slow, rel=1e-4)
        assert fast > 0


@pytest.mark.llama_cpp
def test_llama_quantize_writes_the_recipe_given_as_tensor_type_overrides(tmp_path, ref_tokenizer_path):
    """llama.cpp's own quantizer, given the recipe's anchored patterns as `--tensor-type`
    overrides, stores exactly the recipe's types, with the bytes `kquants` writes for them."""
    import ctypes

    from helpers import make_checkpoint

    from mythos_convert.api import export_gguf

    llama_cpp = pytest.importorskip("llama_cpp")
    config = tiny_config(512, d_model=256, n_heads=4, n_kv_heads=2, d_ff=768, n_layers=2)
    (tmp_path / "tokenizer.json").write_bytes(ref_tokenizer_path.read_bytes())
    ckpt = make_checkpoint(tmp_path / "ckpt.pt", config, with_optimizer=False)
    src = export_gguf(ckpt, "f32", tmp_path / "m-F32.gguf", verify=False).written[0].path
    layout = search.model_layout(config, 0)
    # every candidate type, round the tensors (K-quants, legacy, Q8_0, F16 and the ffn_down fallbacks)
    recipe = {n: layout.options(n)[i % len(layout.options(n))] for i, n in enumerate(layout.matrices)}
    args = recipes.tensor_type_args(recipe)[1::2]
    overrides = (llama_cpp.llama_model_tensor_override * (len(args) + 1))()
    for entry, arg in zip(overrides, args, strict=False):
        pattern, _, type_name = arg.partition("=")
        entry.pattern, entry.type = pattern.encode(), int(recipes.type_of(type_name))
    overrides[len(args)].pattern = None  # the terminator
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype, params.nthread = int(gguf.LlamaFileType.MOSTLY_Q8_0), 2
    params.tt_overrides = ctypes.cast(overrides, type(params.tt_overrides))
    dst = tmp_path / "searched.gguf"
    assert llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params)) == 0
    theirs = {t.name: t for t in gguf.GGUFReader(dst).tensors}
    source = {t.name: np.asarray(t.data) for t in gguf.GGUFReader(src).tensors}
    assert {n: Q(theirs[n].tensor_type) for n in recipe} == recipe
    for name, qtype in recipe.items():
        if qtype != Q.F16:
            ours = kquants.quantize(np.ascontiguousarray(source[name], dtype=np.float32), qtype)
            assert np.array_equal(np.asarray(theirs[name].data).reshape(-1), ours.reshape(-1)), name
    from mythos_convert.engines.llamacpp import llama_logits, load_llama

    logits = llama_logits(load_llama(dst, n_ctx=32), [1, 5, 9, 12])  # llama.cpp runs the searched file
    assert logits.shape == (4, 512) and bool(logits.isfinite().all())


def test_probe_on_a_model_opened_from_a_float32_hf_folder_leaves_its_file_untouched(tmp_path):
    """An HF folder's float32 weights are the safetensors file's read-only mapping: the probe must
    point a parameter at the quantized values, never write them into it (that is a segfault)."""
    import hashlib

    from helpers import export_reference

    from mythos_convert.formats.checkpoint import load_model
    from mythos_convert.source import open_source

    folder = export_reference(tmp_path / "hf")
    before = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    import torch

    model = load_model(open_source(folder, arrays=True).as_checkpoint(), torch.float32)  # as gguf opens it
    native = "layers.0.attention.wv.weight"
    original = dict(model.named_parameters())[native].detach().numpy().copy()
    probe = sensitivity.KLProbe(model, [np.arange(64) % 512])
    kl = probe.kl({native: sensitivity.roundtrip(original, Q.Q2_K, None)})
    assert 1e-6 < kl < 1.0
    assert np.array_equal(dict(model.named_parameters())[native].detach().numpy(), original)
    assert probe.kl({native: original}) == pytest.approx(0.0, abs=1e-7)
    assert hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest() == before


def test_probe_of_several_windows_is_the_mean_of_each_window_alone(setup):
    """Windows run as one batch: the KL is still the per-token mean over all of them, windows of
    another length included."""
    _, model, _, _, scoring = setup
    native = "layers.0.feed_forward.w1.weight"
    weight = dict(model.named_parameters())[native].detach().numpy()
    changed = {native: sensitivity.roundtrip(weight, Q.Q3_K, None)}
    windows = [scoring[0], scoring[1], scoring[2][:40]]  # 64, 64 and 40 tokens
    alone = [sensitivity.KLProbe(model, [w]).kl(changed) for w in windows]
    expected = (64 * alone[0] + 64 * alone[1] + 40 * alone[2]) / 168
    assert sensitivity.KLProbe(model, windows).kl(changed) == pytest.approx(expected, rel=1e-5)


def test_the_search_calibrates_on_the_end_of_the_held_out_text(tmp_path):
    """eval reads windows from the text's beginning, so the search takes its 16 windows of 128 from the
    end: the last scoring window ends at the text's last whole window, and none starts in the first half."""
    from types import SimpleNamespace

    from helpers import REFERENCE, require_reference, sample_corpus

    from mythos_convert.data.held_out import held_out_tokens
    from mythos_convert.data.tokenizer import load_tokenizer
    from mythos_convert.export.gguf_target import _windows

    require_reference()
    tokenizer = load_tokenizer(REFERENCE / "tokenizer" / "tokenizer.json")
    text = tmp_path / "text.txt"
    text.write_text("\n\n".join(sample_corpus(60_000)))
    tokens = held_out_tokens(tokenizer, [text]).tokens
    assert tokens.size > 4 * 16 * 128  # long enough that the start and the end are apart
    source = SimpleNamespace(run_folder=None, config=SimpleNamespace(max_seq_len=128))
    calibration, scoring, described = _windows(tokenizer, source, [text])
    assert len(calibration) == 8 and len(scoring) == 8
    tail = tokens[-16 * 128 :]
    assert np.array_equal(np.concatenate(calibration + scoring), tail)
    assert described.startswith("the last 2,048 tokens of ")
