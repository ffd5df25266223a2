"""NaN and Inf logits fail verify, whichever side holds them, and the failure names prompt and position.

Python's `max()` keeps a NaN only when it comes first and `nan > tol` is False, so a NaN in a later
sequence used to merge away and pass. Here: the merge and check functions on comparisons with one
NaN in the 4th of 5 sequences, real GGUF files with a NaN in one tensor run in llama.cpp (F32 and
Q4_0, whose 4-bit logits are gated only on being finite), an F16 file whose activations overflow
65504, and an HF export of a checkpoint holding a NaN (both sides NaN: diff NaN, old gate passed).
"""

from __future__ import annotations

import math
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from helpers import random_model, tiny_config

from mythos_convert.api import export_gguf
from mythos_convert.verify.gates import Tolerance
from mythos_convert.verify.parity import check, compare_logits, merge_comparisons

F16_LIKE = Tolerance(max_abs_diff=5e-2, mean_abs_diff=1e-2, min_argmax_agreement=0.97, greedy_must_match=False)


def _parts(bad_sequence: int, position: int, value: float, side: str = "export") -> list[dict]:
    """Five real comparisons (sequences of 20..28 tokens); one logit of one sequence set to `value`."""
    gen = torch.Generator().manual_seed(0)
    parts = []
    for i in range(5):
        ref = torch.randn(20 + 2 * i, 64, generator=gen)
        other = ref + 1e-4 * torch.randn(ref.shape, generator=gen)
        if i == bad_sequence:
            (other if side == "export" else ref)[position, 7] = value
        parts.append(compare_logits(ref, other, ("native", "GGUF")))
    return parts


def test_one_nan_in_the_4th_of_5_sequences_fails_and_is_located():
    parts = _parts(bad_sequence=3, position=16, value=float("nan"))
    merged = merge_comparisons(parts, [20, 22, 24, 26, 28])
    assert math.isnan(merged["max_abs_diff"]) and math.isnan(merged["mean_abs_diff"])
    passed, reasons = check(merged, F16_LIKE)
    assert not passed
    assert reasons[0] == "GGUF logits are NaN at prompt 4, position 17"
    # 4/5-bit types have no gate on the figures, only on finiteness: a NaN fails them too
    passed, reasons = check(merged, None)
    assert not passed and reasons == ["GGUF logits are NaN at prompt 4, position 17"]


def test_inf_on_the_native_side_is_named():
    parts = _parts(bad_sequence=1, position=0, value=float("inf"), side="native")
    passed, reasons = check(merge_comparisons(parts, [20, 22, 24, 26, 28]), None)
    assert not passed and reasons == ["native logits are +Inf at prompt 2, position 1"]


def test_figures_alone_with_a_later_nan_still_fail():
    """Comparisons without position records (as older callers built them): the merged NaN must not pass."""
    clean = {"max_abs_diff": 0.0, "mean_abs_diff": 0.0, "argmax_agreement": 1.0}
    parts = [dict(clean) for _ in range(5)]
    parts[3]["max_abs_diff"] = float("nan")
    merged = merge_comparisons(parts, [10] * 5)
    assert math.isnan(merged["max_abs_diff"])
    passed, reasons = check(merged, F16_LIKE)
    assert not passed and any("nan" in r.lower() for r in reasons)
    assert not check(merged, None)[0]


def test_finite_comparisons_still_pass():
    merged = merge_comparisons(_parts(bad_sequence=-1, position=0, value=0.0), [20, 22, 24, 26, 28])
    assert merged["nonfinite"] == [] and check(merged, F16_LIKE) == (True, [])


# --- real files ---------------------------------------------------------------------------------


