"""verify fails on tampered exports, and its message names the cause.

One table of cases. Each takes a correct export (an HF folder, or an F32/Q4_0 GGUF of the tiny
checkpoint), breaks it the way a converter bug or a hand edit would, runs the real verifier
(transformers or llama.cpp against the native model) and asserts that it fails and that the
failure names what was done: the config field, the tokenizer entry, the GGUF header key, the
tensor, or the first block and sub-layer whose output diverges.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
import pytest
from safetensors.torch import load_file, save_file

from mythos_convert.api import export_gguf, export_hf
from mythos_convert.formats import permute as gguf_permute
from mythos_convert.verify.gguf import verify_gguf
from mythos_convert.verify.hf import verify_hf

pytestmark = pytest.mark.usefixtures("one_thread")


# --- how to break an HF folder ------------------------------------------------------------------


def _edit_json(path: Path, edit: Callable[[dict], None]) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data, ensure_ascii=False))


def _rope_theta(folder: Path) -> None:
    def edit(cfg: dict) -> None:
        cfg["rope_theta"] = 20000.0
        if "rope_parameters" in cfg:
            cfg["rope_parameters"]["rope_theta"] = 20000.0

    _edit_json(folder / "config.json", edit)


def _rms_norm_eps(folder: Path) -> None:
    _edit_json(folder / "config.json", lambda cfg: cfg.update(rms_norm_eps=0.1))


def _swap_two_ids(folder: Path) -> None:
    def edit(tok: dict) -> None:
        vocab = tok["model"]["vocab"]
        a, b = (next(t for t, i in vocab.items() if i == wanted) for wanted in (300, 301))
        vocab[a], vocab[b] = vocab[b], vocab[a]

    _edit_json(folder / "tokenizer.json", edit)


def _drop_a_merge(folder: Path) -> None:
    _edit_json(folder / "tokenizer.json", lambda tok: tok["model"]["merges"].pop(3))


def _eos_appended(folder: Path) -> None:
    def edit(tok: dict) -> None:
        bos, eos = (next(t["id"] for t in tok["added_tokens"] if t["content"] == name) for name in ("<bos>", "<eos>"))
        tok["post_processor"] = {
            "type": "TemplateProcessing",
            "single": [
                {"SpecialToken": {"id": "<bos>", "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": "<eos>", "type_id": 0}},
            ],
            "pair": [
                {"SpecialToken": {"id": "<bos>", "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": "<eos>", "type_id": 0}},
                {"Sequence": {"id": "B", "type_id": 1}},
            ],
            "special_tokens": {
                "<bos>": {"id": "<bos>", "ids": [bos], "tokens": ["<bos>"]},
                "<eos>": {"id": "<eos>", "ids": [eos], "tokens": ["<eos>"]},
            },
        }

    _edit_json(folder / "tokenizer.json", edit)


def _edit_weight(folder: Path, name: str, edit: Callable) -> None:
    path = folder / "model.safetensors"
    tensors = load_file(path)
    tensors[name] = edit(tensors[name].clone())
    save_file(tensors, path, metadata={"format": "pt"})


def _scale_k_proj(folder: Path) -> None:
    _edit_weight(folder, "model.layers.0.self_attn.k_proj.weight", lambda w: w * 1.01)


def _nan_in_mlp(folder: Path) -> None:
    def edit(w):
        w[5, 7] = float("nan")
        return w

    _edit_weight(folder, "model.layers.1.mlp.down_proj.weight", edit)


# --- how to break a GGUF file -------------------------------------------------------------------


def _export_with(monkeypatch, ckpt: Path, out: Path, outtype: str = "f32", **transforms) -> Path:
    for key, fn in transforms.items():
        monkeypatch.setitem(gguf_permute.TRANSFORMS, key, fn)
    return export_gguf(ckpt, outtype, out, verify=False).written[0].path


def _set_field(path: Path, key: str, value) -> None:
    """Change one header value in place, as llama.cpp's gguf_set_metadata.py does."""
    reader = gguf.GGUFReader(path, "r+")
    field = reader.get_field(key)
    field.parts[field.data[0]][0] = value


