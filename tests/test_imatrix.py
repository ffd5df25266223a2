"""`mythos-convert imatrix` and `gguf --imatrix`, checked against independent computations and llama.cpp.

- The sums in the file are the squared inputs of each product, recomputed here from the model's
  own modules (not through the tap the collector uses).
- The file is llama.cpp's GGUF imatrix layout (keys, tensor names, shapes, F32).
- The whole path: our `gguf --imatrix` file of each K-quant mix (and Q4_0, whose imatrix rule gives
  the first eighth of ffn_down Q4_1) holds the types AND the bytes llama.cpp's own quantizer writes
  from our F32 file with the same importance weights (the file's sums / counts in float32, as
  llama-quantize loads them).
- Bad imatrix files: another model's, NaN sums, zero counts, not GGUF: one error line, exit 2.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from ggml_reference import llama_quantize
from helpers import make_checkpoint, require_reference, tiny_config

from mythos_convert.api import export_gguf
from mythos_convert.formats.checkpoint import load_checkpoint, load_model

Q = gguf.GGMLQuantizationType
# rows of 256 everywhere and 8 layers: n/8 = 1, so the first-eighth rules show
CONFIG = dict(d_model=256, n_layers=8, n_heads=4, n_kv_heads=2, d_ff=512, max_seq_len=64)
CTX, CHUNKS = 64, 6
KINDS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


def cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mythos_convert", *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory, ref_tokenizer_path) -> Path:
    """A checkpoint, calibration text, and its imatrix made by the real CLI."""
    folder = tmp_path_factory.mktemp("imatrix")
    (folder / "tokenizer.json").write_bytes(ref_tokenizer_path.read_bytes())
    make_checkpoint(folder / "ckpt.pt", tiny_config(512, **CONFIG), with_optimizer=False)
    text = folder / "calib.txt"
    words = "the quick brown fox jumps over the lazy dog while seven wizards quietly hex jolly gnomes".split()
    rng = np.random.default_rng(0)
    text.write_text(" ".join(rng.choice(words, 4000)) + "\n")
    args = ["imatrix", str(folder / "ckpt.pt"), "--out", str(folder / "imatrix.gguf"), "--data", str(text)]
    proc = cli([*args, "--ctx", str(CTX), "--chunks", str(CHUNKS)], folder)
    assert proc.returncode == 0, proc.stderr
    return folder


def _entries(path: Path) -> tuple[dict[str, np.ndarray], dict[str, float], gguf.GGUFReader]:
    reader = gguf.GGUFReader(path)
    sums, counts = {}, {}
    for t in reader.tensors:
        assert t.tensor_type == Q.F32, t.name
        if t.name.endswith(".in_sum2"):
            sums[t.name.removesuffix(".in_sum2")] = np.array(t.data, dtype=np.float32)
        else:
            assert t.name.endswith(".counts"), t.name
            counts[t.name.removesuffix(".counts")] = float(np.array(t.data).reshape(-1)[0])
    return sums, counts, reader


def test_file_is_llama_cpps_imatrix_layout(run: Path):
    sums, counts, reader = _entries(run / "imatrix.gguf")
    fields = {k: f.contents() for k, f in reader.fields.items()}
    assert fields["general.type"] == "imatrix"
    assert fields["imatrix.chunk_count"] == CHUNKS and fields["imatrix.chunk_size"] == CTX
    assert "calib.txt" in fields["imatrix.datasets"][0]
    want = {f"blk.{i}.{k}.weight" for i in range(8) for k in KINDS}
    assert set(sums) == set(counts) == want  # the blk.* products; no token_embd (a lookup)
    for name, values in sums.items():
        width = 512 if name.endswith("ffn_down.weight") else 256
        assert values.shape == (1, width), name  # ggml ne = [width, 1]
        assert counts[name] == CHUNKS * CTX


def test_sums_are_the_squared_inputs_recomputed_from_the_modules(run: Path, ref_tokenizer_path: Path):
    """Layer 0's attention and FFN inputs, recomputed with the model's modules on the same windows."""
    from mythos_convert.data.held_out import held_out_tokens
    from mythos_convert.data.tokenizer import load_tokenizer
    from mythos_convert.model.layers import signed_sin

    sums, _, _ = _entries(run / "imatrix.gguf")
    model = load_model(load_checkpoint(run / "ckpt.pt"), torch.float32)
    tokens = held_out_tokens(load_tokenizer(ref_tokenizer_path), [run / "calib.txt"]).tokens
    attn_in = torch.zeros(256, dtype=torch.float64)
    ffn_in = torch.zeros(256, dtype=torch.float64)
    layer = model.layers[0]
    with torch.no_grad():
        for i in range(CHUNKS):
            window = torch.from_numpy(tokens[i * CTX : (i + 1) * CTX].astype(np.int64))[None]
            x = model.embedding(window)
            cos, sin = model.rope_cos[:CTX], signed_sin(model.rope_sin[:CTX])
            a = layer.attn_norm(x)
            attn_in += (a.double() ** 2).sum(dim=(0, 1))
            h = x + layer.attention(a, cos, sin)
            ffn_in += (layer.ffn_norm(h).double() ** 2).sum(dim=(0, 1))
    for kind in ("attn_q", "attn_k", "attn_v"):
        np.testing.assert_allclose(sums[f"blk.0.{kind}.weight"][0], attn_in.numpy(), rtol=1e-5)
    for kind in ("ffn_gate", "ffn_up"):
        np.testing.assert_allclose(sums[f"blk.0.{kind}.weight"][0], ffn_in.numpy(), rtol=1e-5)
    assert not np.allclose(sums["blk.0.ffn_down.weight"][0], 0)


def assert_same_tensors(ours: Path, theirs: Path) -> dict:
    """Every tensor of our file has llama.cpp's type and bytes; returns ours by name."""
    a = {t.name: t for t in gguf.GGUFReader(ours).tensors}
    b = {t.name: t for t in gguf.GGUFReader(theirs).tensors}
    assert set(a) == set(b)
    types = {n: (Q(a[n].tensor_type).name, Q(b[n].tensor_type).name) for n in a if a[n].tensor_type != b[n].tensor_type}
    assert types == {}, "(ours, llama.cpp)"
    differ = [n for n in a if not np.array_equal(np.asarray(a[n].data), np.asarray(b[n].data))]
    assert differ == [], f"{len(differ)} tensor(s) with other bytes than llama.cpp's"
    return a


