"""Independent ground truth: a checkpoint, logits and greedy tokens written by the reference implementation.

Every other checkpoint in the tests is made by this project's own model, so a mistake shared by the
model and the converter could not show there. `../shared/fixtures/reference/` (beside the clone; its
README says how it was made) was written by the reference's own `Mythos`, tokenizer and `generate`.
Here the HF export must reproduce its logits in transformers, its greedy tokens up to the first
`<eos>`, the GGUF F32 file must do the same in llama.cpp, and native -> HF -> native must give back
its tensors bit for bit.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import REFERENCE, REFERENCE_LOGITS_ATOL

from mythos_convert.api import export_gguf, export_hf
from mythos_convert.engines.hf import load_hf_model
from mythos_convert.engines.llamacpp import llama_logits, load_llama
from mythos_convert.export.native import export_native

EOS = 2

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def reference() -> dict:
    if not (REFERENCE / "ref_small.pt").is_file():
        pytest.fail(f"the reference fixture is missing: expected {REFERENCE} beside the clone (../shared)")
    expected = json.loads((REFERENCE / "ref_small_expected.json").read_text())
    return {"expected": expected, "logits": torch.load(REFERENCE / "ref_small_logits.pt")}


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "hf"
    export_hf(
        REFERENCE / "ref_small.pt", out, tokenizer=REFERENCE / "tokenizer" / "tokenizer.json", verify=False, card=False
    )
    return out


@pytest.fixture(scope="module")
def gguf_f32(hf_folder) -> Path:
    return export_gguf(hf_folder, "f32", verify=False).written[0].path


def _up_to_eos(ids: list[int]) -> list[int]:
    return ids[: ids.index(EOS) + 1] if EOS in ids else ids


def test_hf_export_reproduces_the_reference_logits(reference, hf_folder):
    model = load_hf_model(hf_folder)
    with torch.no_grad():
        seq = model(reference["logits"]["ids"]).logits[0]
        last = [model(torch.tensor([ids])).logits[0, -1] for ids in reference["expected"]["ids"]]
    assert float((seq - reference["logits"]["logits"]).abs().max()) <= REFERENCE_LOGITS_ATOL
    want = torch.tensor(reference["expected"]["logits_last"])
    assert float((torch.stack(last) - want).abs().max()) <= REFERENCE_LOGITS_ATOL


def test_hf_export_tokenizes_like_the_reference(reference, hf_folder):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(hf_folder)
    got = [tok(text)["input_ids"] for text in reference["expected"]["prompts"]]
    assert got == reference["expected"]["ids"]  # <bos> + text, no <eos>


def test_hf_export_reproduces_the_reference_greedy_tokens(reference, hf_folder):
    model = load_hf_model(hf_folder)
    expected = reference["expected"]
    stopped_at_eos = 0
    for ids, want in zip(expected["ids"], expected["greedy"], strict=True):
        with torch.no_grad():
            got = model.generate(torch.tensor([ids]), max_new_tokens=len(want) - len(ids), do_sample=False)[0]
        n = len(ids)
        assert got.tolist()[n:] == _up_to_eos(want[n:])
        stopped_at_eos += EOS in want[n:]
    assert stopped_at_eos == 1  # the README's second prompt: transformers stops at its <eos>


def test_gguf_f32_in_llama_cpp_reproduces_the_reference(reference, gguf_f32):
    expected = reference["expected"]
    llm = load_llama(gguf_f32, n_ctx=128)
    try:
        seq = llama_logits(llm, reference["logits"]["ids"][0].tolist())
        assert float((seq - reference["logits"]["logits"]).abs().max()) <= 1e-4
        for ids, last, want in zip(expected["ids"], expected["logits_last"], expected["greedy"], strict=True):
            assert float((llama_logits(llm, ids)[-1] - torch.tensor(last)).abs().max()) <= 1e-4
            llm.reset()
            n_new = len(want) - len(ids)
            tokens = llm.generate(ids, temp=0.0, top_k=1, reset=True)  # endless: llama.cpp's own greedy sampler
            got = [int(next(tokens)) for _ in range(n_new)]
            assert _up_to_eos(got) == _up_to_eos(want[len(ids) :])
    finally:
        llm.close()


def test_native_to_hf_to_native_is_bit_exact(hf_folder, tmp_path):
    original = torch.load(REFERENCE / "ref_small.pt", weights_only=False)
    back = torch.load(export_native(hf_folder, tmp_path / "back.pt"), weights_only=False)
    assert back["config"] == original["config"]
    assert set(back["model"]) == set(original["model"])  # the RoPE tables (buffers) included
    for name, a in original["model"].items():
        b = back["model"][name]
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a.numpy(), b.numpy()), name
