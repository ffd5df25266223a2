"""A DCP checkpoint folder is a source like ckpt.pt: the same HF and GGUF bytes, and bad folders refused.

The folders are written by torch.distributed.checkpoint itself (tests/dcpkit.py): by one process,
by two gloo processes each holding its row shard of every tensor (FSDP2's layout), and in bf16.
"""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from dcpkit import save_pair

from mythos_convert.api import export_gguf, export_hf
from mythos_convert.errors import MythosError
from mythos_convert.formats.dcp_meta import write_sidecar
from mythos_convert.source import open_source

pytestmark = pytest.mark.usefixtures("one_thread")

LAYOUTS = {"one-process": (1, torch.float32), "two-gloo-ranks": (2, torch.float32), "bf16": (1, torch.bfloat16)}


@pytest.fixture(scope="module", params=list(LAYOUTS))
def pair(request, tmp_path_factory, tiny_cfg, ref_tokenizer_path):
    world, dtype = LAYOUTS[request.param]
    root = tmp_path_factory.mktemp(f"dcp-{request.param}")
    ckpt, folder = save_pair(root, tiny_cfg, ref_tokenizer_path, world_size=world, dtype=dtype)
    return request.param, world, ckpt, folder


def _files(folder: Path, names: list[str]) -> dict[str, bytes]:
    return {n: (folder / n).read_bytes() for n in names}


def test_the_folder_holds_one_shard_per_rank(pair):
    _, world, _, folder = pair
    assert sorted(p.name for p in folder.glob("*.distcp")) == [f"__{r}_0.distcp" for r in range(world)]


def test_every_tensor_reads_back_equal_to_the_checkpoints(pair):
    _, _, ckpt, folder = pair
    native, dcp = open_source(ckpt), open_source(folder)
    assert list(dcp.stored) == list(native.stored)
    for name in native.stored:
        a, b = native.get(native.stored[name]), dcp.get(dcp.stored[name])
        assert a.dtype == b.dtype and torch.equal(a, b), name
    assert dcp.checkpoint.step == 123 and dcp.config == native.config


def test_hf_export_is_byte_identical(pair, tmp_path):
    _, _, ckpt, folder = pair
    a = export_hf(ckpt, tmp_path / "a", verify=False, card=False)
    b = export_hf(folder, tmp_path / "b", verify=False, card=False)
    same = ["model.safetensors", "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"]
    assert a.files == b.files
    assert _files(a.folder, same) == _files(b.folder, same)


def test_gguf_f16_and_q8_0_are_byte_identical(pair, tmp_path):
    _, _, ckpt, folder = pair
    a = export_gguf(ckpt, "f16,q8_0", tmp_path / "a-{ftype}.gguf", verify=False)
    b = export_gguf(folder, "f16,q8_0", tmp_path / "b-{ftype}.gguf", verify=False)
    assert len(a.written) == len(b.written) == 2
    for wa, wb in zip(a.written, b.written, strict=True):
        assert wa.path.read_bytes() == wb.path.read_bytes(), wa.path.name


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mythos_convert", *args], capture_output=True, text=True, timeout=600)


def test_cli_hf_and_gguf_from_the_two_rank_folder_verify(tmp_path, tiny_cfg, ref_tokenizer_path):
    """The commands as a user runs them, with their parity checks (native engine on the DCP folder)."""
    _, folder = save_pair(tmp_path / "src", tiny_cfg, ref_tokenizer_path, world_size=2)
    hf = _cli("hf", str(folder), str(tmp_path / "hf"), "--quiet")
    assert hf.returncode == 0, hf.stdout + hf.stderr
    gg = _cli("gguf", str(folder), "--outtype", "f32", "--outfile", str(tmp_path / "m-{ftype}.gguf"), "--quiet")
    assert gg.returncode == 0, gg.stdout + gg.stderr
    again = _cli("verify", str(tmp_path / "hf"), "--quiet")  # finds the DCP folder it recorded
    assert again.returncode == 0, again.stdout + again.stderr


# ---- bad folders: one error line naming the problem, exit 2, nothing written --------------------


@pytest.fixture(scope="module")
def two_rank(tmp_path_factory, tiny_cfg, ref_tokenizer_path):
    _, folder = save_pair(tmp_path_factory.mktemp("bad"), tiny_cfg, ref_tokenizer_path, world_size=2)
    return folder