# ---------------------------------------------------------------- the whole path against llama.cpp


@pytest.mark.llama_cpp
@pytest.mark.parametrize("outtype", ["q4_k_m", "q5_k_s", "q3_k_m", "q2_k", "q6_k", "q4_0"])
def test_gguf_with_imatrix_is_what_llama_quantize_writes(run: Path, tmp_path: Path, outtype: str):
    sums, counts, _ = _entries(run / "imatrix.gguf")
    weights = {n: s.reshape(-1) / np.float32(counts[n]) for n, s in sums.items()}  # llama-quantize's division
    f32 = export_gguf(run / "ckpt.pt", "f32", tmp_path / "m-F32.gguf", verify=False).written[0]
    ours = export_gguf(
        run / "ckpt.pt", outtype, tmp_path / "ours.gguf", verify=False, imatrix=run / "imatrix.gguf"
    ).written[0]
    theirs = tmp_path / "theirs.gguf"
    llama_quantize(f32.path, theirs, ours.outtype.file_type, weights)
    a = assert_same_tensors(ours.path, theirs)
    if outtype == "q4_0":  # the imatrix rule: the first eighth of ffn_down goes to Q4_1
        assert a["blk.0.ffn_down.weight"].tensor_type == Q.Q4_1
    fields = gguf.GGUFReader(ours.path).fields
    assert fields["quantize.imatrix.entries_count"].contents() == 56
    assert fields["quantize.imatrix.chunks_count"].contents() == CHUNKS


def test_imatrix_changes_the_bytes(run: Path, tmp_path: Path):
    """The weights reach the quantizer: with an imatrix, Q4_K blocks differ from the plain ones."""
    plain = export_gguf(run / "ckpt.pt", "q4_k_m", tmp_path / "plain.gguf", verify=False).written[0]
    weighted = export_gguf(
        run / "ckpt.pt", "q4_k_m", tmp_path / "w.gguf", verify=False, imatrix=run / "imatrix.gguf"
    ).written[0]
    a = {t.name: np.asarray(t.data) for t in gguf.GGUFReader(plain.path).tensors}
    b = {t.name: np.asarray(t.data) for t in gguf.GGUFReader(weighted.path).tensors}
    assert not np.array_equal(a["blk.3.attn_q.weight"], b["blk.3.attn_q.weight"])
    assert np.array_equal(a["token_embd.weight"], b["token_embd.weight"])  # no entry: quantized unweighted


# ---------------------------------------------------------------- bad imatrix files


def _rewrite(src: Path, dst: Path, edit) -> None:
    """A copy of an imatrix file with edit(name, array) -> array applied to every tensor."""
    reader = gguf.GGUFReader(src)
    writer = gguf.GGUFWriter(dst, arch="llama")
    writer.add_type("imatrix")
    writer.add_array("imatrix.datasets", ["x"])
    writer.add_uint32("imatrix.chunk_count", 1)
    writer.add_uint32("imatrix.chunk_size", 64)
    for t in reader.tensors:
        out = edit(t.name, np.array(t.data, dtype=np.float32))
        if out is not None:
            writer.add_tensor(t.name, out)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _nan_in(name: str, a: np.ndarray) -> np.ndarray:
    if name == "blk.2.attn_v.weight.in_sum2":
        a[0, 5] = np.nan
    return a