def _edit_tensor(path: Path, name: str, edit: Callable[[np.ndarray], None]) -> None:
    reader = gguf.GGUFReader(path, "r+")
    tensor = next(t for t in reader.tensors if t.name == name)
    edit(tensor.data)


@dataclass(frozen=True)
class Case:
    kind: str  # "hf" or the GGUF outtype
    tamper: Callable  # (path, monkeypatch, ckpt) -> the target to verify
    causes: tuple[str, ...]  # each must appear in the failures


def _hf(edit: Callable[[Path], None]) -> Callable:
    def tamper(folder: Path, monkeypatch, ckpt: Path) -> Path:
        edit(folder)
        return folder

    return tamper


CASES: dict[str, Case] = {
    "rope_theta changed in config.json": Case(
        "hf",
        _hf(_rope_theta),
        (
            "config.json's rope_theta is 20000.0, the checkpoint's rope_theta is 10000.0",
            "first divergence: block 0 attention (self_attn)",
        ),
    ),
    "rms_norm_eps changed in config.json": Case(
        "hf",
        _hf(_rms_norm_eps),
        (
            "config.json's rms_norm_eps is 0.1, the checkpoint's norm_eps is 1e-05",
            "first divergence: block 0 attention norm (input_layernorm)",
        ),
    ),
    "two token ids swapped in tokenizer.json": Case(
        "hf",
        _hf(_swap_two_ids),
        ("tokenizer.json's vocabulary differs in 2 id(s): ", "is id 301 there, 300 in the native tokenizer"),
    ),
    "a merge removed from tokenizer.json": Case(
        "hf", _hf(_drop_a_merge), ("tokenizer.json lacks 1 merge(s) of the native tokenizer",)
    ),
    "post-processor appends <eos> again": Case(
        "hf", _hf(_eos_appended), ("AutoTokenizer ends a prompt with <eos>: generate would stop early",)
    ),
    "k_proj scaled by 1.01 (HF)": Case(
        "hf", _hf(_scale_k_proj), ("max |diff|", "first divergence: block 0 attention (self_attn)")
    ),
    "NaN in one weight (HF)": Case(
        "hf",
        _hf(_nan_in_mlp),
        ("transformers logits are NaN at prompt 1, position 1", "first divergence: block 1 MLP (mlp)"),
    ),
    "q/k rows not permuted (GGUF)": Case(
        "f32",
        lambda out, mp, ckpt: _export_with(mp, ckpt, out, permute_q=lambda w, c: w, permute_k=lambda w, c: w),
        (
            "blk.0.attn_q.weight matches the source not permuted",
            "blk.1.attn_k.weight matches the source not permuted",
        ),
    ),
    "k permuted with the query head count (GGUF)": Case(
        "f32",
        lambda out, mp, ckpt: _export_with(
            mp, ckpt, out, permute_k=lambda w, c: gguf_permute.permute_rows(w, c.n_heads)
        ),
        ("blk.0.attn_k.weight matches the source permuted with 4 heads, not 2",),
    ),
    "head_count_kv wrong in the GGUF header": Case(
        "f32",
        lambda out, mp, ckpt: _set_field(p := _export_with(mp, ckpt, out), "llama.attention.head_count_kv", 4) or p,
        ("the GGUF header's llama.attention.head_count_kv is 4, the checkpoint's n_kv_heads is 2",),
    ),
    "attn_k scaled by 1.01 (GGUF)": Case(
        "f32",
        lambda out, mp, ckpt: (
            _edit_tensor(p := _export_with(mp, ckpt, out), "blk.0.attn_k.weight", lambda d: d.__imul__(1.01)) or p
        ),
        ("max |diff|", "blk.0.attn_k.weight is the source scaled by 1.01"),
    ),
    "NaN in one weight (GGUF F32)": Case(
        "f32",
        lambda out, mp, ckpt: (
            _edit_tensor(
                p := _export_with(mp, ckpt, out), "blk.0.attn_v.weight", lambda d: d.__setitem__((3, 5), np.nan)
            )
            or p
        ),
        ("GGUF logits are NaN at prompt 1", "blk.0.attn_v.weight holds NaN (1 value(s), row(s) 3)"),
    ),
    "NaN block scale in a Q4_0 file (finite logits)": Case(
        "q4_0",
        lambda out, mp, ckpt: (
            _edit_tensor(
                p := _export_with(mp, ckpt, out, "q4_0"),
                "blk.0.attn_v.weight",
                lambda d: d[0, :2].view(np.float16).__setitem__(0, np.float16("nan")),
            )
            or p
        ),
        ("blk.0.attn_v.weight holds NaN",),
    ),
}