def _copy(folder: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "run" / folder.name
    shutil.copytree(folder.parent, tmp_path / "run")
    return dest


class _Boom:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def _missing_rank(folder: Path) -> str:
    (folder / "__1_0.distcp").unlink()
    return "lacks rank 1's shard file __1_0.distcp"


def _world_size(folder: Path) -> str:
    write_sidecar(folder, open_source(folder).config.to_dict(), 123, 1)
    return "written by rank 1, but mythos.json says the checkpoint was saved by 1 process"


def _truncated(folder: Path) -> str:
    shard = folder / "__0_0.distcp"
    shard.write_bytes(shard.read_bytes()[:1000])
    return "the shard is truncated"


def _config_lies(folder: Path) -> str:
    cfg = open_source(folder).config.to_dict()
    write_sidecar(folder, {**cfg, "n_layers": 1}, 123, 2)
    return "tensor layers.1.attn_norm.weight is beyond the config's 1 layers"


def _shape_lies(folder: Path) -> str:
    from mythos_convert.formats.dcp_safe import read_dcp_metadata

    meta = read_dcp_metadata(folder)
    md = meta.state_dict_metadata["model.norm.weight"]
    md.size = torch.Size([md.size[0] * 2])
    md.chunks[-1].sizes = torch.Size([md.chunks[-1].sizes[0] + md.size[0] // 2])
    (folder / ".metadata").write_bytes(pickle.dumps(meta))
    return "tensor norm.weight has shape (128,) but the config expects (64,)"


def _chunks_lie(folder: Path) -> str:
    from mythos_convert.formats.dcp_safe import read_dcp_metadata

    meta = read_dcp_metadata(folder)
    md = meta.state_dict_metadata["model.norm.weight"]
    md.chunks = md.chunks[:1]
    (folder / ".metadata").write_bytes(pickle.dumps(meta))
    return "the chunks of model.norm.weight in its .metadata hold 32 values"


def _hostile_pickle(folder: Path) -> str:
    (folder / ".metadata").write_bytes(pickle.dumps(_Boom()))
    return "is not a readable DCP index"


BAD = {
    "missing-rank-shard": _missing_rank,
    "world-size": _world_size,
    "truncated-shard": _truncated,
    "config-not-the-tensors": _config_lies,
    "shape-lies": _shape_lies,
    "chunks-lie": _chunks_lie,
    "hostile-pickle": _hostile_pickle,
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_folder_is_one_error_line_and_nothing_written(case, two_rank, tmp_path):
    folder = _copy(two_rank, tmp_path)
    expected = BAD[case](folder)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(MythosError) as info:
        export_gguf(folder, "f16", tmp_path / "x.gguf", verify=False)
    assert expected in str(info.value)
    run = _cli("hf", str(folder), str(tmp_path / "out"), "--quiet")  # the command: one line, exit 2
    assert run.returncode == 2, run.stdout + run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and expected in lines[0], run.stderr
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    assert not (Path.cwd() / "PWNED").exists() and not (folder / "PWNED").exists()


def test_imatrix_and_eval_read_the_folder_as_the_checkpoint(tmp_path, tiny_cfg, ref_tokenizer_path):
    from mythos_convert.evaluate.targets import resolve_targets
    from mythos_convert.quant.imatrix import compute_imatrix

    ckpt, folder = save_pair(tmp_path, tiny_cfg, ref_tokenizer_path, world_size=1)
    text = tmp_path / "calib.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 40)
    a = compute_imatrix(ckpt, data=[text], ctx=32, chunks=2)
    b = compute_imatrix(folder, data=[text], ctx=32, chunks=2)
    assert a.counts == b.counts and sorted(a.sums) == sorted(b.sums) and len(a.sums) == 7 * tiny_cfg.n_layers
    for name in a.sums:
        assert np.allclose(a.sums[name], b.sums[name], rtol=1e-6, atol=0), name
    (target,) = resolve_targets([folder])
    assert target.kind == "native" and target.source.path == folder
    assert target.size == sum(p.stat().st_size for p in folder.iterdir() if p.name != "tokenizer.json")