def _zero_count(name: str, a: np.ndarray) -> np.ndarray:
    return a * 0 if name == "blk.1.ffn_up.weight.counts" else a


def _narrow(name: str, a: np.ndarray) -> np.ndarray:
    return a[:, :128] if name == "blk.0.attn_q.weight.in_sum2" else a


def _extra_layer(name: str, a: np.ndarray) -> np.ndarray | None:
    return a


@pytest.mark.parametrize(
    ("edit", "expect"),
    [
        (_nan_in, ("blk.2.attn_v.weight", "NaN")),
        (_zero_count, ("blk.1.ffn_up.weight", "zero token count")),
        (_narrow, ("blk.0.attn_q.weight", "128 columns", "256", "another model")),
    ],
    ids=["nan-sums", "zero-count", "other-model-widths"],
)
def test_bad_imatrix_is_one_error_line(run: Path, tmp_path: Path, edit, expect):
    bad = tmp_path / "bad.imatrix.gguf"
    _rewrite(run / "imatrix.gguf", bad, edit)
    args = ["gguf", str(run / "ckpt.pt"), "--outtype", "q4_k_m", "--imatrix", str(bad)]
    proc = cli([*args, "--outfile", str(tmp_path / "m.gguf"), "--no-verify"], tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error:") and sum(line.startswith("error:") for line in lines) == 1, proc.stderr
    assert all(text in lines[-1] for text in expect), lines[-1]
    assert not (tmp_path / "m.gguf").exists()


def test_imatrix_of_a_model_with_fewer_layers_names_the_first_missing(run: Path, tmp_path: Path):
    """An imatrix from a 2-layer model given to the 8-layer one: the first entry it lacks is named."""
    small = tmp_path / "small"
    small.mkdir()
    shutil.copy(run / "tokenizer.json", small / "tokenizer.json")
    make_checkpoint(small / "ckpt.pt", tiny_config(512, **{**CONFIG, "n_layers": 2}), with_optimizer=False)
    args = ["imatrix", str(small / "ckpt.pt"), "--out", str(small / "im.gguf"), "--data", str(run / "calib.txt")]
    assert cli([*args, "--ctx", "64", "--chunks", "2"], tmp_path).returncode == 0
    proc = cli(["gguf", str(run / "ckpt.pt"), "--outtype", "q4_k_m", "--imatrix", str(small / "im.gguf"),
                "--outfile", str(tmp_path / "m.gguf"), "--no-verify"], tmp_path)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "no entry for blk.2.attn_k.weight" in proc.stderr and "recompute" in proc.stderr


def test_a_file_that_is_not_an_imatrix(run: Path, tmp_path: Path):
    (tmp_path / "x.gguf").write_text("not gguf at all\n")
    proc = cli(["gguf", str(run / "ckpt.pt"), "--outtype", "q4_k_m", "--imatrix", str(tmp_path / "x.gguf"),
                "--outfile", str(tmp_path / "m.gguf"), "--no-verify"], tmp_path)  # fmt: skip
    assert proc.returncode == 2 and "not a GGUF imatrix file" in proc.stderr, proc.stderr


def test_k_quant_where_every_tensor_falls_back_warns():
    """Rows of 64 and 192 everywhere (an HF folder's odd widths; Mythos' own ffn width is a multiple of
    256): no Q4_K block fits, the file holds what llama.cpp would write instead, and a warning says so."""
    from mythos_convert.export.gguf import _all_fell_back
    from mythos_convert.export.gguf_plan import OUTTYPES, TensorPlan
    from mythos_convert.export.gguf_writer import WrittenGGUF
    from mythos_convert.quant.types import choose_types

    shapes = {"token_embd.weight": (512, 64), "blk.0.attn_q.weight": (64, 64), "blk.0.ffn_down.weight": (64, 192)}
    shapes["blk.0.attn_norm.weight"] = (64,)
    choices = choose_types(OUTTYPES["q4_k_s"].file_type, shapes, n_layers=1, n_heads=4, n_kv_heads=2)
    plans = [TensorPlan(n, shape, choices[n].qtype, choices[n].why) for n, shape in shapes.items()]
    line = _all_fell_back(WrittenGGUF(OUTTYPES["q4_k_s"], [Path("m-Q4_K_S.gguf")], plans))
    assert "m-Q4_K_S.gguf: no matrix of this model fits Q4_K's 256-blocks" in line
    assert "Q8_0 x1, Q5_0 x2" in line
    full = WrittenGGUF(OUTTYPES["q4_k_s"], [Path("m.gguf")], [TensorPlan("blk.0.ffn_up.weight", (256, 256), Q.Q4_K)])
    assert _all_fell_back(full) == ""


# ---------------------------------------------------------------- every type, two real sources

QUANTIZED = ["q8_0", "q6_k", "q5_k_m", "q5_k_s", "q5_1", "q5_0", "q4_k_m", "q4_k_s", "q4_1", "q4_0"]
QUANTIZED += ["q3_k_l", "q3_k_m", "q3_k_s", "q2_k"]


@pytest.fixture(scope="module", params=["reference-fixture", "tiny-preset"])
def source(request, tmp_path_factory, ref_tokenizer_path, run) -> dict:
    """The reference implementation's own checkpoint (rows of 256: the real mixes) and the tiny
    preset (rows of 128: the fallbacks), each with an F32 GGUF and an imatrix made by the CLI."""
    from mythos_convert.model.config import load_preset

    folder = tmp_path_factory.mktemp(request.param)
    if request.param == "reference-fixture":
        ckpt, tokenizer = require_reference("ref_small.pt"), require_reference("tokenizer/tokenizer.json")
    else:
        tokenizer = ref_tokenizer_path
        ckpt = make_checkpoint(folder / "ckpt.pt", load_preset("tiny").model, with_optimizer=False)
    f32 = export_gguf(ckpt, "f32", folder / "m-F32.gguf", tokenizer=tokenizer, verify=False).written[0].path
    args = ["imatrix", str(ckpt), "--out", str(folder / "im.gguf"), "--tokenizer", str(tokenizer)]
    proc = cli([*args, "--data", str(run / "calib.txt"), "--ctx", "64", "--chunks", "4"], folder)
    assert proc.returncode == 0, proc.stderr
    return {"ckpt": ckpt, "tokenizer": tokenizer, "f32": f32, "imatrix": folder / "im.gguf", "folder": folder}


@pytest.mark.llama_cpp
@pytest.mark.parametrize("with_imatrix", [False, True], ids=["plain", "imatrix"])
@pytest.mark.parametrize("outtype", QUANTIZED)
def test_every_type_is_llama_quantizes_file(source: dict, outtype: str, with_imatrix: bool, tmp_path: Path):
    """Types and bytes of every tensor equal llama_model_quantize's from the same F32 file (full mix)."""
    imatrix = source["imatrix"] if with_imatrix else None
    ours = export_gguf(
        source["ckpt"], outtype, tmp_path / "ours.gguf", tokenizer=source["tokenizer"], verify=False, imatrix=imatrix
    ).written[0]
    theirs = tmp_path / "theirs.gguf"
    if with_imatrix:
        sums, counts, _ = _entries(source["imatrix"])
        weights = {n: s.reshape(-1) / np.float32(counts[n]) for n, s in sums.items()}
        llama_quantize(source["f32"], theirs, ours.outtype.file_type, weights)
    else:
        llama_quantize(source["f32"], theirs, ours.outtype.file_type)
    assert_same_tensors(ours.path, theirs)


def test_imatrix_of_a_float32_hf_export_is_the_checkpoints(run: Path, tmp_path: Path):
    """Every command takes every source: the HF folder exported (float32) from the checkpoint gives
    the same importance matrix: the same entries, windows and counts, and the same sums up to float32
    forward-pass rounding. Alone, the two runs agree to the last bit; inside the full suite the HF run
    came out up to 7.7e-4 apart (relative, twice, same figure; cause not found), a wrong or transposed
    weight moves them by orders of magnitude more."""
    from mythos_convert.api import export_hf

    folder = export_hf(run / "ckpt.pt", tmp_path / "hf", dtype="float32", verify=False).folder
    args = ["imatrix", str(folder), "--out", str(tmp_path / "im.gguf"), "--data", str(run / "calib.txt")]
    proc = cli([*args, "--ctx", str(CTX), "--chunks", str(CHUNKS)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    ours, ours_counts, ours_reader = _entries(tmp_path / "im.gguf")
    theirs, theirs_counts, theirs_reader = _entries(run / "imatrix.gguf")
    assert ours_counts == theirs_counts
    assert ours.keys() == theirs.keys()
    for name in theirs:
        np.testing.assert_allclose(ours[name], theirs[name], rtol=1e-3, atol=0, err_msg=name)
    for key in ("imatrix.datasets", "imatrix.chunk_count", "imatrix.chunk_size"):
        assert ours_reader.fields[key].contents() == theirs_reader.fields[key].contents()
