"""Every bad input the issues name, driven through the real `mythos-convert` command in a subprocess.

Each case must end with exit code 2, exactly one line on stderr that starts with `error:` and names
the problem (the last line; progress chatter may come before it), no traceback, and nothing written:
the case's own folder (outputs and any previous output placed there) and the shared inputs are
compared byte for byte before and after. Interrupted runs (SIGKILL and Ctrl-C in the middle of a
write) must leave the previous output intact, and their leftovers must not stop the next run.

The table runs two CLI processes at a time (each case in its own folder), because starting the CLI
costs a few seconds of imports.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import stall
import torch
import yaml
from helpers import make_checkpoint, make_reference_tokenizer, tiny_config, write_config_yaml
from safetensors.torch import load_file, save_file

import mythos_convert.model
from mythos_convert.api import export_gguf, export_hf

pytestmark = pytest.mark.slow

TIMEOUT = 300


@dataclass(frozen=True)
class Case:
    """One bad input: the command line ({W} the shared inputs, {D} the case's own folder), what the
    error line must contain, and a previous output to place in {D} first (it must stay byte-identical)."""

    id: str
    argv: tuple[str, ...]
    expect: tuple[str, ...]
    pre: str | None = (
        None  # "export" -> D/out, "nonempty" -> D/out/keep.txt, "ckpt" -> D/existing.pt, "copy:NAME" -> D/out, ...
    )


def case(id: str, argv: str, *expect: str, pre: str | None = None) -> Case:
    return Case(id, tuple(argv.split()), expect, pre)


CK = "{W}/ck/ckpt.pt"
CASES = [
    # reading a native checkpoint (issue 2, issue 3)
    case("ckpt-missing", "hf {W}/nope.pt {D}/out", "checkpoint", "nope.pt", "does not exist"),
    case("ckpt-is-a-folder", "hf {W}/ck {D}/out", "is a folder", "ckpt.pt"),
    case("ckpt-truncated", "hf {W}/bad/truncated.pt {D}/out", "truncated.pt", "truncated"),
    case("ckpt-text-file", "gguf {W}/bad/text.pt --outfile {D}/m.gguf", "text.pt", "not a PyTorch checkpoint"),
    case("ckpt-pickled-object", "hf {W}/bad/object.pt {D}/out", "object.pt", "not a Mythos checkpoint"),
    case("ckpt-no-config", "hf {W}/noconf/ckpt.pt {D}/out", "no embedded config", "--config"),
    case(
        "config-heads-do-not-divide",
        "hf {W}/noconf/ckpt.pt {D}/out --config {W}/bad/heads.yaml",
        "d_model=64",
        "n_heads=5",
    ),
    case("tensor-missing", "hf {W}/missing/ckpt.pt {D}/out", "lacks tensor", "layers.1.attention.wq.weight"),
    case(
        "tensor-wrong-shape",
        "hf {W}/shape/ckpt.pt {D}/out",
        "layers.0.attention.wk.weight",
        "(16, 64)",
        "(32, 64)",
    ),
    case("nan-weights", "hf {W}/nan/ckpt.pt {D}/out", "layers.0.feed_forward.w1.weight", "NaN", "--allow-nonfinite"),
    case("tokenizer-larger-than-embedding", "hf {W}/bigtok/ckpt.pt {D}/out", "900 tokens", "512 rows", "--tokenizer"),
    case("tokenizer-missing", "hf {W}/notok/ckpt.pt {D}/out", "no tokenizer found", "--tokenizer"),
    case("hf-output-not-empty", f"hf {CK} {{D}}/out", "not empty", "--force", pre="export"),
    case("hf-output-below-a-file", f"hf {CK} {{W}}/ck/tokenizer.json/out", "cannot create output", "tokenizer.json"),
    # train, tokenizer train (issue 2)
    case("train-preset-heads", "train --preset {W}/bad/preset.yaml --out {D}/run", "n_heads=5", "d_model"),
    case("train-unknown-preset", "train --preset huge --out {D}/run", "not a known preset", "tiny", "mythos-172m"),
    case(
        "train-no-usable-text",
        "train --data {W}/corpus/blank.txt --out {D}/run --max-steps 1",
        "no usable text",
        "blank.txt",
    ),
    case("train-output-not-empty", "train --out {D}/out --max-steps 1", "not empty", "--force", pre="nonempty"),
    case("tokenizer-output-exists", "tokenizer train --out {D}/tokenizer.json", "already exists", "--force", pre="tok"),
    case("tokenizer-vocab-too-small", "tokenizer train --vocab-size 100 --out {D}/t.json", "too small", "261"),
    # generate (issue 2)
    case("generate-ckpt-missing", "generate {D}/ckpt.pt hello", "ckpt.pt", "does not exist"),
    case("generate-prompt-too-long", f"generate {CK} {{LONG}}", "context is 128", "shorten the prompt"),
    case(
        "generate-tensor-wrong-shape",
        "generate {W}/shape/ckpt.pt hello",
        "layers.0.attention.wk.weight",
        "(16, 64)",
        "(32, 64)",
    ),
    # native: an HF folder back to a checkpoint (issue 3)
    case("native-not-llama", "native {W}/hf_mistral {D}/back.pt", "model_type", "mistral", "llama"),
    case("native-untied-head", "native {W}/hf_untied {D}/back.pt", "lm_head.weight", "tie"),
    case("native-rope-scaling", "native {W}/hf_rope {D}/back.pt", "rope_scaling", "linear"),
    case("native-truncated-weights", "native {W}/hf_truncated {D}/back.pt", "model.safetensors", "re-export"),
    case("native-source-not-a-folder", f"native {CK} {{D}}/back.pt", "is not a folder"),
    case("native-output-exists", "native {W}/hf {D}/existing.pt", "already exists", "--force", pre="ckpt"),
    # gguf (issue 4)
    case("gguf-not-llama", "gguf {W}/hf_mistral --outfile {D}/m.gguf", "model_type", "mistral"),
    case("gguf-attention-bias", "gguf {W}/hf_bias --outfile {D}/m.gguf", "attention_bias"),
    case("gguf-tokenizer-missing", "gguf {W}/hf_notok --outfile {D}/m.gguf", "no tokenizer.json", "--tokenizer"),
    case("gguf-tokenizer-unsupported", "gguf {W}/hf_wordlevel --outfile {D}/m.gguf", "WordLevel", "BPE"),
    case(
        "gguf-unknown-outtype",
        "gguf {W}/hf --outtype q3_x --outfile {D}/m.gguf",
        "q3_x",
        "f32",
        "f16",
        "bf16",
        "q8_0",
        "q4_0",
    ),
    case("gguf-output-exists", "gguf {W}/hf --outfile {D}/m.gguf", "already exists", "--force", pre="gguf"),
    case("gguf-inf-weights", "gguf {W}/inf/ckpt.pt --outfile {D}/m.gguf", "embedding.weight", "NaN or Inf"),
    # verify, card, push (issues 3, 5)
    case("verify-neither-folder-nor-gguf", "verify {W}/ck/tokenizer.json", "neither", ".gguf"),
    case("card-meta-bad-yaml", "card {D}/out --meta {W}/bad/meta.yaml", "meta.yaml", "not valid YAML", pre="export"),
    case("card-not-an-export", "card {D}/out", "no config.json", pre="nonempty"),
    case("push-no-token", "push {W}/hf --repo me/mythos", "no Hugging Face token", "--token", "HF_TOKEN"),
    case("push-bad-repo-id", "push {W}/hf --repo mythos --dry-run", "'mythos'", "OWNER/NAME"),
    case("push-folder-fails-checks", "push {W}/hf --repo me/mythos --dry-run", "fails", "verify", "--skip-checks"),
    # card on a damaged config.json: refused, README.md left as it was (issue 12)
    case(
        "card-config-torn", "card {D}/out", "config.json", "not readable JSON", "re-export", pre="copy:hf_config_torn"
    ),
    case("card-config-wrong-type", "card {D}/out", "hidden_size", "'sixty-four'", "re-export", pre="copy:hf_size_str"),
    case("card-config-not-an-object", "card {D}/out", "not a JSON object", pre="copy:hf_config_list"),
    case("card-config-incomplete", "card {D}/out", "lacks ['vocab_size']", "re-export", pre="copy:hf_no_vocab"),
    # config values of the wrong type or absurd size, checked before anything is built (issue 12)
    case("hf-config-size-not-a-number", "native {W}/hf_size_str {D}/back.pt", "hidden_size", "'sixty-four'", "fix it"),
    case("hf-config-eps-not-a-number", "native {W}/hf_eps_str {D}/back.pt", "rms_norm_eps", "'tiny'", "fix it"),
    case("hf-config-vocab-absurd", "gguf {W}/hf_vocab_huge --outfile {D}/m.gguf", "vocab_size=1000000000000", "fix it"),
    case("hf-config-layers-absurd", "native {W}/hf_layers_huge {D}/back.pt", "num_hidden_layers=100000", "larger than"),
    case("hf-config-context-absurd", "native {W}/hf_ctx_huge {D}/back.pt", "max_position_embeddings=10000000000"),
    case("ckpt-config-size-not-a-number", "hf {W}/size_str/ckpt.pt {D}/out", "d_model", "'sixty-four'", "fix d_model"),
    case("ckpt-config-eps-not-a-number", "generate {W}/eps_str/ckpt.pt hello", "norm_eps", "'tiny'", "fix norm_eps"),
    case("ckpt-config-layers-absurd", "generate {W}/layers_huge/ckpt.pt hello", "n_layers=100000", "larger than"),
    case("ckpt-config-vocab-absurd", "hf {W}/vocab_huge/ckpt.pt {D}/out --no-verify", "vocab_size=1000000000000"),
    case("ckpt-config-context-absurd", "gguf {W}/ctx_huge/ckpt.pt --outfile {D}/m.gguf", "max_seq_len=10000000000"),
    case("yaml-config-size-not-integer", "hf {W}/noconf/ckpt.pt {D}/out --config {W}/bad/half.yaml", "n_layers", "2.5"),
    case("yaml-config-layers-absurd", "hf {W}/noconf/ckpt.pt {D}/out --config {W}/bad/layers.yaml", "n_layers=100000"),
    case(
        "config-too-big-for-its-weights",  # within the limits: refused by the weights, before the model is built
        "generate {W}/big/ckpt.pt hello",
        "embedding.weight",
        "(512, 64)",
        "(512, 65536)",
    ),
    case("ckpt-model-entry-not-a-tensor", "hf {W}/listweight/ckpt.pt {D}/out", "norm.weight", "not a tensor"),
    # sampling input (issue 12)
    case("generate-temperature-nan", f"generate {CK} hello --temperature nan", "--temperature", "nan", "pass e.g."),
    case("generate-top-p-nan", f"generate {CK} hello --top-p nan", "--top-p", "nan", "pass e.g."),
    case("generate-seed-beyond-64-bits", f"generate {CK} hello --seed {2**80}", "--seed", "64 bits", "pass a seed"),
    case("generate-prompt-not-utf8", f"generate {CK} {{BADUTF8}}", "not valid UTF-8", "pass the prompt as UTF-8"),
    case("generate-nan-weights", "generate {W}/nan/ckpt.pt hello", "layers.0.feed_forward.w1.weight", "NaN"),
    # malformed tokenizers, a file that is not GGUF, values nested too deep (issue 12)
    case("native-tokenizer-torn", "native {W}/hf_tok_torn {D}/back.pt", "tokenizer.json", "not a valid", "re-export"),
    case("verify-tokenizer-torn", "verify {W}/hf --tokenizer {W}/bad/torn_tokenizer.json", "torn_tokenizer.json"),
    case(
        "verify-tokenizer-cannot-encode",
        "verify {W}/hf --tokenizer {W}/bad/no_unk.json",
        "no_unk.json",
        "cannot encode",
        "<unk>",
    ),
    case("verify-folder-tokenizer-torn", f"verify {{W}}/hf_tok_torn --ckpt {CK}", "tokenizer.json", "re-export"),
    case("gguf-folder-tokenizer-torn", "gguf {W}/hf_tok_torn --outfile {D}/m.gguf", "tokenizer.json", "not a valid"),
    case("generate-tokenizer-torn", "generate {W}/torntok/ckpt.pt hello", "tokenizer.json", "not a valid"),
    case("verify-not-gguf", "verify {W}/bad/x.gguf", "x.gguf", "not a GGUF file", "mythos-convert gguf"),
    case("ckpt-training-nested-deep", "hf {W}/deep/ckpt.pt {D}/out --no-verify", "'training'", "levels deep"),
    case("ckpt-config-nested-deep", "generate {W}/deepconfig/ckpt.pt hello", "'config'", "levels deep"),
    # YAML that expands without bound, and metadata of the wrong types (issue 12)
    case("card-meta-alias-bomb", "card {D}/out --meta {W}/bad/bomb.yaml", "bomb.yaml", "expands", pre="export"),
    case("config-yaml-alias-bomb", "hf {W}/noconf/ckpt.pt {D}/out --config {W}/bad/bomb_config.yaml", "expands"),
    case(
        "card-meta-limitations-not-strings",
        "card {D}/out --meta {W}/bad/limits.yaml",
        "limitations",
        "must be a string",
        pre="export",
    ),
    # verify finds the tokenizer the export recorded; when that is gone it says so (issue 12)
    case(
        "verify-recorded-tokenizer-gone",
        "verify {W}/hf_gone_tok",
        "no tokenizer found",
        "recorded at export time",
        "--tokenizer",
    ),
    # messages that say what to do, not only the rule (issue 12)
    case("generate-negative-max-new-tokens", f"generate {CK} hello --max-new-tokens -5", "-5", "--max-new-tokens 128"),
    case("gguf-outfile-not-gguf", "gguf {W}/hf --outfile {D}/m.bin", "must end in .gguf", "--outfile"),
    case("hf-bad-shard-size", f"hf {CK} {{D}}/out --no-verify --max-shard-size lots", "lots", "--max-shard-size 5GB"),
    # a usage mistake is one line too
    case("usage-missing-argument", f"generate {CK}", "Missing argument", "--help"),
]
BAD_UTF8 = "caf\udce9"  # the byte 0xE9 alone, as Python passes a non-UTF-8 argv entry (surrogateescape)


# ---------------------------------------------------------------- running the CLI


def cli_env(hf_home: Path) -> dict[str, str]:
    """A user's environment without credentials: no token anywhere, no debug, no retries to wait for."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "MYTHOS_DEBUG")}
    env.update(
        HF_HOME=str(hf_home),
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_XET="1",
        MYTHOS_PUSH_ATTEMPTS="1",
        MYTHOS_PUSH_BACKOFF="0",
        TOKENIZERS_PARALLELISM="false",
        OMP_NUM_THREADS="1",
    )
    return env


def cli(args: list[str]) -> list[str]:
    """The command a user types, run by this interpreter (the venv's `mythos-convert`)."""
    return [sys.executable, "-m", "mythos_convert", *args]


def run_cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(cli(args), env=env, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT)


def snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under root (hidden ones included) with a hash of its bytes."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        out[rel] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "<dir>"
    return out


def assert_one_error_line(proc: subprocess.CompletedProcess, expect: tuple[str, ...] = ()) -> str:
    """Exit 2, no traceback, exactly one `error:` line and it is the last one; returns it."""
    err = proc.stderr
    assert "Traceback" not in err and "internal error" not in err, err
    assert proc.returncode == 2, f"exit {proc.returncode}\n{err}"
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    for text in expect:
        assert text in errors[0], f"{text!r} not in {errors[0]!r}"
    return errors[0]


def start_cli(args: list[str], env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen:
    """Start the CLI in the background, stderr to `log` (a pipe nobody reads could fill and block it)."""
    with log.open("w") as fh:
        return subprocess.Popen(cli(args), env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=fh)


def start_stalled_cli(args: list[str], env: dict[str, str], cwd: Path, log: Path, target: str, when: str):
    """`start_cli` with `target` made to stop mid-write (`stall`); returns (process, marker it creates)."""
    marker = cwd / "stalled"
    with log.open("w") as fh:
        proc = subprocess.Popen(
            stall.command(marker, target, when, args),
            env=stall.environment(env),
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=fh,
        )
    return proc, marker


def wait_for(predicate, proc: subprocess.Popen, log: Path, what: str, timeout: float = TIMEOUT) -> None:
    """Poll until predicate() holds; fail if the process ends first."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            pytest.fail(f"the process ended (exit {proc.returncode}) before {what}:\n{log.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.005)


# ---------------------------------------------------------------- the inputs


@dataclass
class World:
    root: Path  # shared inputs: never written by any case
    cases: Path  # one folder per case
    hf_home: Path
    env: dict[str, str]


def _variant(root: Path, name: str, tokenizer: Path, edit) -> None:
    """A copy of the good checkpoint with `edit(payload)` applied, tokenizer.json beside it."""
    payload = torch.load(root / "ck" / "ckpt.pt", weights_only=True)
    edit(payload)
    (root / name).mkdir()
    torch.save(payload, root / name / "ckpt.pt")
    shutil.copy(tokenizer, root / name / "tokenizer.json")


def hf_variant(root: Path, name: str, edit) -> None:
    """A copy of the good export as `root/name`, with `edit(folder)` applied."""
    shutil.copytree(root / "hf", root / name)
    edit(root / name)


def _config_edit(change):
    """An edit of a folder's config.json: `change(config)` applied to the dict, written back."""

    def edit(folder: Path) -> None:
        config = json.loads((folder / "config.json").read_text())
        change(config)
        (folder / "config.json").write_text(json.dumps(config, indent=2))

    return edit


def set_config(key: str, value):
    return _config_edit(lambda config: config.__setitem__(key, value))


def _drop_config(key: str):
    return _config_edit(lambda config: config.__delitem__(key))


def _untie(folder: Path) -> None:
    weights = load_file(folder / "model.safetensors")
    weights["lm_head.weight"] = weights["model.embed_tokens.weight"] * 2
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    set_config("tie_word_embeddings", False)(folder)


def _word_level(folder: Path) -> None:
    tok = json.loads((folder / "tokenizer.json").read_text())
    tok["model"] = {"type": "WordLevel", "vocab": tok["model"]["vocab"], "unk_token": "<unk>"}
    (folder / "tokenizer.json").write_text(json.dumps(tok))


def _truncate(path: Path, keep: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _set_native(key: str, value):
    def edit(payload: dict) -> None:
        payload["config"][key] = value

    return edit


def _nested(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


def _deep_variant(root: Path, name: str, tokenizer: Path, key: str) -> None:
    """A checkpoint whose `key` dict holds a list nested 30000 deep. torch.save recurses once per
    level, so it saves from a thread with a large stack under a raised recursion limit."""

    def save() -> None:
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(200_000)
        try:
            _variant(root, name, tokenizer, lambda p: p.setdefault(key, {}).__setitem__("nested", _nested(30_000)))
        finally:
            sys.setrecursionlimit(limit)

    stack = threading.stack_size(512 << 20)
    try:
        thread = threading.Thread(target=save)
        thread.start()
        thread.join()
    finally:
        threading.stack_size(stack)
    assert (root / name / "ckpt.pt").is_file()


def _alias_bomb(path: Path, head: str) -> None:
    """Billion laughs under `head`: nine levels of nine aliases, 9**9 strings once expanded."""
    lines = [head, "  - &a [" + ", ".join(['"lol"'] * 9) + "]"]
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"  - &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    path.write_text("\n".join(lines) + "\n")


def _no_unk(source: Path, target: Path) -> None:
    """A tokenizer.json that parses but cannot encode anything: its <unk> is not in its vocabulary."""
    tok = json.loads(source.read_text())
    tok.update(added_tokens=[], post_processor=None)
    tok["model"].update(vocab={}, merges=[])
    target.write_text(json.dumps(tok))


def _poison(name: str, value: float):
    def edit(payload: dict) -> None:
        payload["model"][name][3, 5] = value

    return edit


@pytest.fixture(scope="module")
def world(tmp_path_factory, ref_tokenizer_path: Path) -> World:
    root = tmp_path_factory.mktemp("bad_inputs")
    W = root / "inputs"
    cfg = tiny_config(vocab_size=512)
    tok = ref_tokenizer_path
    (W / "ck").mkdir(parents=True)
    shutil.copy(tok, W / "ck" / "tokenizer.json")
    make_checkpoint(W / "ck" / "ckpt.pt", cfg)

    bad = W / "bad"
    bad.mkdir()
    shutil.copy(W / "ck" / "ckpt.pt", bad / "truncated.pt")
    _truncate(bad / "truncated.pt", 0.4)
    (bad / "text.pt").write_text("this is a text file, not a checkpoint\n")
    torch.save(argparse.Namespace(lr=0.1, model="not weights"), bad / "object.pt")
    write_config_yaml(bad / "heads.yaml", cfg)
    heads = yaml.safe_load((bad / "heads.yaml").read_text())
    heads["model"]["n_heads"] = 5
    (bad / "heads.yaml").write_text(yaml.safe_dump(heads))
    preset = yaml.safe_load((Path(mythos_convert.model.__file__).parent / "presets" / "tiny.yaml").read_text())
    preset["model"]["n_heads"] = 5
    (bad / "preset.yaml").write_text(yaml.safe_dump(preset))
    (bad / "meta.yaml").write_text("license: [mit\nwidget:: - broken\n")
    layers = yaml.safe_load((bad / "heads.yaml").read_text())
    layers["model"].update(n_heads=4, n_layers=100_000)
    (bad / "layers.yaml").write_text(yaml.safe_dump(layers))
    layers["model"]["n_layers"] = 2.5
    (bad / "half.yaml").write_text(yaml.safe_dump(layers))
    _alias_bomb(bad / "bomb.yaml", "limitations:")
    _alias_bomb(bad / "bomb_config.yaml", "model:\n  n_layers:")
    (bad / "limits.yaml").write_text("limitations: [1, [2, 3]]\n")
    (bad / "x.gguf").write_text("a text file named like a GGUF\n")
    shutil.copy(tok, bad / "torn_tokenizer.json")
    _truncate(bad / "torn_tokenizer.json", 0.5)
    _no_unk(tok, bad / "no_unk.json")

    (W / "noconf").mkdir()
    make_checkpoint(W / "noconf" / "ckpt.pt", cfg, embed_config=False)
    shutil.copy(tok, W / "noconf" / "tokenizer.json")
    _variant(W, "missing", tok, lambda p: p["model"].pop("layers.1.attention.wq.weight"))
    _variant(W, "shape", tok, lambda p: p["model"].__setitem__("layers.0.attention.wk.weight", torch.zeros(16, 64)))
    _variant(W, "nan", tok, _poison("layers.0.feed_forward.w1.weight", float("nan")))
    _variant(W, "inf", tok, _poison("embedding.weight", float("inf")))
    _variant(W, "size_str", tok, _set_native("d_model", "sixty-four"))
    _variant(W, "eps_str", tok, _set_native("norm_eps", "tiny"))
    _variant(W, "layers_huge", tok, _set_native("n_layers", 100_000))
    _variant(W, "vocab_huge", tok, _set_native("vocab_size", 10**12))
    _variant(W, "ctx_huge", tok, _set_native("max_seq_len", 10**10))
    big = dict(d_model=65536, n_heads=512, n_kv_heads=512, n_layers=1000, d_ff=1 << 20, max_seq_len=1 << 20)
    _variant(W, "big", tok, lambda p: p["config"].update(big))
    _variant(W, "listweight", tok, lambda p: p["model"].__setitem__("norm.weight", [1.0] * 64))
    _deep_variant(W, "deep", tok, "training")
    _variant(W, "torntok", tok, lambda p: None)
    _truncate(W / "torntok" / "tokenizer.json", 0.5)
    _deep_variant(W, "deepconfig", tok, "config")
    make_checkpoint(W / "notok" / "ckpt.pt", cfg)  # no tokenizer beside it, none inside it
    make_reference_tokenizer(W / "bigtok" / "tokenizer.json", vocab_size=900)
    make_checkpoint(W / "bigtok" / "ckpt.pt", cfg)

    (W / "corpus").mkdir()
    (W / "corpus" / "blank.txt").write_text("   \n\n\t\nok\n \nhi there\n.\n")  # whitespace, a few words

    export_hf(W / "ck" / "ckpt.pt", W / "hf", verify=False)  # a good export, never verified
    hf_variant(W, "hf_mistral", set_config("model_type", "mistral"))
    hf_variant(W, "hf_bias", set_config("attention_bias", True))
    hf_variant(W, "hf_rope", set_config("rope_scaling", {"rope_type": "linear", "factor": 2.0}))
    hf_variant(W, "hf_untied", _untie)
    hf_variant(W, "hf_notok", lambda f: (f / "tokenizer.json").unlink())
    hf_variant(W, "hf_wordlevel", _word_level)
    hf_variant(W, "hf_truncated", lambda f: _truncate(f / "model.safetensors", 0.5))
    hf_variant(W, "hf_size_str", set_config("hidden_size", "sixty-four"))
    hf_variant(W, "hf_eps_str", set_config("rms_norm_eps", "tiny"))
    hf_variant(W, "hf_vocab_huge", set_config("vocab_size", 10**12))
    hf_variant(W, "hf_layers_huge", set_config("num_hidden_layers", 100_000))
    hf_variant(W, "hf_ctx_huge", set_config("max_position_embeddings", 10**10))
    hf_variant(W, "hf_config_torn", lambda f: _truncate(f / "config.json", 0.5))
    hf_variant(W, "hf_no_vocab", _drop_config("vocab_size"))
    hf_variant(W, "hf_config_list", lambda f: (f / "config.json").write_text("[1, 2]\n"))
    hf_variant(W, "hf_tok_torn", lambda f: _truncate(f / "tokenizer.json", 0.5))
    # exported with --tokenizer from a file that is gone since: verify must say what was recorded
    gone = root / "gone" / "tokenizer.json"
    gone.parent.mkdir()
    shutil.copy(tok, gone)
    export_hf(W / "notok" / "ckpt.pt", W / "hf_gone_tok", tokenizer=gone, verify=False)
    shutil.rmtree(gone.parent)
    (W / "pre").mkdir()
    export_gguf(W / "hf", "f16", W / "pre" / "m.gguf", verify=False)

    hf_home = root / "hf_home"
    hf_home.mkdir()
    (root / "cases").mkdir()
    return World(W, root / "cases", hf_home, cli_env(hf_home))


def _place_previous_output(kind: str | None, d: Path, W: Path) -> None:
    if kind == "export":
        shutil.copytree(W / "hf", d / "out")
    elif kind == "nonempty":
        (d / "out").mkdir()
        (d / "out" / "notes.txt").write_text("my notes\n")
    elif kind == "ckpt":
        shutil.copy(W / "ck" / "ckpt.pt", d / "existing.pt")
    elif kind == "gguf":
        shutil.copy(W / "pre" / "m.gguf", d / "m.gguf")
    elif kind == "tok":
        shutil.copy(W / "ck" / "tokenizer.json", d / "tokenizer.json")
    elif kind is not None and kind.startswith("copy:"):  # a damaged folder the command would write into
        shutil.copytree(W / kind.removeprefix("copy:"), d / "out")


@dataclass
class Outcome:
    proc: subprocess.CompletedProcess
    before: dict[str, str]
    after: dict[str, str]


@pytest.fixture(scope="module")
def inputs_before(world: World) -> dict[str, str]:
    """The shared inputs as they were before any case ran."""
    return snapshot(world.root)


@pytest.fixture(scope="module")
def outcomes(world: World, inputs_before: dict[str, str]) -> dict[str, Outcome]:
    """Run every case, each in its own folder, recording that folder."""
    long_prompt = "word " * 300  # well past the 128-token context

    def run(c: Case, d: Path) -> subprocess.CompletedProcess:
        return run_cli([a.format(W=world.root, D=d, LONG=long_prompt, BADUTF8=BAD_UTF8) for a in c.argv], world.env, d)

    return run_cases(CASES, world.cases, lambda c, d: _place_previous_output(c.pre, d, world.root), run)


def run_cases(
    cases: list[Case],
    folder: Path,
    place: Callable[[Case, Path], None],
    run: Callable[[Case, Path], subprocess.CompletedProcess],
) -> dict[str, Outcome]:
    """Each case in its own folder `folder/ID` (two CLI processes at a time): `place` puts its previous
    output there, `run` runs it; the folder is recorded before and after."""

    def one(c: Case) -> Outcome:
        d = folder / c.id
        d.mkdir()
        place(c, d)
        before = snapshot(d)
        proc = run(c, d)
        return Outcome(proc, before, snapshot(d))

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip([c.id for c in cases], pool.map(one, cases), strict=True))


# ---------------------------------------------------------------- the table


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(c: Case, world: World, outcomes):
    outcome = outcomes[c.id]
    d = world.cases / c.id
    assert_one_error_line(outcome.proc, tuple(e.format(W=world.root, D=d) for e in c.expect))
    assert outcome.after == outcome.before, "the case's folder changed (partial output or temp leftovers)"


def test_shared_inputs_untouched(world: World, outcomes, inputs_before):
    """No case wrote beside its inputs (e.g. a .NAME.tmp-* folder next to a checkpoint or in an export)."""
    assert snapshot(world.root) == inputs_before


def test_debug_shows_the_traceback(world: World, tmp_path: Path):
    proc = run_cli(["--debug", "hf", str(world.root / "nope.pt"), str(tmp_path / "out")], world.env, tmp_path)
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "MythosError" in proc.stderr and "does not exist" in proc.stderr
    assert not any(tmp_path.iterdir())


def test_a_bug_is_one_line_with_a_debug_hint(world: World, tmp_path: Path):
    """An unexpected exception (a bug, not bad input): exit 1, one line that says to rerun with --debug."""
    script = (
        "import sys\n"
        "from mythos_convert import cli\n"
        "@cli.app.command('explode')\n"
        "def explode() -> None:\n"
        "    raise RuntimeError('simulated bug')\n"
        "sys.argv = ['mythos-convert', 'explode']\n"
        "cli.main()\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], env=world.env, cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "internal error: RuntimeError: simulated bug (rerun with --debug for the traceback)"
    ]


def test_verify_uses_the_tokenizer_the_export_recorded(world: World, tmp_path: Path):
    """An export made with --tokenizer verifies without options (the recorded file, said in an info
    line); --tokenizer still overrides it."""
    tok = tmp_path / "elsewhere" / "tokenizer.json"
    tok.parent.mkdir()
    shutil.copy(world.root / "ck" / "tokenizer.json", tok)
    out = tmp_path / "out"
    export_hf(world.root / "notok" / "ckpt.pt", out, tokenizer=tok, verify=False)

    proc = run_cli(["verify", str(out)], world.env, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    said = " ".join((proc.stdout + proc.stderr).split())  # rich wraps long lines (and folds paths)
    assert "recorded at export time (--tokenizer overrides)" in said

    again = run_cli(["verify", str(out), "--tokenizer", str(world.root / "ck" / "tokenizer.json")], world.env, tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "recorded at export time" not in again.stdout + again.stderr


# ---------------------------------------------------------------- interrupted runs


def _tmp_dirs(parent: Path, name: str) -> list[Path]:
    return sorted(parent.glob(f".{name}.tmp-*"))


WRITING_SAFETENSORS = "mythos_convert.formats.tensor_bytes:RangeCopier.write"  # stalled after a file's header


def test_killed_hf_export_keeps_the_previous_folder(world: World, tmp_path: Path):
    """SIGKILL while `hf --force` writes its new folder: the old folder is intact, and a rerun works."""
    out = tmp_path / "out"
    shutil.copytree(world.root / "hf", out)
    before = snapshot(out)
    args = ["hf", str(world.root / "ck" / "ckpt.pt"), str(out), "--force"]
    log = tmp_path / "stderr.txt"
    proc, marker = start_stalled_cli(args, world.env, tmp_path, log, WRITING_SAFETENSORS, "after")
    wait_for(marker.exists, proc, log, "the new model.safetensors was being written")
    proc.kill()
    proc.wait(timeout=60)

    assert snapshot(out) == before, "the previous export changed"
    leftovers = _tmp_dirs(tmp_path, "out")
    assert leftovers, "no temporary folder left: the process was not killed mid-write"

    again = run_cli([*args[:-1], "--force", "--no-verify"], world.env, tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads((out / "config.json").read_text())["model_type"] == "llama"
    assert set(load_file(out / "model.safetensors")) == set(load_file(world.root / "hf" / "model.safetensors"))
    assert not (out / "verify.json").exists()  # the rerun's folder (unverified), not the killed one's


def test_killed_gguf_write_keeps_the_previous_file(world: World, tmp_path: Path):
    """SIGKILL while `gguf --force` streams tensors: the old .gguf is intact, no partial file, a rerun works."""
    import gguf

    cfg = tiny_config(vocab_size=512, d_model=384, n_layers=4, n_heads=6, n_kv_heads=2, d_ff=1024)
    ckpt = make_checkpoint(tmp_path / "big" / "ckpt.pt", cfg, with_optimizer=False)
    shutil.copy(world.root / "ck" / "tokenizer.json", ckpt.parent / "tokenizer.json")
    target = tmp_path / "m-{ftype}.gguf"
    export_gguf(ckpt, "q8_0", target, verify=False)
    previous = tmp_path / "m-Q8_0.gguf"
    before = previous.read_bytes()
    names = [t.name for t in gguf.GGUFReader(previous).tensors]

    args = ["gguf", str(ckpt), "--outtype", "all", "--outfile", str(target), "--force", "--no-verify"]
    log = tmp_path / "stderr.txt"
    proc, marker = start_stalled_cli(
        args, world.env, tmp_path, log, "mythos_convert.export.gguf_writer:_Output.write", "after"
    )
    wait_for(marker.exists, proc, log, "the GGUF files were being written")  # their first tensor is written
    proc.kill()
    proc.wait(timeout=60)

    assert previous.read_bytes() == before, "the previous GGUF changed"
    assert sorted(p.name for p in tmp_path.glob("*.gguf")) == ["m-Q8_0.gguf"], "a partial GGUF under a final name"
    assert _tmp_dirs(tmp_path, "m-F32"), "no temporary file left: the process was not killed mid-write"

    again = run_cli([*args[:3], "q8_0", *args[4:]], world.env, tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert [t.name for t in gguf.GGUFReader(previous).tensors] == names  # the rerun's complete file


def test_ctrl_c_mid_write_cleans_up(world: World, tmp_path: Path):
    """Ctrl-C (SIGINT) while `hf --force` writes: exit 130, `interrupted`, no temporary folder, old folder intact.

    The export stops after writing the header of its new model.safetensors (`stall`) and the
    signal is sent only then, so it lands mid-write however fast the machine is."""
    out = tmp_path / "out"
    shutil.copytree(world.root / "hf", out)
    before = snapshot(out)
    args = ["hf", str(world.root / "ck" / "ckpt.pt"), str(out), "--force"]
    log = tmp_path / "stderr.txt"
    proc, marker = start_stalled_cli(args, world.env, tmp_path, log, WRITING_SAFETENSORS, "after")
    wait_for(marker.exists, proc, log, "the new model.safetensors was being written")
    (writing,) = _tmp_dirs(tmp_path, "out")
    assert (writing / "model.safetensors").stat().st_size > 0  # part of it, in the temporary folder
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
    err = log.read_text()

    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "interrupted", err
    assert not _tmp_dirs(tmp_path, "out"), "the temporary folder was left behind"
    assert snapshot(out) == before
