"""Hostile or damaged files, driven through the real `mythos-convert` command (issue 25).

Each file below once ended as `internal error`, a hang or a silent pass. Every case in the table
must now end as `tests/test_bad_inputs.py` demands of bad input: exit 2, one `error:` line (the
last) naming the problem and the fix, no traceback, and the case's folder unchanged byte for byte.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from helpers import make_checkpoint, tiny_config
from test_bad_inputs import (
    Case,
    Outcome,
    assert_one_error_line,
    case,
    cli,
    cli_env,
    hf_variant,
    run_cases,
    run_cli,
    set_config,
    snapshot,
)

from mythos_convert.api import export_gguf, export_hf
from mythos_convert.quant.imatrix_file import quantized_matrices

pytestmark = pytest.mark.slow
TOK = "{W}/ck/tokenizer.json"
CK = "{W}/ck/ckpt.pt"
FIFO = "{W}/fifo"  # named pipes nobody writes to
Q4 = "--outtype q4_k_m --no-verify --outfile"
CLI_TIMEOUT = 120  # a case that blocks (a read from a pipe) fails here, not after test_bad_inputs' 300 s

CASES = [
    # a checkpoint whose weights are not floating point
    case("ckpt-int64-weights", "hf {W}/int64/ckpt.pt {D}/out", "int64", "floating point", "re-save"),
    case("ckpt-one-bool-weight", "gguf {W}/bool/ckpt.pt --outfile {D}/m.gguf", "norm.weight", "bool"),
    # GGUF files that are torn, foreign or lack tensors: eval and card refuse them as verify does
    case("eval-gguf-lacks-tensors", f"eval {{W}}/g/missing.gguf --tokenizer {TOK}", "missing.gguf", "lacks tensor"),
    case("eval-folder-gguf-lacks-tensors", "eval {D}/out", "missing.gguf", "lacks tensor", pre="copy:hf_missing_gguf"),
    case("card-gguf-torn", "card {D}/out", "m-F16.gguf", "not a readable GGUF", "remove it", pre="copy:hf_torn_gguf"),
    case("card-gguf-text", "card {D}/out", "m-F16.gguf", "not a readable GGUF", pre="copy:hf_text_gguf"),
    case("card-gguf-lacks-tensors", "card {D}/out", "missing.gguf", "lacks tensor", pre="copy:hf_missing_gguf"),
    # a tokenizer.json giving one id to two tokens: every reader refuses it (was: a GGUF vocabulary that varied by run)
    case("gguf-tokenizer-one-id-two-tokens", "gguf {W}/hf_dup --outfile {D}/m.gguf", "id 300", "'zzdup'", "two tokens"),
    case("hf-tokenizer-one-id-two-tokens", f"hf {CK} {{D}}/out --tokenizer {{W}}/hf_dup/tokenizer.json", "id 300"),
    case("verify-tokenizer-one-id-two-tokens", f"verify {{W}}/hf_dup --ckpt {CK}", "id 300", "two tokens"),
    case("push-tokenizer-one-id-two-tokens", "push {W}/hf_dup --repo me/x --dry-run", "id 300", "two tokens"),
    # repo ids: the whole text must be one (a trailing newline or non-ASCII letters are not), as the Hub's rules
    Case(
        "space-repo-trailing-newline",
        ("space", "{D}/sp", "--repo", "me/x-demo\n", "--model", "me/x", "--dry-run"),
        ("'me/x-demo\\n'", "not a Hub repo id"),
    ),
    Case(
        "space-model-trailing-newline",
        ("space", "{D}/sp", "--repo", "me/x-demo", "--model", "me/x\n", "--dry-run"),
        ("--model 'me/x\\n'", "not a Hub repo id"),
    ),
    Case(
        "push-repo-trailing-newline", ("push", "{W}/hf", "--repo", "me/x\n", "--dry-run"), ("'me/x\\n'", "OWNER/NAME")
    ),
    Case(
        "push-gguf-repo-trailing-newline",
        ("push", "{W}/hf", "--repo", "me/x", "--gguf-repo", "me/x-GGUF\n", "--dry-run"),
        ("--gguf-repo 'me/x-GGUF\\n'",),
    ),
    case("push-repo-non-ascii", "push {W}/hf --repo me/mythös --dry-run", "'me/mythös'", "OWNER/NAME"),
    case("push-repo-double-dot", "push {W}/hf --repo me/a..b --dry-run", "'me/a..b'", "OWNER/NAME"),
    # imatrix files whose counts or sums cannot be token counts or sums of squares
    case(
        "imatrix-count-nan",
        f"gguf {{W}}/hf --imatrix {{W}}/im/nan.gguf {Q4} {{D}}/m.gguf",
        "token count nan",
        "recompute",
    ),
    case("imatrix-count-inf", f"gguf {{W}}/hf --imatrix {{W}}/im/inf.gguf {Q4} {{D}}/m.gguf", "token count inf"),
    case("imatrix-count-negative", f"gguf {{W}}/hf --imatrix {{W}}/im/negcount.gguf {Q4} {{D}}/m.gguf", "count -5.0"),
    case("imatrix-sums-negative", f"gguf {{W}}/hf --imatrix {{W}}/im/negsum.gguf {Q4} {{D}}/m.gguf", "negative sums"),
    case(
        "imatrix-chunks-string",
        f"gguf {{W}}/hf --imatrix {{W}}/im/chunks.gguf {Q4} {{D}}/m.gguf",
        "chunk_count",
        "'many'",
    ),
    case("imatrix-counts-quantized", f"gguf {{W}}/hf --imatrix {{W}}/im/q8.gguf {Q4} {{D}}/m.gguf", "Q8_0", "not F32"),
    # config.json fields of the wrong JSON type: "false" is truthy, and a declared dtype no export holds
    case(
        "hf-config-tie-a-string", "native {W}/hf_tie_str {D}/back.pt", "tie_word_embeddings", "'false'", "true or false"
    ),
    case("hf-config-bias-a-string", "gguf {W}/hf_bias_str --outfile {D}/m.gguf", "attention_bias", "'no'"),
    case("hf-config-dtype-int8", "native {W}/hf_dtype_int8 {D}/back.pt", "torch_dtype", "'int8'", "float32"),
    case("hf-config-dtype-a-number", "gguf {W}/hf_dtype_num --outfile {D}/m.gguf", "torch_dtype is 5"),
    # safetensors headers whose shapes and offsets are not what the format says they are
    case("card-safetensors-shape-a-string", "card {D}/out", "model.norm.weight", "shape 'abc'", pre="copy:hf_st_shape"),
    case("card-safetensors-size-mismatch", "card {D}/out", "shape [32] needs 128", "re-export", pre="copy:hf_st_size"),
    case("push-safetensors-offsets-a-number", "push {W}/hf_st_offs --repo me/x --dry-run", "data_offsets 5"),
    case("push-safetensors-overlap", "push {W}/hf_st_overlap --repo me/x --dry-run", "overlapping", "re-export"),
    # GGUF header values of the wrong type
    case("eval-gguf-context-a-string", f"eval {{W}}/g/ctx_str.gguf --tokenizer {TOK}", "context_length", "'many'"),
    case("card-gguf-layers-a-string", "card {D}/out", "block_count = 'two'", "not a number", pre="copy:hf_layers_str"),
    # a named pipe or device where a file goes: refused by what it is, before anything opens it (a read would block)
    case("imatrix-fifo", f"gguf {{W}}/hf --imatrix {FIFO}/im.gguf {Q4} {{D}}/m.gguf", "im.gguf", "a named pipe"),
    case("imatrix-device", f"gguf {{W}}/hf --imatrix /dev/zero {Q4} {{D}}/m.gguf", "/dev/zero", "a device file"),
    case("eval-data-fifo", f"eval {{W}}/hf --data {FIFO}/text.txt", "data path", "text.txt", "a named pipe"),
    case("tokenizer-fifo", f"hf {CK} {{D}}/out --tokenizer {FIFO}/tokenizer.json", "tokenizer.json", "a named pipe"),
    case("ckpt-fifo", f"generate {FIFO}/ckpt.pt hello", "checkpoint", "ckpt.pt", "a named pipe"),
    case("model-gguf-fifo", f"generate {FIFO}/m.gguf hello", "GGUF file", "m.gguf", "a named pipe"),
    case("config-fifo", f"hf {CK} {{D}}/out --config {FIFO}/config.yaml", "config.yaml", "a named pipe"),
    case("verify-gguf-fifo", f"verify {FIFO}/m.gguf", "m.gguf", "a named pipe"),
    case("eval-target-fifo", f"eval {FIFO}/m.gguf", "TARGET", "m.gguf", "a named pipe"),
    case("card-meta-fifo", f"card {{D}}/out --meta {FIFO}/meta.yaml", "meta.yaml", "a named pipe", pre="copy:hf"),
]


@dataclass
class World:
    root: Path  # shared inputs: never written by any case
    cases: Path  # one folder per case
    env: dict[str, str]


def _variant(root: Path, name: str, edit) -> Path:
    """A copy of the good checkpoint with `edit(payload)` applied, tokenizer.json beside it."""
    payload = torch.load(root / "ck" / "ckpt.pt", weights_only=True)
    edit(payload)
    (root / name).mkdir()
    torch.save(payload, root / name / "ckpt.pt")
    shutil.copy(root / "ck" / "tokenizer.json", root / name / "tokenizer.json")
    return root / name / "ckpt.pt"


def _cast(dtype: torch.dtype, only: str | None = None):
    def edit(payload: dict) -> None:
        for key, value in payload["model"].items():
            if only is None or key == only:
                payload["model"][key] = value.to(dtype)

    return edit


def _gguf_without(src: Path, dst: Path, *drop: str, strings: dict[str, str] | None = None) -> Path:
    """A copy of a GGUF file, header and all, without the tensors named in `drop`, and with the
    header keys of `strings` set to those strings."""
    reader = gguf.GGUFReader(src)
    writer = gguf.GGUFWriter(dst, reader.fields["general.architecture"].contents())
    for name, entry in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        if strings and name in strings:
            writer.add_key_value(name, strings[name], gguf.GGUFValueType.STRING)
            continue
        kind = entry.types[0]
        sub = entry.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(name, entry.contents(), kind, sub_type=sub)
    for t in reader.tensors:
        if t.name not in drop:
            writer.add_tensor(t.name, t.data, raw_dtype=t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dst


def _duplicate_id(folder: Path) -> None:
    """tokenizer.json with a second token, 'zzdup', on the id of an existing one (300)."""
    spec = json.loads((folder / "tokenizer.json").read_text())
    assert 300 in spec["model"]["vocab"].values()
    spec["model"]["vocab"]["zzdup"] = 300
    (folder / "tokenizer.json").write_text(json.dumps(spec))


def _header_edit(edit):
    """Rewrite model.safetensors' JSON header with `edit(header)` applied, the tensor bytes kept."""

    def apply(folder: Path) -> None:
        data = (folder / "model.safetensors").read_bytes()
        size = struct.unpack("<Q", data[:8])[0]
        header = json.loads(data[8 : 8 + size])
        edit(header)
        text = json.dumps(header).encode()
        text += b" " * (-len(text) % 8)
        (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(text)) + text + data[8 + size :])

    return apply


