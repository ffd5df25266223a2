"""`gguf --target-bpw/--target-size` end to end: the CLI on the reference checkpoint (trained, rows
of 256, so every K-quant applies), the files read back, llama.cpp's own quantizer given the printed
recipe, verify's gate, bad budgets.

One CLI run (module fixture) writes F32, Q4_K_M and three searched files and verifies them in
llama.cpp; the tests read what it left.
"""

from __future__ import annotations

import ctypes
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import gguf
import numpy as np
import pytest
from helpers import REFERENCE, require_reference, sample_corpus

from mythos_convert.errors import MythosError
from mythos_convert.export.gguf import write_gguf_export
from mythos_convert.export.gguf_target import parse_targets
from mythos_convert.quant import recipe as recipes
from mythos_convert.verify.gates import GGUF_TOLERANCES, searched_gate

Q = gguf.GGMLQuantizationType
TOKENIZER = REFERENCE / "tokenizer" / "tokenizer.json"
# ref_small's weights: embedding, 2 x (q, o; k, v; SwiGLU of width 2/3 x d_ff 384; norms), final norm
N_WEIGHTS = 512 * 256 + 2 * (2 * 256 * 256 + 2 * 256 * 128 + 3 * 256 * 256 + 2 * 256) + 256
TARGETS = ("bpw3.20", "size500KB", "bpw4.50")  # smallest budget first

pytestmark = [pytest.mark.llama_cpp, pytest.mark.slow]


def cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mythos_convert", *args], cwd=cwd, capture_output=True, text=True, timeout=900
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    require_reference()
    out = tmp_path_factory.mktemp("target")
    (out / "ckpt.pt").symlink_to(REFERENCE / "ref_small.pt")
    (out / "tokenizer.json").write_bytes(TOKENIZER.read_bytes())
    (out / "calibration.txt").write_text("\n\n".join(sample_corpus(40_000)))
    args = ["gguf", "ckpt.pt", "--outtype", "f32,q4_k_m", "--target-bpw", "3.2,4.5", "--target-size", "500KB"]
    done = cli([*args, "--data", "calibration.txt", "--quiet"], out)
    assert done.returncode == 0, done.stdout + done.stderr
    return out, done.stdout


def _file(out: Path, label: str) -> Path:
    (path,) = out.glob(f"mythos-*-{label}.gguf")
    return path


def _recipe_in(path: Path) -> tuple[str, dict[str, Q], dict[str, Q]]:
    """The file's target key, its recipe key and the types its tensors really have."""
    reader = gguf.GGUFReader(path)
    target = reader.fields[recipes.KEY_TARGET].contents()
    recipe = recipes.parse_metadata(reader.fields[recipes.KEY_RECIPE].contents())
    return target, recipe, {t.name: Q(t.tensor_type) for t in reader.tensors}


def test_one_file_per_target_within_its_budget(run):
    out, _ = run
    budgets = {"bpw3.20": int(3.2 * N_WEIGHTS / 8), "bpw4.50": int(4.5 * N_WEIGHTS / 8), "size500KB": 500_000}
    for label, budget in budgets.items():
        size = _file(out, label).stat().st_size
        assert 0.97 * budget < size <= budget, (label, size, budget)
    sizes = [_file(out, label).stat().st_size for label in TARGETS]
    assert sizes == sorted(sizes)


def test_recipe_in_metadata_is_the_files_types_and_the_printed_command(run):
    out, stdout = run
    commands = {m.group(2): m.group(1) for m in re.finditer(r"(llama-quantize .* (\S+\.gguf) Q8_0)", stdout)}
    for label in TARGETS:
        path = _file(out, label)
        target, recipe, stored = _recipe_in(path)
        assert target == label
        matrices = {name: qtype for name, qtype in stored.items() if name.endswith(".weight") and "norm" not in name}
        assert recipe == matrices and len(recipe) == 1 + 2 * 7
        assert {q for n, q in stored.items() if n not in recipe} == {Q.F32}  # the norms
        assert recipes.parse_tensor_types(commands[path.name]) == recipe
        assert f" {_file(out, 'F32').name} {path.name} Q8_0" in commands[path.name]
        assert len(set(recipe.values())) > 1  # a mix, not one type


