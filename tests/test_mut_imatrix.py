"""The importance matrix computed in this process, against sums recomputed here from the model's modules.

test_imatrix.py runs the CLI end to end (a subprocess); these call `collect`, `compute_imatrix` and
`make_imatrix` directly: every layer's attention and FFN input sums (and ffn_down's, the SwiGLU
product worked out here), counts, windows, the context clamped to the model's, the errors before
anything runs.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import make_checkpoint, random_model, tiny_config
from tokenizers import Tokenizer, models, pre_tokenizers

import mythos_convert.quant.imatrix as imatrix_module
from mythos_convert.errors import MythosError
from mythos_convert.model.layers import signed_sin
from mythos_convert.quant.imatrix import collect, compute_imatrix, make_imatrix
from mythos_convert.quant.imatrix_file import read_imatrix

WORDS = "the quick brown fox jumps over lazy dog while seven wizards quietly hex jolly gnomes".split()
KINDS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


def _recomputed(model, windows: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Per layer, the float64 sums of squared inputs of q/k/v, gate/up and down, by GGUF name."""
    n, ctx = model.config.n_layers, windows[0].size
    sums: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for window in windows:
            x = model.embedding(torch.from_numpy(window)[None])
            cos, sin = model.rope_cos[:ctx], signed_sin(model.rope_sin[:ctx])
            for i in range(n):
                layer = model.layers[i]
                a = layer.attn_norm(x)
                h = x + layer.attention(a, cos, sin)
                f = layer.ffn_norm(h)
                ff = layer.feed_forward
                inner = F.silu(f @ ff.w1.weight.T) * (f @ ff.w3.weight.T)
                for kinds, value in ((("attn_q", "attn_k", "attn_v"), a), (("ffn_gate", "ffn_up"), f)):
                    for kind in kinds:
                        key = f"blk.{i}.{kind}.weight"
                        sums[key] = sums.get(key, 0) + (value.double() ** 2).sum(dim=(0, 1))
                key = f"blk.{i}.ffn_down.weight"
                sums[key] = sums.get(key, 0) + (inner.double() ** 2).sum(dim=(0, 1))
                x = layer(x, cos, sin)
    return {k: v.numpy() for k, v in sums.items()}


@pytest.fixture(scope="module")
def model():
    return random_model(tiny_config(96, n_layers=3, max_seq_len=32), seed=11)


def test_collect_sums_every_products_squared_inputs(model):
    tokens = np.random.default_rng(2).integers(0, 96, size=70)
    stats = collect(model, tokens, ctx=16, chunks=3, dataset="calib words")
    windows = [tokens[i * 16 : (i + 1) * 16].astype(np.int64) for i in range(3)]
    want = _recomputed(model, windows)
    assert set(stats.sums) == {f"blk.{i}.{k}.weight" for i in range(3) for k in KINDS}
    for name, sums in want.items():
        np.testing.assert_allclose(stats.sums[name], sums, rtol=1e-5, err_msg=name)
        assert stats.sums[name].dtype == np.float64
    assert all(count == 48 for count in stats.counts.values())  # 3 windows of 16 tokens, per product
    assert all(stats.sums[f"blk.{i}.attn_output.weight"].shape == (64,) for i in range(3))
    assert all(np.all(stats.sums[f"blk.{i}.attn_output.weight"] > 0) for i in range(3))
    assert (stats.chunk_count, stats.chunk_size, stats.datasets) == (3, 16, ["calib words"])
    assert stats.tokens_per_second > 0


def test_collect_uses_every_whole_window_without_chunks_and_clamps_the_context(model):
    tokens = np.arange(100) % 96
    stats = collect(model, tokens, ctx=512)  # 512 > max_seq_len 32: windows of 32, three of them
    assert (stats.chunk_count, stats.chunk_size, stats.datasets) == (3, 32, [])
    assert stats.counts["blk.0.attn_q.weight"] == 96
    windows = [tokens[i * 32 : (i + 1) * 32].astype(np.int64) for i in range(3)]
    np.testing.assert_allclose(
        stats.sums["blk.2.ffn_up.weight"], _recomputed(model, windows)["blk.2.ffn_up.weight"], rtol=1e-5
    )


