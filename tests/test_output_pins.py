"""The bytes of every output, pinned: a refactor that changes one byte of an export fails here.

A fixed checkpoint (weights drawn with numpy's PCG64, the same on every CPU; the reference
implementation's own tokenizer from ../shared) is exported to an HF folder and to GGUF files, and
every file's sha256 is compared with a pinned value. A change that alters an output on purpose
updates the pin in the same commit and says why. Not pinned: `.mythos-local.json` (local absolute
paths) and README.md (the card has its own golden test, tests/golden/).

Every byte the project decides is pinned, and nothing the day's dependency versions decide:
`config.json` and `generation_config.json` carry `transformers_version`, the installed
transformers' version (what transformers itself writes), so that one field is checked on its own
(it must equal `transformers.__version__`) and the rest of each file is pinned with the field's
value replaced by a fixed placeholder.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from helpers import require_reference, tiny_config

from mythos_convert.api import export_gguf, export_hf
from mythos_convert.model.model import Mythos

PINS = {
    "config.json": "4ddc6836aee754034347f4752e4fe9684e97944216187b4ac935a0c00680710e",
    "generation_config.json": "f82f1e537de15f26cb1034c083eefc26043028f1aef86cf1d5095c175c3a5c4e",
    "m-F16.gguf": "41f5c752081d34dcd5a9969c067da471f58a9bd82a37d79918c0db681a7887a8",
    "m-F32.gguf": "cf6bcd099004153cb0e0b0a677ac3454aecef31e8a38467c0f64696c3740b058",
    "m-Q4_0.gguf": "73bb9dcd9afa181779a008577231d51502d3570b854b394edb94103106a5e855",
    "m-Q4_K_M.gguf": "789015d30aa960d2f2c3db2e8a5bdd8ce963470d9547c34a3d70dd34620adaae",
    "m-Q8_0.gguf": "ed0c02def72bf4d540fff120c7676d8bcfa289f3d0d78182d977ed138de7f55c",
    "model.safetensors": "1965d3e8de081730a6452afe9eb76d2fb3f0d5f8bb9ed0d355bd681d793c49b9",
    "mythos.json": "882497d6a3b5d201007179dbd2a9eb177caa5bd9bfb4c6d06832e5acec611d99",
    "special_tokens_map.json": "87facbb4d68469e7bf2729e0586deb4cc048061ee7c2f5d234ed8d4e3dd82069",
    "tokenizer.json": "3703ec524f5390efb89846f8102107a83ff16f4e81fb5cba794d0a2e9cfd9c8e",
    "tokenizer_config.json": "05b9e9e77c26a498cb28b1087d5463d42942d6eac584001cc3026722a9ac3c0e",
}


def fixed_checkpoint(path: Path) -> Path:
    """The tiny config's tensors from numpy's PCG64 (seed 7): bit-identical on every machine."""
    cfg = tiny_config(512)
    rng = np.random.default_rng(7)
    state = {}
    for name, tensor in Mythos(cfg).state_dict().items():
        if name.startswith("rope_"):
            state[name] = tensor  # computed from rope_theta, deterministic
        else:
            state[name] = torch.from_numpy((rng.standard_normal(tuple(tensor.shape)) * 0.1).astype(np.float32))
    state["output.weight"] = state["embedding.weight"]
    torch.save({"model": state, "step": 5, "config": cfg.to_dict()}, path)
    return path


@pytest.fixture(scope="module")
def outputs(tmp_path_factory) -> Path:
    tokenizer = require_reference("tokenizer/tokenizer.json")
    folder = tmp_path_factory.mktemp("pins")
    shutil.copy(tokenizer, folder / "tokenizer.json")
    ckpt = fixed_checkpoint(folder / "ckpt.pt")
    out = export_hf(ckpt, folder / "out", verify=False, card=False).folder
    export_gguf(out, "f32,f16,q8_0,q4_0,q4_k_m", out / "m-{ftype}.gguf", verify=False)
    return out


# The files whose `transformers_version` is the installed transformers' (checked on its own below).
VERSIONED = ("config.json", "generation_config.json")
PLACEHOLDER = b'"transformers_version": "<installed>"'


def project_bytes(path: Path) -> bytes:
    """The file's bytes, `transformers_version`'s value (exactly one, the installed one) replaced by a placeholder."""
    data = path.read_bytes()
    if path.name not in VERSIONED:
        return data
    field = f'"transformers_version": "{transformers.__version__}"'.encode()
    assert data.count(field) == 1, f"{path.name} should carry {field.decode()} exactly once"
    return data.replace(field, PLACEHOLDER)


def hashes(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(project_bytes(p)).hexdigest()
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name not in (".mythos-local.json", "README.md")
    }


def test_every_output_byte_is_pinned(outputs: Path):
    assert hashes(outputs) == PINS


@pytest.mark.parametrize("name", VERSIONED)
def test_transformers_version_is_the_installed_one(outputs: Path, name: str):
    """What transformers' own save_pretrained writes: the version that wrote (and loads) the file."""
    assert json.loads((outputs / name).read_text())["transformers_version"] == transformers.__version__