def _llama_quantize(src: Path, dst: Path, recipe: dict[str, Q]) -> None:
    """llama.cpp's `llama_model_quantize`, base Q8_0, given the recipe as its `--tensor-type` overrides."""
    import llama_cpp

    args = recipes.tensor_type_args(recipe)[1::2]
    overrides = (llama_cpp.llama_model_tensor_override * (len(args) + 1))()
    for entry, arg in zip(overrides, args, strict=False):
        pattern, _, type_name = arg.partition("=")
        entry.pattern, entry.type = pattern.encode(), int(recipes.type_of(type_name))
    overrides[len(args)].pattern = None
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype, params.nthread = int(gguf.LlamaFileType.MOSTLY_Q8_0), 2
    params.tt_overrides = ctypes.cast(overrides, type(params.tt_overrides))
    assert llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params)) == 0


def test_every_tensor_equals_llama_quantize_and_llama_cpp_runs_the_file(run, tmp_path):
    from mythos_convert.engines.llamacpp import llama_logits, load_llama

    out, _ = run
    for label in TARGETS:
        ours = _file(out, label)
        _, recipe, _ = _recipe_in(ours)
        theirs = tmp_path / f"{label}.gguf"
        _llama_quantize(_file(out, "F32"), theirs, recipe)
        mine = {t.name: t for t in gguf.GGUFReader(ours).tensors}
        for tensor in gguf.GGUFReader(theirs).tensors:
            assert tensor.tensor_type == mine[tensor.name].tensor_type, tensor.name
            assert np.array_equal(np.asarray(tensor.data), np.asarray(mine[tensor.name].data)), (label, tensor.name)
        logits = llama_logits(load_llama(ours, n_ctx=32), [1, 70, 200, 33, 5])
        assert logits.shape == (5, 512) and bool(logits.isfinite().all())


def test_verify_names_each_file_by_target_and_gates_it(run):
    out, _ = run
    results = json.loads((out / "verify.json").read_text())["results"]
    for label in TARGETS:
        r = results[_file(out, label).name]
        assert r["passed"] and r["dtype"] == label, r.get("failures")
        assert re.search(r"mean KL<=[\d.]+, p99 KL<=[\d.]+ \((Q\d_K(_[SML])?|Q\d_\d)'s gate\)", r["tolerance"])
        assert 0 < r["mean_kl"] < 0.5
    # more bits, less divergence
    kls = [results[_file(out, label).name]["mean_kl"] for label in TARGETS]
    assert kls == sorted(kls, reverse=True)


def test_searched_gate_is_the_mix_whose_bits_the_file_reaches():
    mixes = {"Q2_K": 3.6, "Q3_K_M": 4.5, "Q4_K_M": 5.2, "Q5_K_M": 6.0, "Q8_0": 8.5}
    assert searched_gate(5.2, mixes) == "Q4_K_M"  # exactly the mix's bits
    assert searched_gate(5.1999, mixes) == "Q3_K_M"  # just below
    assert searched_gate(5.2001, mixes) == "Q4_K_M"
    assert searched_gate(3.0, mixes) == "Q2_K"  # below every mix: the smallest mix's
    assert searched_gate(9.0, mixes) == "Q5_K_M"  # Q8_0 is no searched file's gate
    assert GGUF_TOLERANCES[searched_gate(5.2, mixes)].mean_kl == 0.21