def test_too_little_text_for_one_window(model):
    with pytest.raises(MythosError, match="calibration text has 10 tokens, fewer than one window of 16"):
        collect(model, np.arange(10), ctx=16)


@pytest.fixture(scope="module")
def run(tmp_path_factory, ref_tokenizer_path) -> Path:
    folder = tmp_path_factory.mktemp("mutimatrix")
    (folder / "tokenizer.json").write_bytes(ref_tokenizer_path.read_bytes())
    make_checkpoint(folder / "ckpt.pt", tiny_config(512, max_seq_len=64), seed=2, with_optimizer=False)
    text = " ".join(np.random.default_rng(1).choice(WORDS, 600))
    (folder / "calib.txt").write_text(text + "\n")
    return folder


@pytest.mark.parametrize(("ctx", "chunks", "message"), [(1, None, "--ctx 1 is too small"), (8, 0, "--chunks 0")])
def test_bad_ctx_or_chunks_are_refused_first(run: Path, ctx, chunks, message):
    with pytest.raises(MythosError, match=message):
        compute_imatrix(run / "nowhere.pt", ctx=ctx, chunks=chunks)


def test_ctx_2_and_chunks_1_are_the_smallest_accepted(run: Path):
    stats = compute_imatrix(run / "ckpt.pt", data=[run / "calib.txt"], ctx=2, chunks=1)
    assert (stats.chunk_count, stats.chunk_size) == (1, 2)
    assert stats.counts["blk.1.ffn_down.weight"] == 2


def test_make_imatrix_writes_what_compute_imatrix_computes(run: Path, tmp_path: Path):
    out = tmp_path / "im.gguf"
    stats = make_imatrix(run / "ckpt.pt", out, data=[run / "calib.txt"], ctx=32, chunks=2)
    assert "calib.txt" in stats.datasets[0] and stats.chunk_count == 2 and stats.chunk_size == 32
    read = read_imatrix(out)
    assert set(read.sums) == set(stats.sums)
    for name, sums in stats.sums.items():
        np.testing.assert_allclose(read.sums[name], sums, rtol=1e-6)
        assert read.counts[name] == 64
    # an existing output is refused without force, then replaced with it
    before = out.read_bytes()
    with pytest.raises(MythosError):
        make_imatrix(run / "ckpt.pt", out, data=[run / "calib.txt"], ctx=32, chunks=2)
    assert out.read_bytes() == before
    make_imatrix(run / "ckpt.pt", out, force=True, data=[run / "calib.txt"], ctx=16, chunks=1)
    assert read_imatrix(out).counts["blk.0.attn_q.weight"] == 16


@pytest.mark.parametrize("which", ["checkpoint", "tokenizer", "config", "data"])
def test_make_imatrix_never_writes_over_an_input(run: Path, which: str):
    (run / "config.yaml").write_text("model:\n  vocab_size: 512\n")
    files = {"checkpoint": "ckpt.pt", "tokenizer": "tokenizer.json", "config": "config.yaml", "data": "calib.txt"}
    target = run / files[which]
    before = target.read_bytes()
    with pytest.raises(MythosError, match=f"output {target} (is|contains|lies inside) the {which} "):
        make_imatrix(
            run / "ckpt.pt",
            target,
            force=True,
            tokenizer=run / "tokenizer.json",
            config_yaml=run / "config.yaml",
            data=[run / "calib.txt"],
            ctx=16,
        )
    assert target.read_bytes() == before


def test_a_checkpoint_without_its_config_takes_the_yaml_given(run: Path, tmp_path: Path):
    from helpers import write_config_yaml

    (tmp_path / "tokenizer.json").write_bytes((run / "tokenizer.json").read_bytes())
    config = tiny_config(512, max_seq_len=64)
    ckpt = make_checkpoint(tmp_path / "bare.pt", config, seed=2, with_optimizer=False, embed_config=False)
    yaml = write_config_yaml(tmp_path / "config.yaml", config)
    stats = compute_imatrix(ckpt, config_yaml=yaml, data=[run / "calib.txt"], ctx=16, chunks=1)
    assert stats.counts["blk.0.attn_q.weight"] == 16
    with pytest.raises(MythosError):
        compute_imatrix(ckpt, data=[run / "calib.txt"], ctx=16, chunks=1)


