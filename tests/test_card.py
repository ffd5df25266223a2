"""The model card: front matter the Hub accepts, figures from the real tensors, a golden card for `tiny`.

Folders are real `export_hf` outputs of reference-layout checkpoints; the 172M case uses a
safetensors file whose header holds the real shapes (data left sparse), since the card reads headers.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import make_checkpoint
from huggingface_hub import ModelCard, ModelCardData
from safetensors.torch import load_file

from mythos_convert.api import export_hf
from mythos_convert.card import build_card, card_problems, template_text, write_card
from mythos_convert.errors import MythosError
from mythos_convert.formats.metadata import load_meta
from mythos_convert.model.config import load_preset
from mythos_convert.model.model import Mythos
from mythos_convert.names import convert_name
from mythos_convert.verify.record import hash_files, hf_bound_files, record_result

GOLDEN = Path(__file__).parent / "golden" / "card_tiny.md"
REPO_ROOT = Path(__file__).resolve().parent.parent


def training_record(cfg_name: str = "tiny") -> dict:
    """What the trainer records in a checkpoint (schema: checkpoint.TRAINING_FACTS)."""
    return {
        "tokens_seen": 819_200,
        "train_config": load_preset(cfg_name).training.to_dict(),
        "data": {
            "name": "mythos-sample",
            "description": "mythos-sample: 900 documents read, 850 after cleaning, 840 after exact dedup, 830 after "
            "MinHash near-dedup; 120000 train / 6000 validation tokens",
            "sources": ["embedded sample"],
            "documents_read": 900,
            "documents_usable": 850,
            "documents_exact_dedup": 840,
            "documents_near_dedup": 830,
            "train_tokens": 120_000,
            "val_tokens": 6_000,
        },
        "val_loss": 5.4321,
        "val_ppl": 228.7,
        "optimizer": "AdamW(betas=(0.9, 0.95), weight_decay=0.1 on matrices)",
        "schedule": "linear warmup 30 steps, cosine to 3e-4",
        "precision": "float32",
        "hardware": "CPU (x86_64, 2 cores, 2 threads per process)",
        "world_size": 1,
        "wall_seconds": 95.5,
    }


def export_folder(root: Path, cfg, tokenizer: Path, step: int = 400) -> Path:
    """A real `mythos-convert hf` folder (parity run skipped: these tests are about the card)."""
    (root / "tokenizer.json").write_bytes(tokenizer.read_bytes())
    ckpt = make_checkpoint(
        root / "ckpt.pt", cfg, step=step, with_optimizer=False, extra={"training": training_record()}
    )
    return export_hf(ckpt, root / "out", verify=False, card=False).folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory, ref_tokenizer_path, tiny_cfg) -> Path:
    out = export_folder(tmp_path_factory.mktemp("card"), tiny_cfg, ref_tokenizer_path, step=123)
    write_card(out)
    return out


def front_matter(folder: Path) -> dict:
    return ModelCard.load(folder / "README.md").data.to_dict()


def test_template_and_metadata_are_packaged():
    assert "{{ card_data }}" in template_text()
    meta = load_meta()
    assert meta["license"] and meta["language"] and meta["widget"] and meta["inference"]["top_p"]


def test_front_matter_round_trips_and_has_required_keys(folder: Path):
    data = front_matter(folder)
    assert ModelCardData(**data).to_dict() == data
    for key in ("language", "license", "library_name", "pipeline_tag", "tags", "model-index", "widget", "inference"):
        assert data.get(key), key
    assert data["library_name"] == "transformers" and data["pipeline_tag"] == "text-generation"
    assert {"llama", "from-scratch", "rope", "rmsnorm", "swiglu", "gqa"} <= set(data["tags"])
    assert "gguf" not in data["tags"]  # no GGUF file in this folder
    meta = load_meta()
    assert [w["text"] for w in data["widget"]] == meta["widget"]
    assert data["inference"]["parameters"] == meta["inference"]
    assert card_problems((folder / "README.md").read_text()) == []


def test_eval_results_are_the_trainers(folder: Path):
    card = ModelCard.load(folder / "README.md")
    results = {r.metric_type: r for r in card.data.eval_results}
    provenance = json.loads((folder / "mythos.json").read_text())["training"]
    assert results["loss"].metric_value == pytest.approx(provenance["val_loss"])
    assert results["perplexity"].metric_value == pytest.approx(provenance["val_ppl"])
    assert results["loss"].dataset_name == provenance["data"]["name"]
    assert results["loss"].dataset_split == "validation"
    assert card.data.model_name == load_meta()["model_name"]


def _row(text: str, label: str) -> str:
    match = re.search(rf"^\| {re.escape(label)} \| (.+?) \|$", text, re.M)
    assert match, label
    return match.group(1)


def _count(cell: str) -> int:
    match = re.search(r"\(([\d,]+)\)", cell) or re.search(r"([\d,]+)", cell)
    return int(match.group(1).replace(",", ""))


def test_body_numbers_match_tensors_and_checkpoint(folder: Path, tiny_cfg):
    text = (folder / "README.md").read_text()
    tensors = load_file(folder / "model.safetensors")
    total = sum(t.numel() for t in tensors.values())
    embedding = tensors["model.embed_tokens.weight"].numel()
    assert total == tiny_cfg.num_parameters()  # tied head stored once, GQA k/v counted at their size
    assert _count(_row(text, "Parameters (total, as stored)")) == total
    assert _count(_row(text, "Parameters without embeddings")) == total - embedding
    assert _row(text, "Layers") == str(tiny_cfg.n_layers)
    assert _row(text, "Attention heads (query / key-value)").startswith(f"{tiny_cfg.n_heads} / {tiny_cfg.n_kv_heads}")
    assert _row(text, "FFN (SwiGLU) width") == str(tiny_cfg.ffn_dim)
    assert _row(text, "Vocabulary") == str(tiny_cfg.vocab_size)
    assert _row(text, "Context length") == str(tiny_cfg.max_seq_len)
    assert _row(text, "Steps") == "123"
    assert _count(_row(text, "Tokens seen")) == training_record()["tokens_seen"]
    assert _row(text, "Optimizer") == training_record()["optimizer"]
    assert _row(text, "Precision") == "float32"
    assert "not been verified" in text


def test_quickstart_in_the_card_runs(folder: Path):
    """The card's own code, pointed at the folder, generates text; the prompt gets <bos> only."""
    text = (folder / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    code = code.replace("path/to/this/folder", str(folder)).replace("max_new_tokens=64", "max_new_tokens=8")
    scope: dict = {}
    torch.manual_seed(0)
    exec(compile(code, "card-quickstart", "exec"), scope)
    ids = scope["inputs"]["input_ids"][0].tolist()
    tok = scope["tokenizer"]
    assert ids[0] == tok.bos_token_id and ids[-1] != tok.eos_token_id
    assert scope["output"].shape[1] > len(ids)
    assert f"`<bos>` (id {tok.bos_token_id}) in front of a prompt and nothing after it" in text


def test_gguf_files_and_verify_results_appear(folder: Path, tmp_path: Path):
    """A real GGUF export into the folder (the exporter re-renders the card), then recorded verify results."""
    from mythos_convert.api import export_gguf
    from mythos_convert.support.ui import human_size

    work = Path(shutil.copytree(folder, tmp_path / "out"))
    (gguf,) = [w.path for w in export_gguf(work, "f16", modelfile=True, verify=False).written]
    assert gguf.parent == work and (work / "Modelfile").is_file()
    assert f"| `{gguf.name}` | F16 | {human_size(gguf.stat().st_size)} |" in (work / "README.md").read_text()
    record_result(
        work,
        "hf",
        {
            "passed": True,
            "kind": "hf",
            "dtype": "float32",
            "max_abs_diff": 1.5e-6,
            "tolerance": 1e-4,
            "argmax_agreement": 1.0,
            "greedy_equal": True,
            "n_tokens": 64,
            "files": hash_files(work, hf_bound_files(work)),  # the card shows only results bound to the files
        },
    )
    record_result(
        work,
        gguf.name,
        {
            "passed": False,
            "kind": "gguf",
            "dtype": "F16",
            "max_abs_diff": 0.7,
            "tolerance": 0.05,
            "argmax_agreement": 0.93,
            "greedy_equal": False,
            "n_tokens": 64,
            "files": hash_files(work, [gguf.name]),
        },
    )
    text = write_card(work).read_text()
    assert "gguf" in front_matter(work)["tags"]
    assert f"llama-cli -m {gguf.name}" in text and "ollama create mythos -f Modelfile" in text
    assert re.search(r"\| `hf` \| float32 \| 64 \| 1\.5e-06 \| 0\.0001 \| 100\.0% \| yes \| yes \|", text)
    assert re.search(
        rf"\| `{re.escape(gguf.name)}` \| F16 \| 64 \| 0\.7 \| 0\.05 \| 93\.0% \| no \| \*\*no\*\* \|", text
    )


def test_missing_optional_files_do_not_crash(folder: Path, tmp_path: Path):
    work = tmp_path / "bare"
    work.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(folder / name, work / name)
    text = write_card(work).read_text()
    assert "recorded no training facts" in text and "not been verified" in text
    assert "model-index" not in front_matter(work)  # no validation loss recorded: no eval results
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no readable safetensors weights" in write_card(empty).read_text()


def _sparse_hf_folder(folder: Path, preset: str) -> None:
    """config.json + a model.safetensors whose header has the preset's real shapes (data sparse, not written)."""
    cfg = load_preset(preset).model
    with torch.device("meta"):
        model = Mythos(cfg)
    header, offset = {}, 0
    for name, tensor in model.state_dict().items():
        if name in ("rope_cos", "rope_sin", "output.weight"):
            continue
        size = tensor.numel() * 2
        header[convert_name(name, "native", "hf")] = {
            "dtype": "BF16",
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    raw = json.dumps(header).encode()
    with (folder / "model.safetensors").open("wb") as fh:
        fh.write(struct.pack("<Q", len(raw)) + raw)
        fh.truncate(8 + len(raw) + offset)
    config = {
        "model_type": "llama",
        "hidden_size": cfg.d_model,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads,
        "hidden_act": "silu",
        "tie_word_embeddings": True,
    }
    (folder / "config.json").write_text(json.dumps(config))


def test_mythos_172m_counts_153_53m_not_172m(tmp_path: Path):
    _sparse_hf_folder(tmp_path, "mythos-172m")
    text = build_card(tmp_path).content
    assert "**153.53 M** (153,530,112)" in text
    assert "172" not in _row(text, "Parameters (total, as stored)")
    assert _row(text, "Attention heads (query / key-value)") == "12 / 4 (grouped-query attention)"
    assert _row(text, "FFN (SwiGLU) width") == "2048"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("license: [unclosed\n", "not valid YAML at line"),
        ("licence: mit\n", "unknown key(s) ['licence']"),
        ("widget: Once upon a time\n", "widget must be list"),
        ("inference: {temperature: hot}\n", "inference.temperature must be a number"),
        ("inference: {top_k: 5}\n", "unknown inference key(s) ['top_k']"),
        ("- a\n- b\n", "must be a YAML mapping"),
    ],
)
def test_bad_metadata_is_refused_clearly(tmp_path: Path, content: str, message: str):
    path = tmp_path / "meta.yaml"
    path.write_text(content)
    with pytest.raises(MythosError) as err:
        load_meta(path)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_user_metadata_changes_the_card(folder: Path, tmp_path: Path):
    meta = tmp_path / "meta.yaml"
    meta.write_text(
        "model_name: MyModel\nlicense: mit\nhub_repo: me/my-model\nbase_model: some/base\n"
        "datasets: [me/my-data]\nwidget: ['Hello']\ninference: {temperature: 0.5}\n"
    )
    work = Path(shutil.copytree(folder, tmp_path / "out"))
    text = write_card(work, meta).read_text()
    data = front_matter(work)
    assert data["license"] == "mit" and data["base_model"] == "some/base" and data["datasets"] == ["me/my-data"]
    assert data["model-index"][0]["name"] == "MyModel" and data["widget"] == [{"text": "Hello"}]
    assert 'AutoTokenizer.from_pretrained("me/my-model")' in text and "temperature=0.5" in text