def test_targets_are_read_and_named():
    got = parse_targets("3.5, 4.5,3.5", "95MB,1.5G")
    assert [(t.label, t.bpw, t.size) for t in got] == [
        ("bpw3.50", 3.5, None),
        ("bpw4.50", 4.5, None),
        ("size95MB", None, 95_000_000),
        ("size1.5GB", None, 1_500_000_000),
    ]
    with pytest.raises(MythosError, match="--target-bpw 'four' is not a number"):
        parse_targets("four", None)
    with pytest.raises(MythosError, match="cannot read size '9 apples'"):
        parse_targets(None, "9 apples")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target-bpw", "1.0"], r"is out of reach: this model's files can be [\d,]+ to [\d,]+ bytes \(2\.\d+ to"),
        (["--target-bpw", "17"], r"is out of reach: .* smallest types to F16\); pass a target in that range"),
        (["--target-size", "2KB"], r"a target of 2,000 bytes is out of reach"),
    ],
)
def test_unreachable_budget_is_one_error_line_and_no_file(tmp_path, args, message):
    require_reference()
    (tmp_path / "ckpt.pt").symlink_to(REFERENCE / "ref_small.pt")
    (tmp_path / "tokenizer.json").write_bytes(TOKENIZER.read_bytes())
    done = cli(["gguf", "ckpt.pt", *args, "--quiet"], tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and re.search(message, lines[0]), done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt", "tokenizer.json"]


def test_split_and_existing_outputs_are_refused_before_the_search(tmp_path):
    require_reference()
    with pytest.raises(MythosError, match="leave out --split-max-size"):
        write_gguf_export(REFERENCE / "ref_small.pt", None, tmp_path / "m.gguf", target_bpw="4", split_max_size="1M")
    (tmp_path / "m.gguf").write_bytes(b"keep")
    with pytest.raises(MythosError, match="already exists: choose another name or pass --force"):
        write_gguf_export(REFERENCE / "ref_small.pt", None, tmp_path / "m.gguf", target_bpw="4", tokenizer=TOKENIZER)
    assert (tmp_path / "m.gguf").read_bytes() == b"keep"


def test_eval_and_card_show_searched_files_by_target_beside_the_mixes(run):
    from mythos_convert.api import evaluate
    from mythos_convert.card.facts import file_rows, gguf_facts

    out, _ = run
    files = [_file(out, label) for label in ("Q4_K_M", *TARGETS)]
    report = evaluate([out / "ckpt.pt", *files], data=[out / "calibration.txt"], ctx=64, chunks=2)
    types = {Path(r["target"]).name: r["type"] for r in report.rows if r["target"].endswith(".gguf")}
    assert types == {f.name: label for f, label in zip(files, ("Q4_K_M", *TARGETS), strict=True)}
    rows = {r["name"]: r for r in file_rows(out, gguf_facts(out))}
    for label in TARGETS:
        row = rows[_file(out, label).name]
        _, recipe, _ = _recipe_in(_file(out, label))
        counts = {qtype: int(n) for qtype, n in re.findall(r"(\w+) x(\d+)", row["recipe"])}
        assert row["type"] == label and counts == dict(Counter(q.name for q in recipe.values())), row["recipe"]
        assert row["mean_kl"] > 0
    assert rows[_file(out, "Q4_K_M").name]["recipe"] is None and rows[_file(out, "Q4_K_M").name]["type"] == "Q4_K_M"


def test_a_searched_file_is_not_warned_about_a_main_type_it_does_not_have():
    """A searched file records Q8_0 as its file type (llama-quantize's base) but holds its recipe's
    types: the fixed mixes' "no matrix fits Q8_0's blocks" warning must not be printed for it."""
    from mythos_convert.export.gguf import _all_fell_back
    from mythos_convert.export.gguf_plan import TensorPlan, searched_outtype
    from mythos_convert.export.gguf_writer import WrittenGGUF

    recipe = {"blk.0.attn_q.weight": Q.Q4_K, "blk.0.ffn_down.weight": Q.Q2_K}
    plans = [TensorPlan(n, (256, 256), t) for n, t in recipe.items()]
    written = WrittenGGUF(searched_outtype("bpw3.20", recipe), [Path("m-bpw3.20.gguf")], plans)
    assert _all_fell_back(written) == ""