# --- what the user reads, the text the tokens come from ----------------------------------------------


def _watch(monkeypatch, times: list[float]) -> tuple[list[str], list[str]]:
    """A clock that reads `times` in turn, and the progress labels and info lines `collect` shows."""
    clock = iter(times)
    monkeypatch.setattr(imatrix_module, "time", SimpleNamespace(perf_counter=lambda: next(clock)))
    labels: list[str] = []
    lines: list[str] = []

    def track(items, description, total=None):
        labels.append(description)
        return iter(items)

    monkeypatch.setattr(imatrix_module, "track", track)
    monkeypatch.setattr(imatrix_module, "info", lines.append)
    return labels, lines


def test_the_progress_label_and_the_speed_line(model, monkeypatch):
    labels, lines = _watch(monkeypatch, [100.0, 100.25])
    stats = collect(model, np.arange(70) % 96, ctx=16)  # 4 whole windows of 16 in a quarter second
    assert labels == ["collecting the importance matrix"]
    assert stats.tokens_per_second == 256.0
    assert lines == ["importance matrix: 4 windows of 16 tokens, 256 tokens/s"]


def test_a_run_too_fast_to_time_is_infinitely_fast(model, monkeypatch):
    _, lines = _watch(monkeypatch, [5.0, 5.0])
    stats = collect(model, np.arange(40) % 96, ctx=16, chunks=1)
    assert stats.tokens_per_second == float("inf")
    assert lines == ["importance matrix: 1 windows of 16 tokens, inf tokens/s"]


def _word_tokenizer(path: Path) -> Path:
    """One id per word of the calibration text (300 + its place in WORDS), `<eos>` = 1."""
    vocab = {"[UNK]": 0, "<eos>": 1, **{w: 300 + i for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens(["<eos>"])
    tok.save(str(path))
    return path


def test_the_tokenizer_given_is_the_one_used(run: Path, tmp_path: Path, monkeypatch):
    text = (run / "calib.txt").read_text().split()
    want = np.array([300 + WORDS.index(w) for w in text] + [1], dtype=np.int64)  # one document, then <eos>
    lines: list[str] = []
    monkeypatch.setattr(imatrix_module, "info", lines.append)
    stats = compute_imatrix(
        run / "ckpt.pt", tokenizer=_word_tokenizer(tmp_path / "words.json"), data=[run / "calib.txt"], ctx=32, chunks=2
    )
    assert stats.datasets == [f"{run / 'calib.txt'} (1 documents, 601 tokens)"]
    assert lines[0] == f"calibration text: {run / 'calib.txt'} (1 documents, 601 tokens)"
    model = random_model(tiny_config(512, max_seq_len=64), seed=2)
    sums = _recomputed(model, [want[:32], want[32:64]])
    for name in ("blk.0.attn_q.weight", "blk.1.ffn_down.weight"):
        np.testing.assert_allclose(stats.sums[name], sums[name], rtol=1e-5, err_msg=name)


def test_without_data_a_runs_validation_split_is_the_text(run: Path, tmp_path: Path):
    folder = tmp_path / "trained"
    (folder / "data").mkdir(parents=True)
    shutil.copy(run / "ckpt.pt", folder / "ckpt.pt")
    shutil.copy(run / "tokenizer.json", folder / "tokenizer.json")
    val = (np.arange(40) * 7 % 512).astype(np.uint16)
    np.save(folder / "data" / "train.npy", np.zeros(8, np.uint16))
    np.save(folder / "data" / "val.npy", val)
    (folder / "data" / "meta.json").write_text("{}")
    stats = compute_imatrix(folder / "ckpt.pt", ctx=16, chunks=2)
    assert stats.datasets == [f"the validation split of {folder} (40 tokens)"]
    model = random_model(tiny_config(512, max_seq_len=64), seed=2)
    sums = _recomputed(model, [val[:16].astype(np.int64), val[16:32].astype(np.int64)])
    np.testing.assert_allclose(stats.sums["blk.1.ffn_up.weight"], sums["blk.1.ffn_up.weight"], rtol=1e-5)
