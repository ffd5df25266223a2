"""What `eval` measures (evaluate/targets.py): the targets a path stands for, what each records under
and weighs, and what they must share (tokenizer, vocabulary, context). Sources, GGUF headers and
MLX folders are stand-ins with the fields these functions read; folders are real."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

import mythos_convert.evaluate.targets as targets
from mythos_convert.errors import MythosError
from mythos_convert.evaluate.targets import (
    Target,
    _kinds,
    _target,
    _vocab_problem,
    check_vocabularies,
    pick_context,
    pick_tokenizer,
    reference_folder,
    resolve_targets,
    run_folder,
)


def _write(path: Path, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _mlx(folder: Path, bits: int = 4) -> Path:
    return _write(folder / "config.json", json.dumps({"quantization": {"bits": bits, "group_size": 64}})).parent


def test_a_file_is_a_checkpoint_or_a_gguf(tmp_path):
    assert _kinds(_write(tmp_path / "m.pt")) == [("native", tmp_path / "m.pt")]
    assert _kinds(_write(tmp_path / "m.gguf")) == [("gguf", tmp_path / "m.gguf")]
    with pytest.raises(MythosError) as caught:
        _kinds(tmp_path / "gone.pt")
    assert str(caught.value) == (
        f"TARGET {tmp_path / 'gone.pt'} does not exist: pass a checkpoint, an HF folder or a .gguf file"
    )


def test_a_distributed_checkpoint_or_an_mlx_folder_is_one_target(tmp_path):
    dcp = _write(tmp_path / "dcp" / "__0_0.distcp").parent
    assert _kinds(dcp) == [("native", dcp)]
    mlx = _mlx(tmp_path / "mlx-4bit")
    _write(mlx / "extra.gguf")
    assert _kinds(mlx) == [("mlx", mlx)]


def test_an_hf_folder_is_its_model_its_ggufs_and_the_mlx_folders_beside_it(tmp_path):
    _write(tmp_path / "config.json", "{}")
    for name in ("b.gguf", "a.gguf", "m-00001-of-00002.gguf", "m-00002-of-00002.gguf"):
        _write(tmp_path / name)
    (tmp_path / "dir.gguf").mkdir()
    mlx4 = _mlx(tmp_path / "mlx-4bit")
    _write(tmp_path / "mlx-8bit" / "config.json", "{}")  # no quantization: not an MLX folder
    assert _kinds(tmp_path) == [
        ("hf", tmp_path),
        ("gguf", tmp_path / "a.gguf"),
        ("gguf", tmp_path / "b.gguf"),
        ("gguf", tmp_path / "m-00001-of-00002.gguf"),
        ("mlx-found", mlx4),
    ]


def test_a_folder_of_ggufs_alone_finds_no_mlx_folders(tmp_path):
    _write(tmp_path / "a.gguf")
    _mlx(tmp_path / "mlx-8bit", 8)
    assert _kinds(tmp_path) == [("gguf", tmp_path / "a.gguf")]
    _write(tmp_path / "config.json", "{}")
    assert _kinds(tmp_path) == [("hf", tmp_path), ("gguf", tmp_path / "a.gguf"), ("mlx-found", tmp_path / "mlx-8bit")]


def test_a_folder_without_a_model_is_refused(tmp_path):
    _write(tmp_path / "notes.txt")
    with pytest.raises(MythosError) as caught:
        _kinds(tmp_path)
    assert str(caught.value) == (
        f"{tmp_path} holds neither an HF model (config.json) nor .gguf files: pass the folder "
        "`mythos-convert hf` wrote, GGUF files or a checkpoint"
    )


def test_targets_are_resolved_once_each_in_order(tmp_path, monkeypatch):
    monkeypatch.setattr(targets, "_target", lambda kind, path, config_yaml: (kind, path, config_yaml))
    _write(tmp_path / "hf" / "config.json", "{}")
    gguf = _write(tmp_path / "hf" / "m.gguf")
    ckpt = _write(tmp_path / "m.pt")
    (tmp_path / "link.pt").symlink_to(ckpt)
    got = resolve_targets([str(ckpt), tmp_path / "hf", gguf, tmp_path / "link.pt"], "c.yaml")
    assert got == [("native", ckpt, "c.yaml"), ("hf", tmp_path / "hf", "c.yaml"), ("gguf", gguf, "c.yaml")]
    assert resolve_targets([ckpt]) == [("native", ckpt, None)]
    with pytest.raises(MythosError) as caught:
        resolve_targets([])
    assert str(caught.value) == "no TARGET given: pass a checkpoint, an HF folder or GGUF files, e.g. `eval out/`"


def test_each_kind_is_opened_and_named_as_it_records(tmp_path, monkeypatch):
    opened = []

    def open_source(path, config_yaml=None):
        opened.append((path, config_yaml))
        return f"source of {path.name}"

    monkeypatch.setattr(targets, "open_source", open_source)
    monkeypatch.setattr(targets, "read_gguf_header", lambda path: f"header of {path.name}")
    monkeypatch.setattr(targets, "read_mlx_folder", lambda path: f"mlx of {path.name}")
    folder = tmp_path / "out"
    assert _target("gguf", folder / "m.gguf", "c.yaml") == Target(
        "gguf", folder / "m.gguf", "m.gguf", str(folder / "m.gguf"), "source of m.gguf", header="header of m.gguf"
    )
    assert _target("hf", folder, None) == Target("hf", folder, "hf", f"{folder}/", "source of out")
    assert _target("native", tmp_path / "m.pt", None) == Target(
        "native", tmp_path / "m.pt", "m.pt", str(tmp_path / "m.pt"), "source of m.pt"
    )
    assert opened == [(folder / "m.gguf", "c.yaml"), (folder, None), (tmp_path / "m.pt", None)]
    mlx = folder / "mlx-4bit"
    assert _target("mlx", mlx, "c.yaml") == Target("mlx", mlx, "mlx-4bit/", f"{mlx}/", None, mlx="mlx of mlx-4bit")
    found = _target("mlx-found", mlx, None)
    assert found.kind == "mlx" and found.found is True and found.source is None
    assert _target("mlx", mlx, None).found is False
    assert len(opened) == 3  # an MLX folder is not a source


def _t(kind, path, **fields) -> Target:
    return Target(kind, Path(path), fields.pop("key", Path(path).name), fields.pop("shown", str(path)), **fields)


def test_where_each_kind_records_and_what_it_weighs(tmp_path):
    assert _t("native", tmp_path / "m.pt", source=None).folder is None
    assert _t("hf", tmp_path, source=None).folder == tmp_path
    assert _t("gguf", tmp_path / "m.gguf", source=None).folder == tmp_path
    assert _t("mlx", tmp_path / "mlx-4bit", source=None).folder == tmp_path
    _write(tmp_path / "m-00001-of-00002.gguf", "12345")
    _write(tmp_path / "m-00002-of-00002.gguf", "123")
    header = SimpleNamespace(shards=["m-00001-of-00002.gguf", "m-00002-of-00002.gguf"], context=300)
    assert _t("gguf", tmp_path / "m-00001-of-00002.gguf", source=None, header=header).size == 8
    files = {"a.safetensors": {"size": 10}, "b.safetensors": {"size": 5}, "config.json": {"size": 100}}
    assert _t("hf", tmp_path, source=None, files=files).size == 15
    ckpt = _write(tmp_path / "m.pt", "1234567")
    source = SimpleNamespace(inputs=[ckpt, _write(tmp_path / "x.distcp", "12")], config=SimpleNamespace(max_seq_len=96))
    assert _t("native", ckpt, source=source).size == 9
    mlx = SimpleNamespace(size=77, config=SimpleNamespace(max_seq_len=48))
    assert _t("mlx", tmp_path / "mlx-4bit", source=None, mlx=mlx, header=header).size == 77


def test_a_target_context_is_its_headers_else_its_configs(tmp_path):
    source = SimpleNamespace(config=SimpleNamespace(max_seq_len=96.0))
    mlx = SimpleNamespace(config=SimpleNamespace(max_seq_len=48))
    assert _t("native", "m.pt", source=source).context == 96
    assert type(_t("native", "m.pt", source=source).context) is int
    assert _t("gguf", "m.gguf", source=source, header=SimpleNamespace(context=300)).context == 300
    assert _t("mlx", "mlx-4bit", source=None, mlx=mlx).context == 48
    assert _t("mlx", "mlx-4bit", source=source, mlx=mlx).config is mlx.config


def test_the_reference_folder_is_the_hf_export_a_gguf_or_mlx_folder_sits_in(tmp_path):
    plain, hf, mlx = tmp_path / "plain", tmp_path / "hf", _mlx(tmp_path / "hf" / "mlx-4bit")
    _write(plain / "a.gguf")
    _write(hf / "config.json", "{}")
    assert reference_folder([_t("gguf", plain / "a.gguf", source=None), _t("gguf", hf / "b.gguf", source=None)]) == hf
    assert reference_folder([_t("mlx", mlx, source=None)]) == hf
    assert reference_folder([_t("mlx", mlx / "inner", source=None)]) is None  # an MLX folder is no reference
    assert reference_folder([_t("hf", hf, source=None), _t("native", tmp_path / "m.pt", source=None)]) is None
    assert reference_folder([]) is None


def _src(**fields):
    return SimpleNamespace(**{"has_tokenizer": False, "run_folder": None, "hf": None, **fields})


def test_the_tokenizer_is_given_else_a_checkpoints_else_a_folders(tmp_path, monkeypatch):
    monkeypatch.setattr(targets, "load_tokenizer", lambda path: f"loaded {Path(path).name}")
    with_tok = _src(has_tokenizer=True, tokenizer=lambda: ("native tok", "beside"))
    hf_tok = _src(has_tokenizer=True, tokenizer=lambda: ("hf tok", "folder"))
    native = _t("native", "m.pt", source=with_tok)
    hf = _t("hf", tmp_path, source=hf_tok)
    assert pick_tokenizer([hf, native], tmp_path / "t.json") == "loaded t.json"
    assert pick_tokenizer([hf, native], None) == "native tok"
    assert pick_tokenizer([hf, _t("native", "m.pt", source=_src())], None) == "hf tok"
    mlx = _t("mlx", tmp_path / "mlx-4bit", source=None, mlx=SimpleNamespace())
    with pytest.raises(MythosError) as caught:
        pick_tokenizer([mlx, _t("gguf", "m.gguf", source=_src())], None)
    assert str(caught.value) == (
        "no tokenizer for the evaluation text: pass --tokenizer with the tokenizer.json the model was trained with"
    )
    _write(tmp_path / "mlx-4bit" / "tokenizer.json")
    assert pick_tokenizer([mlx], None) == "loaded tokenizer.json"
    _write(tmp_path / "plain" / "tokenizer.json")
    with pytest.raises(MythosError):  # only an MLX folder is read for its own tokenizer.json
        pick_tokenizer([_t("native", tmp_path / "plain", source=_src())], None)


def test_the_run_folder_is_a_checkpoints_first(tmp_path):
    native = _t("native", "m.pt", source=_src(run_folder=tmp_path / "run"))
    hf = _t("hf", "out", source=_src(run_folder=tmp_path / "other"))
    gguf = _t("gguf", "m.gguf", source=_src(run_folder=tmp_path / "gguf"))
    assert run_folder([hf, native]) == tmp_path / "run"
    assert run_folder([gguf, hf]) == tmp_path / "other"
    assert run_folder([gguf, _t("native", "m.pt", source=_src())]) is None


VOCAB = {"<bos>": 0, "a": 1, "b": 2}


def test_a_gguf_vocabulary_must_number_the_tokens_alike():
    assert _vocab_problem("m.gguf", ["<bos>", "a", "b", "[PAD3]"], VOCAB, 4) is None
    assert _vocab_problem("m.gguf", ["<bos>", "a", "b"], VOCAB, 4) == "m.gguf has 3 tokens, the reference 4"
    assert _vocab_problem("m.gguf", ["<bos>", "b", "a", "c"], VOCAB, 4) == (
        "m.gguf has 'b' at id 1 where the reference has 'a'"
    )
    assert _vocab_problem("m.gguf", ["<bos>", "a"], {"<bos>": 0, "a": 1, "z": 5}, 2) == (
        "m.gguf has 'nothing' at id 5 where the reference has 'z'"
    )
    # the first wrong id is named, whatever the order of the reference's mapping
    assert _vocab_problem("m.gguf", ["<bos>", "x", "y"], {"a": 2, "b": 1, "<bos>": 0}, 3) == (
        "m.gguf has 'x' at id 1 where the reference has 'b'"
    )
    assert _vocab_problem("m.gguf", ["<bos>", "a"], {"<bos>": 0, "a": 1, "z": 2}, 2) == (
        "m.gguf has 'nothing' at id 2 where the reference has 'z'"
    )


class _Tok:
    def __init__(self, vocab):
        self.vocab = vocab

    def get_vocab(self, with_added_tokens):
        assert with_added_tokens is True
        return dict(self.vocab)


def test_every_target_must_share_the_reference_vocabulary(tmp_path, monkeypatch):
    loaded = {}
    monkeypatch.setattr(targets, "load_tokenizer", lambda path: _Tok(loaded[Path(path)]))
    config = SimpleNamespace(vocab_size=4, max_seq_len=64)
    hf_path = _write(tmp_path / "hf" / "tokenizer.json")
    loaded[hf_path] = VOCAB
    hf = _t(
        "hf",
        tmp_path / "hf",
        shown=f"{tmp_path / 'hf'}/",
        source=_src(config=config, hf=SimpleNamespace(tokenizer_path=hf_path)),
    )
    native = _t("native", "m.pt", source=_src(config=config))
    gguf = _t("gguf", tmp_path / "m.gguf", source=None, header=SimpleNamespace(tokens=["<bos>", "a", "b", "x"]))
    check_vocabularies([hf, native, gguf], _Tok(VOCAB), 4)

    def problem(ts) -> str:
        with pytest.raises(MythosError) as caught:
            check_vocabularies(ts, _Tok(VOCAB), 4)
        text = str(caught.value)
        tail = (
            "; the same ids would be other text, so neither perplexity nor KL divergence compares: evaluate each "
            "model with the tokenizer and reference it was made from"
        )
        assert text.startswith("vocabulary mismatch: ") and text.endswith(tail)
        return text[len("vocabulary mismatch: ") : -len(tail)]

    bad_gguf = _t("gguf", tmp_path / "m.gguf", source=None, header=SimpleNamespace(tokens=["<bos>", "b", "a", "x"]))
    assert problem([native, bad_gguf]) == "m.gguf has 'b' at id 1 where the reference has 'a'"
    wide = _t("native", "w.pt", shown="w.pt", source=_src(config=SimpleNamespace(vocab_size=5)))
    assert problem([native, wide]) == "w.pt has 5 vocabulary rows, the reference 4"
    loaded[hf_path] = {**VOCAB, "c": 3}
    assert problem([hf]) == f"{tmp_path / 'hf'}/tokenizer.json has another vocabulary than the reference tokenizer"
    mlx_dir = tmp_path / "mlx-4bit"
    mlx = _t("mlx", mlx_dir, shown=f"{mlx_dir}/", source=None, mlx=SimpleNamespace(config=config))
    check_vocabularies([mlx], _Tok(VOCAB), 4)  # no tokenizer.json of its own: nothing to compare
    loaded[_write(mlx_dir / "tokenizer.json")] = {"a": 0}
    assert problem([mlx]) == f"{mlx_dir}/tokenizer.json has another vocabulary than the reference tokenizer"
    loaded[mlx_dir / "tokenizer.json"] = VOCAB
    check_vocabularies([mlx], _Tok(VOCAB), 4)


def _ctx(*contexts) -> list[Target]:
    return [_t("gguf", f"{n}.gguf", shown=f"t{n}", source=None, header=SimpleNamespace(context=n)) for n in contexts]


def test_the_context_is_given_else_512_and_never_above_the_smallest():
    assert pick_context(_ctx(1024, 300, 700), None) == 300
    assert pick_context(_ctx(1024, 2048), None) == 512
    assert pick_context(_ctx(512), None) == 512
    assert pick_context(_ctx(1024, 300), 2) == 2
    assert pick_context(_ctx(1024, 300), 300) == 300
    with pytest.raises(MythosError) as caught:
        pick_context(_ctx(1024), 1)
    assert str(caught.value) == "--ctx 1 is too small: pass at least 2 (llama-perplexity uses 512)"
    with pytest.raises(MythosError) as caught:
        pick_context(_ctx(1024, 300, 700), 301)
    assert str(caught.value) == "--ctx 301 is above the model's context of 300 tokens (t300): pass --ctx 300 or less"