def _overlap(header: dict) -> None:
    """model.norm.weight's offsets moved onto the first bytes of the embedding."""
    begin = header["model.embed_tokens.weight"]["data_offsets"][0]
    header["model.norm.weight"]["data_offsets"] = [begin, begin + 4 * header["model.norm.weight"]["shape"][0]]


def _imatrix(path: Path, count: float = 10.0, fill: float = 1.0, chunks: object = 1, counts_type=None) -> None:
    """An imatrix file in llama-imatrix's layout for the tiny model, with the values given."""
    writer = gguf.GGUFWriter(path, arch="llama")
    writer.add_type(gguf.GGUFType.IMATRIX)
    writer.add_array(gguf.Keys.IMatrix.DATASETS, ["text"])
    if isinstance(chunks, str):
        writer.add_string(gguf.Keys.IMatrix.CHUNK_COUNT, chunks)
    else:
        writer.add_uint32(gguf.Keys.IMatrix.CHUNK_COUNT, chunks)
    writer.add_uint32(gguf.Keys.IMatrix.CHUNK_SIZE, 128)
    for name, width in sorted(quantized_matrices(tiny_config(vocab_size=512)).items()):
        writer.add_tensor(name + ".in_sum2", np.full((1, width), fill, np.float32))
        if counts_type is None:
            writer.add_tensor(name + ".counts", np.array([[count]], np.float32))
        else:  # 32 counts as one Q8_0 block
            block = gguf.quants.quantize(np.full((1, 32), count, np.float32), counts_type)
            writer.add_tensor(name + ".counts", block, raw_dtype=counts_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory, ref_tokenizer_path: Path) -> World:
    root = tmp_path_factory.mktemp("hostile")
    W = root / "inputs"
    (W / "ck").mkdir(parents=True)
    shutil.copy(ref_tokenizer_path, W / "ck" / "tokenizer.json")
    make_checkpoint(W / "ck" / "ckpt.pt", tiny_config(vocab_size=512))
    _variant(W, "int64", _cast(torch.int64))
    _variant(W, "bool", _cast(torch.bool, "norm.weight"))
    _variant(W, "float64", _cast(torch.float64))

    export_hf(W / "ck" / "ckpt.pt", W / "hf", verify=False)
    (W / "g").mkdir()
    good = W / "g" / "m-F16.gguf"
    export_gguf(W / "hf", "f16", good, verify=False)
    missing = _gguf_without(good, W / "g" / "missing.gguf", "blk.1.ffn_up.weight", "output_norm.weight")
    _gguf_without(good, W / "g" / "ctx_str.gguf", strings={"llama.context_length": "many"})
    _gguf_without(good, W / "g" / "layers_str.gguf", strings={"llama.block_count": "two"})
    hf_variant(W, "hf_layers_str", lambda f: shutil.copy(W / "g" / "layers_str.gguf", f))
    hf_variant(W, "hf_missing_gguf", lambda f: shutil.copy(missing, f))
    hf_variant(W, "hf_torn_gguf", lambda f: (f / good.name).write_bytes(good.read_bytes()[: good.stat().st_size // 2]))
    hf_variant(W, "hf_dup", _duplicate_id)
    hf_variant(W, "hf_st_shape", _header_edit(lambda h: h["model.norm.weight"].__setitem__("shape", "abc")))
    hf_variant(W, "hf_st_size", _header_edit(lambda h: h["model.norm.weight"].__setitem__("shape", [32])))
    hf_variant(W, "hf_st_offs", _header_edit(lambda h: h["model.norm.weight"].__setitem__("data_offsets", 5)))
    hf_variant(W, "hf_st_overlap", _header_edit(_overlap))
    hf_variant(W, "hf_tie_str", set_config("tie_word_embeddings", "false"))
    hf_variant(W, "hf_bias_str", set_config("attention_bias", "no"))
    hf_variant(W, "hf_dtype_int8", set_config("torch_dtype", "int8"))
    hf_variant(W, "hf_dtype_num", set_config("torch_dtype", 5))
    (W / "im").mkdir()
    _imatrix(W / "im" / "nan.gguf", count=float("nan"))
    _imatrix(W / "im" / "inf.gguf", count=float("inf"))
    _imatrix(W / "im" / "negcount.gguf", count=-5.0)
    _imatrix(W / "im" / "negsum.gguf", fill=-1.0)
    _imatrix(W / "im" / "chunks.gguf", chunks="many")
    _imatrix(W / "im" / "q8.gguf", counts_type=gguf.GGMLQuantizationType.Q8_0)
    _imatrix(W / "im" / "good.gguf")
    (W / "fifo").mkdir()
    for name in ("im.gguf", "text.txt", "tokenizer.json", "ckpt.pt", "config.yaml", "m.gguf", "meta.yaml"):
        os.mkfifo(W / "fifo" / name)
    hf_variant(W, "hf_text_gguf", lambda f: (f / good.name).write_text("a text file named like a GGUF\n"))
    (root / "cases").mkdir()
    (root / "hf_home").mkdir()
    return World(W, root / "cases", cli_env(root / "hf_home"))


@pytest.fixture(scope="module")
def inputs_before(world: World) -> dict[str, str]:
    return snapshot(world.root)


@pytest.fixture(scope="module")
def outcomes(world: World, inputs_before: dict[str, str]) -> dict[str, Outcome]:
    """Run every case, each in its own folder, recording that folder."""

    def place(c: Case, d: Path) -> None:
        if c.pre is not None:  # a folder the command would write into
            shutil.copytree(world.root / c.pre.removeprefix("copy:"), d / "out")

    def run(c: Case, d: Path) -> subprocess.CompletedProcess:
        args = [a.format(W=world.root, D=d) for a in c.argv]
        try:
            return subprocess.run(cli(args), env=world.env, cwd=d, capture_output=True, text=True, timeout=CLI_TIMEOUT)
        except subprocess.TimeoutExpired as exc:
            return subprocess.CompletedProcess(exc.cmd, -9, "", f"timed out after {CLI_TIMEOUT} s (blocked)")

    return run_cases(CASES, world.cases, place, run)


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_hostile_file_is_one_line_exit_2_and_writes_nothing(c: Case, world: World, outcomes):
    outcome = outcomes[c.id]
    assert_one_error_line(outcome.proc, tuple(e.format(W=world.root, D=world.cases / c.id) for e in c.expect))
    assert outcome.after == outcome.before, "the case's folder changed (partial output or temp leftovers)"


def test_shared_inputs_untouched(world: World, outcomes, inputs_before):
    assert snapshot(world.root) == inputs_before


def test_float64_checkpoint_exports_as_float32(world: World, tmp_path: Path):
    """float64 weights are floating point: `hf` exports them as float32 and verify passes."""
    proc = run_cli(["hf", str(world.root / "float64" / "ckpt.pt"), str(tmp_path / "out")], world.env, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((tmp_path / "out" / "config.json").read_text())["torch_dtype"] == "float32"
    assert json.loads((tmp_path / "out" / "verify.json").read_text())["results"]["hf"]["passed"] is True


def test_eval_of_a_gguf_file_alone_runs(world: World, tmp_path: Path):
    """A GGUF file with no config.json beside it: perplexity from its own vocabulary (was internal error)."""
    shutil.copy(world.root / "g" / "m-F16.gguf", tmp_path)
    args = ["eval", str(tmp_path / "m-F16.gguf"), "--tokenizer", str(world.root / "ck" / "tokenizer.json")]
    proc = run_cli([*args, "--chunks", "1"], world.env, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "m-F16.gguf" in json.loads((tmp_path / "eval.json").read_text())["results"]


def test_a_sound_imatrix_is_still_accepted(world: World, tmp_path: Path):
    """The layout the hostile imatrix files share, with sound values: the checks refuse values, not it."""
    args = ["gguf", str(world.root / "hf"), "--imatrix", str(world.root / "im" / "good.gguf")]
    proc = run_cli([*args, *Q4.split(), str(tmp_path / "m.gguf")], world.env, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "m.gguf").is_file()