@pytest.fixture(scope="module")
def hf_export(tiny_ckpt, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("clean") / "hf"
    export_hf(tiny_ckpt, out, verify=False, card=False)
    return out


def test_the_untampered_exports_pass(hf_export, tiny_ckpt, tmp_path):
    r = verify_hf(hf_export, tiny_ckpt, record=False, show=False)
    assert r["passed"], r["failures"]
    path = export_gguf(tiny_ckpt, "f32", tmp_path / "clean.gguf", verify=False).written[0].path
    g = verify_gguf(path, tiny_ckpt, check_transformers=False, record=False, show=False)
    assert g["passed"], g["failures"]
    assert g["tensors"]["above_bound"] == [] and g["tensors"]["worst_rel_error"] == {"F32": 0.0}


@pytest.mark.parametrize("name", list(CASES))
def test_verify_fails_naming_the_cause(name, hf_export, tiny_ckpt, tmp_path, monkeypatch):
    case = CASES[name]
    if case.kind == "hf":
        folder = tmp_path / "hf"
        shutil.copytree(hf_export, folder)
        target = case.tamper(folder, monkeypatch, tiny_ckpt)
        monkeypatch.undo()
        result = verify_hf(target, tiny_ckpt, record=False, show=False)
    else:
        target = case.tamper(tmp_path / f"t-{case.kind}.gguf", monkeypatch, tiny_ckpt)
        monkeypatch.undo()  # the verifier runs unpatched
        result = verify_gguf(target, tiny_ckpt, check_transformers=False, record=False, show=False)
    assert not result["passed"]
    text = "\n".join(result["failures"])
    for cause in case.causes:
        assert cause in text, text


def test_a_transformers_greedy_step_that_differs_is_named(hf_export, tiny_ckpt, monkeypatch):
    """transformers changed only where it continues a prompt on its KV cache (every compared logit intact)
    fails verify, naming the greedy step, its position and both tokens."""
    import mythos_convert.verify.hf as hf_module

    load, seen = hf_module.load_hf_model, {}

    def hooked(folder):
        model = load(folder)

        def hook(_module, args, kwargs, out):  # the row that picks greedy token 5 rolled by one id
            cache = kwargs.get("cache", kwargs.get("past_key_values"))
            if cache is None:
                return
            new = (args[0] if args else kwargs["input_ids"]).shape[1]
            before = cache.get_seq_length() - new  # the cache has these tokens' keys already
            row = seen.setdefault("prompt", before) + 3 - before
            if 0 <= row < new:
                out.logits[0, row] = out.logits[0, row].roll(1)

        model.register_forward_hook(hook, with_kwargs=True)
        return model

    monkeypatch.setattr(hf_module, "load_hf_model", hooked)
    result = verify_hf(hf_export, tiny_ckpt, record=False, show=False)
    assert not result["passed"] and not result["greedy_equal"]
    assert result["max_abs_diff"] == 0.0  # the logits verify compares are untouched
    text = "\n".join(result["failures"])
    assert "greedy 32-token generations differ" in text, text
    named = f"transformers' greedy token 5 of 32 (position {seen['prompt'] + 5} of the sequence) is id "
    assert named in text, text
    ids = text.split(named)[1].split(" (transformers' logits")[0]
    theirs, ours = (int(x) for x in ids.split(", the native model's is id "))
    assert theirs == (ours + 1) % 512