def _checkpoint(folder: Path, tokenizer: Path, final_norm: float | None = None, nan_at: str | None = None) -> Path:
    """A tiny checkpoint with its tokenizer beside it; optionally a huge final norm or one NaN weight."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.json").write_bytes(tokenizer.read_bytes())
    cfg = tiny_config(vocab_size=512)
    model = random_model(cfg)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if final_norm is not None:
        state["norm.weight"].fill_(final_norm)
    if nan_at is not None:
        state[nan_at].view(-1)[3] = float("nan")
    path = folder / "ckpt.pt"
    torch.save({"model": state, "step": 1, "config": cfg.to_dict()}, path)
    return path


def _poison(path: Path, tensor: str) -> None:
    """Write one NaN into a tensor of a GGUF file: an F32 element, or the f16 scale of a Q8_0/Q4_0 block.

    A NaN scale makes every dot product with that block NaN. (A NaN that reaches a quantized matmul
    as an activation does not survive: llama.cpp quantizes activations to 8 bits first, which turns
    it into a finite value, so a NaN in attn_v of a Q4_0 file gives finite logits.)
    """
    info = {t.name: t for t in gguf.GGUFReader(path).tensors}[tensor]
    with path.open("r+b") as fh:
        if info.tensor_type == gguf.GGMLQuantizationType.F32:
            fh.seek(int(info.data_offset) + 4 * 3)
            fh.write(np.array([np.nan], dtype="<f4").tobytes())
        else:
            assert info.tensor_type in (gguf.GGMLQuantizationType.Q8_0, gguf.GGMLQuantizationType.Q4_0)
            fh.seek(int(info.data_offset))  # block 0: its f16 scale, then the 32 quantized weights
            fh.write(np.array([np.nan], dtype="<f2").tobytes())


@pytest.fixture(scope="module")
def plain_ckpt(tmp_path_factory, ref_tokenizer_path) -> Path:
    return _checkpoint(tmp_path_factory.mktemp("nonfinite"), ref_tokenizer_path)


@pytest.mark.llama_cpp
@pytest.mark.parametrize(("outtype", "tensor"), [("f32", "blk.0.attn_norm.weight"), ("q4_0", "token_embd.weight")])
def test_gguf_with_a_nan_in_one_tensor_fails_in_llama_cpp(plain_ckpt: Path, tmp_path: Path, outtype, tensor):
    from mythos_convert.verify.gguf import verify_gguf

    (written,) = export_gguf(plain_ckpt, outtype, tmp_path / "m-{ftype}.gguf", verify=False).written
    clean = verify_gguf(written.path, plain_ckpt, check_transformers=False, record=False, show=False)
    assert clean["passed"], clean["failures"]
    _poison(written.path, tensor)
    result = verify_gguf(written.path, plain_ckpt, check_transformers=False, record=False, show=False)
    assert not result["passed"]
    assert result["failures"][0] == "GGUF logits are NaN at prompt 1, position 1"
    assert f"{tensor} holds NaN" in "\n".join(result["failures"])  # the tensor check names the tensor
    if outtype == "q4_0":  # the tied output row of token 0 (`<unk>`) is NaN: the KL figures are NaN, and fail
        assert "mean KL<=0.67" in result["tolerance"] and math.isnan(result["mean_kl"])


@pytest.mark.llama_cpp
def test_f16_overflow_fails_where_f32_passes(tmp_path: Path, ref_tokenizer_path: Path):
    """A final norm of 3e5 (finite in f32) pushes the output projection's input past f16's 65504."""
    from mythos_convert.verify.gguf import verify_gguf

    ckpt = _checkpoint(tmp_path / "big", ref_tokenizer_path, final_norm=3e5)
    written = {
        w.outtype.name: w.path
        for w in export_gguf(ckpt, "f32,f16", tmp_path / "big-{ftype}.gguf", verify=False).written
    }
    f32 = verify_gguf(written["f32"], ckpt, check_transformers=False, record=False, show=False)
    assert f32["passed"], f32["failures"]  # the model itself is fine in float32
    f16 = verify_gguf(written["f16"], ckpt, check_transformers=False, record=False, show=False)
    assert not f16["passed"]
    assert f16["failures"][0] in (
        "GGUF logits are NaN at prompt 1, position 1",
        "GGUF logits are +Inf at prompt 1, position 1",
        "GGUF logits are -Inf at prompt 1, position 1",
    )


def test_hf_export_of_a_nan_checkpoint_fails_verify(tmp_path: Path, ref_tokenizer_path: Path):
    """Both sides NaN: |diff| is NaN everywhere, which `>` never flagged; now each side is named."""
    from mythos_convert.api import export_hf
    from mythos_convert.errors import MythosError
    from mythos_convert.verify.record import load_results

    ckpt = _checkpoint(tmp_path / "nan", ref_tokenizer_path, nan_at="layers.0.attn_norm.weight")
    out = tmp_path / "out"
    with pytest.raises(MythosError, match="native logits are NaN at prompt 1, position 1") as caught:
        export_hf(ckpt, out, allow_nonfinite=True)
    assert "transformers logits are NaN at prompt 1, position 1" in str(caught.value)
    recorded = load_results(out)["hf"]
    assert recorded["passed"] is False and recorded["max_abs_diff"] == "NaN"  # strict JSON, not a bare NaN