@pytest.mark.slow
def test_card_cli_writes_and_reports_errors(folder: Path, tmp_path: Path):
    work = Path(shutil.copytree(folder, tmp_path / "out"))
    (work / "README.md").unlink()
    bad = tmp_path / "bad.yaml"
    bad.write_text("colour: blue\n")
    run = [sys.executable, "-m", "mythos_convert", "card", str(work)]
    ok = subprocess.run(run, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0 and (work / "README.md").is_file(), ok.stderr
    fail = subprocess.run([*run, "--meta", str(bad)], capture_output=True, text=True, timeout=300)
    assert fail.returncode == 2
    assert fail.stderr.strip().splitlines()[-1].startswith("error: card metadata") and "colour" in fail.stderr


def normalise(text: str) -> str:
    """Blank out what changes between runs and releases: timestamps and the mythos-convert version."""
    text = re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(\+00:00|Z)?", "<TIMESTAMP>", text)
    return re.sub(r"mythos-convert \d+\.\d+\.\d+\S*", "mythos-convert <VERSION>", text)


def test_golden_card_for_the_tiny_preset(tmp_path: Path, ref_tokenizer_path: Path):
    """The whole card for `tiny`; regenerate with UPDATE_GOLDEN=1 after an intended change, and review the diff."""
    out = export_folder(tmp_path, load_preset("tiny").model, ref_tokenizer_path)
    record_result(
        out,
        "hf",
        {
            "passed": True,
            "kind": "hf",
            "dtype": "float32",
            "max_abs_diff": 0.0,
            "tolerance": 1e-4,
            "argmax_agreement": 1.0,
            "greedy_equal": True,
            "n_tokens": 64,
            "files": hash_files(out, hf_bound_files(out)),
        },
    )
    text = normalise(write_card(out).read_text())
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text(), "card changed: rerun with UPDATE_GOLDEN=1 if intended and review the diff"


@pytest.mark.slow
def test_template_found_in_a_non_editable_install(tmp_path: Path):
    """`pip install . --target` (no editable path hooks): the packaged template and metadata are found."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, src / name)
    for name in ("mythos_convert", "model_card"):
        shutil.copytree(REPO_ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / "site"
    pip = [
        sys.executable,
        "-m",
        "pip",
        "install",
        str(src),
        "--target",
        str(target),
        "--no-deps",
        "--no-build-isolation",
        "-q",
    ]
    subprocess.run(pip, check=True, capture_output=True, timeout=600)
    code = "import mythos_convert.card as c, mythos_convert.formats.metadata as m; print(c.__file__); print(m.default_meta_path()); print(len(c.template_text()))"
    env = {**os.environ, "PYTHONPATH": str(target), "PYTHONNOUSERSITE": "1"}
    lines = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(target)!r}); {code}"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        cwd=tmp_path,
    ).stdout.splitlines()
    assert lines[0].startswith(str(target)) and lines[1].startswith(str(target))
    assert Path(lines[1]).name == "mythos.yaml" and int(lines[2]) > 1000
    installed = {p.parent.relative_to(target).as_posix() for p in target.glob("mythos_convert/**/__init__.py")}
    in_tree = {
        p.parent.relative_to(REPO_ROOT).as_posix() for p in (REPO_ROOT / "mythos_convert").glob("**/__init__.py")
    }
    assert in_tree <= installed, f"packages missing from the install: {sorted(in_tree - installed)}"


def eval_entry(
    work: Path, name: str, ppl: float, mean_kl: float, top1: float, engine: str = "llama.cpp, flash attention"
) -> dict:
    """An eval.json entry as `mythos-convert eval` records it, bound to the file's hashes."""
    return {
        "kind": "gguf",
        "engine": engine,
        "perplexity": ppl,
        "kl": {
            "mean_kl": mean_kl,
            "median_kl": mean_kl / 2,
            "p99_kl": mean_kl * 9,
            "max_kl": mean_kl * 40,
            "top1_agreement": top1,
            "positions": 990,
        },
        "dataset": "the validation part of the embedded corpus (1,024 tokens); 990 tokens scored",
        "method": "non-overlapping windows of 128 tokens; second halves scored",
        "reference": {"name": "native engine, float32, on ckpt.pt", "perplexity": 41.25},
        "files": hash_files(work, [name]),
    }


def test_files_that_ran_in_different_engines_are_each_named(folder: Path, tmp_path: Path):
    """eval runs Q4_0 on llama.cpp's repacked weights and the other types plain: the card names each
    engine with its types, not the first file's engine for all."""
    from mythos_convert.api import export_gguf
    from mythos_convert.evaluate.record import record_eval

    work = Path(shutil.copytree(folder, tmp_path / "out"))
    written = {w.outtype.name: w.path for w in export_gguf(work, "f16,q4_0", verify=False).written}
    f16, q4 = written["f16"], written["q4_0"]
    repacked = "llama.cpp, flash attention, repacked weights"
    record_eval(
        work,
        {
            f16.name: eval_entry(work, f16.name, 41.2518, 1.5e-7, 0.9997),
            q4.name: eval_entry(work, q4.name, 43.9, 3.4e-3, 0.95, engine=repacked),
        },
    )
    text = write_card(work).read_text()
    assert f"The GGUF files ran in llama.cpp, flash attention (F16); {repacked} (Q4_0)." in text
    index = front_matter(work)["model-index"][0]["results"]
    names = {m["name"] for r in index for m in r["metrics"]}
    assert {f"Perplexity ({f16.name}, llama.cpp, flash attention)", f"Perplexity ({q4.name}, {repacked})"} <= names


def test_files_table_chart_and_model_index_come_from_the_bound_eval(folder: Path, tmp_path: Path):
    from mythos_convert.api import export_gguf
    from mythos_convert.evaluate.record import record_eval

    work = Path(shutil.copytree(folder, tmp_path / "out"))
    written = {w.outtype.name: w.path for w in export_gguf(work, "f16,q8_0", verify=False).written}
    f16, q8 = written["f16"], written["q8_0"]
    record_eval(
        work,
        {
            f16.name: eval_entry(work, f16.name, 41.2518, 1.5e-7, 0.9997),
            q8.name: eval_entry(work, q8.name, 41.3012, 1.1e-4, 0.9898),
        },
    )
    text = write_card(work).read_text()
    assert re.search(
        rf"\| `{re.escape(f16.name)}` \| F16 \| [\d.]+ KiB \| 16\.\d\d \| 41\.2518 \| 1\.5e-07 \| 100\.0% \|", text
    )
    assert re.search(
        rf"\| `{re.escape(q8.name)}` \| Q8_0 \| [\d.]+ KiB \| 8\.\d\d \| 41\.3012 \| 0\.00011 \| 99\.0% \|", text
    )
    assert "on the validation part of the embedded corpus (1,024 tokens); 990 tokens scored" in text
    assert "against the native engine, float32, on ckpt.pt (perplexity 41.2500)" in text
    assert "The GGUF files ran in llama.cpp, flash attention." in text
    chart = work / "gguf-quality.png"
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "](gguf-quality.png)" in text
    index = front_matter(work)["model-index"][0]["results"]
    measured = [(r["dataset"], m) for r in index for m in r["metrics"] if m["name"].startswith("Perplexity (mythos")]
    assert [(m["type"], m["value"]) for _, m in measured] == [("perplexity", 41.3012), ("perplexity", 41.2518)]
    assert measured[0][1]["name"] == f"Perplexity ({q8.name}, llama.cpp, flash attention)"  # recommended Q8_0 first
    assert measured[0][0]["name"].endswith("990 tokens scored")
    assert measured[0][1]["args"]["method"].startswith("non-overlapping windows of 128")
    assert card_problems(text) == []
    # the Q8_0 file changes: its figures no longer apply, the F16 row keeps its own
    q8.write_bytes(q8.read_bytes()[:-1] + b"\0")
    text = write_card(work).read_text()
    assert re.search(rf"\| `{re.escape(q8.name)}` \| Q8_0 \| [\d.]+ KiB \| 8\.\d\d \| - \| - \| - \|", text)
    assert "| 41.2518 | 1.5e-07 |" in text
    # without matplotlib: the table, a note saying how to get the chart, no stale chart left to publish
    code = f"import sys; sys.modules['matplotlib'] = None\nfrom mythos_convert.card import write_card\nwrite_card({str(work)!r})"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
    text = (work / "README.md").read_text()
    assert "| 41.2518 | 1.5e-07 |" in text and "](gguf-quality.png)" not in text and not chart.exists()
    assert 'needs matplotlib (`pip install "mythos-convert[plot]"`)' in text


def test_link_gguf_repo_replaces_its_own_line(folder: Path, tmp_path: Path):
    from mythos_convert.api import export_gguf
    from mythos_convert.card import link_gguf_repo

    work = Path(shutil.copytree(folder, tmp_path / "out"))
    export_gguf(work, "f16", verify=False)
    assert link_gguf_repo(work, "me/tiny-GGUF")
    assert link_gguf_repo(work, "me/other-GGUF", "http://127.0.0.1:9")
    text = (work / "README.md").read_text()
    assert "[me/other-GGUF](http://127.0.0.1:9/me/other-GGUF)" in text and "me/tiny-GGUF" not in text
    assert text.count("<!-- gguf-repo -->") == 1 and card_problems(text) == []


def test_the_training_rows_say_each_fact_once():
    """Older checkpoints recorded `1 process(es) on CPU (...)` and a data description that starts with
    the data's name; the card states the process count and the name once each, and the documents
    row comes from the recorded counts."""
    from mythos_convert.card.facts import training_facts
    from mythos_convert.formats.hf_folder import Provenance

    record = training_record()
    record["hardware"] = "1 process(es) on CPU (x86_64, 2 cores, 2 threads each)"
    facts = training_facts(Provenance.from_dict({"training": record, "step": 400}))
    assert facts["hardware"] == "CPU (x86_64, 2 cores, 2 threads each)"
    assert facts["data_summary"] == "mythos-sample"
    assert facts["data_documents"] == (
        "900 read; 850 after cleaning; 840 after exact deduplication; 830 after near-duplicate removal (MinHash)"
    )
    # a description written by hand (not the trainer's) is kept beside the name
    record["data"] = {"name": "my-corpus", "description": "news articles, 2020-2024"}
    facts = training_facts(Provenance.from_dict({"training": record}))
    assert facts["data_summary"] == "my-corpus: news articles, 2020-2024"
    assert facts["data_documents"] is None


def test_the_first_limitation_names_the_training_data(folder: Path):
    text = (folder / "README.md").read_text()
    limitations = text.split("## Limitations", 1)[1].split("\n## ", 1)[0]
    first = limitations.strip().splitlines()[0]
    assert first.startswith("- Trained only on mythos-sample:"), first
    assert "English only" not in text
