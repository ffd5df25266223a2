"""A GGUF file's header and the Ollama Modelfile, read back by gguf-py and held to literals written here.

- Hyperparameters of a config whose every value differs from the defaults (rope theta 50000, rms eps
  1e-6, 4 query heads over 1 KV head, context 96): a value hard-coded to a default fails.
- `general.*` metadata, sampling defaults and llama-quantize's imatrix keys, each written and read back.
- Our own keys: tensors kept above the file's type and F16 fallbacks, named exactly.
- The Modelfile: FROM, the template, each sampling parameter under Ollama's name, the tokenizer's own
  stop token, the context; refused over an existing file without force.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest
from helpers import make_checkpoint, tiny_config
from tokenizers import Tokenizer, models

from mythos_convert.api import export_gguf
from mythos_convert.data.tokenizer import load_tokenizer
from mythos_convert.errors import MythosError
from mythos_convert.export.gguf_header import GGUFMetadata, ImatrixInfo, size_label, write_header
from mythos_convert.export.gguf_plan import OUTTYPES, TensorPlan, searched_outtype
from mythos_convert.export.gguf_vocab import GGUFVocab
from mythos_convert.export.modelfile import modelfile_text, write_modelfile


def _fields(path: Path) -> dict:
    reader = gguf.GGUFReader(path)
    return {name: field.contents() for name, field in reader.fields.items()}


@pytest.fixture
def exported(tmp_path_factory, ref_tokenizer_path) -> dict[str, dict]:
    # built per test (a fraction of a second): mutmut runs a mutant against the tests that called
    # the mutated code, and a module fixture's calls count only for the first test that used it
    folder = tmp_path_factory.mktemp("hdr")
    (folder / "tokenizer.json").write_bytes(ref_tokenizer_path.read_bytes())
    config = tiny_config(512, d_model=48, n_heads=4, n_kv_heads=1, max_seq_len=96, rope_theta=50000.0, norm_eps=1e-6)
    ckpt = make_checkpoint(folder / "ckpt.pt", config, with_optimizer=False)
    export = export_gguf(ckpt, "f32,q4_k_m", verify=False)
    return {w.path.name.rsplit("-", 1)[-1].removesuffix(".gguf"): _read(w.path) for w in export.written}


def _read(path: Path) -> dict:
    """The file's keys, and under "types" each matrix's stored type read from the tensor table."""
    fields = _fields(path)
    reader = gguf.GGUFReader(path)
    fields["types"] = {t.name: t.tensor_type.name for t in reader.tensors if len(t.shape) > 1}
    return fields


def test_hyperparameters_are_the_configs_not_the_defaults(exported):
    for fields in exported.values():
        assert fields["general.architecture"] == "llama"
        assert fields["llama.rope.freq_base"] == pytest.approx(50000.0)
        assert fields["llama.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-6, rel=1e-6)
        assert fields["llama.attention.head_count"] == 4
        assert fields["llama.attention.head_count_kv"] == 1
        assert fields["llama.context_length"] == 96
        assert fields["llama.embedding_length"] == 48
        assert fields["llama.block_count"] == 2
        assert fields["llama.vocab_size"] == 512
        assert fields["general.quantization_version"] == 2
        assert isinstance(fields["mythos_convert.version"], str) and fields["mythos_convert.version"]


def test_file_types_and_the_tensors_kept_or_fallen_back(exported):
    assert set(exported) == {"F32", "Q4_K_M"}
    assert exported["F32"]["general.file_type"] == 0  # LlamaFileType.ALL_F32
    assert exported["Q4_K_M"]["general.file_type"] == 15  # MOSTLY_Q4_K_M
    assert "mythos_convert.higher_precision_tensors" not in exported["F32"]
    assert "mythos_convert.f16_fallback_tensors" not in exported["F32"]
    # rows of 48 fit neither a K-quant nor a 32-block type: those matrices fall back to F16
    q4 = exported["Q4_K_M"]
    types = q4["types"]
    fallback = [name for name, kind in types.items() if kind == "F16"]
    kept = [f"{name}={kind}" for name, kind in types.items() if kind not in ("Q4_K", "F16")]
    assert fallback and kept
    assert q4["mythos_convert.f16_fallback_tensors"] == fallback
    assert q4["mythos_convert.higher_precision_tensors"] == kept
    assert "quantize.imatrix.file" not in q4


def _write(tmp_path: Path, add) -> dict:
    path = tmp_path / "h.gguf"
    writer = gguf.GGUFWriter(path, "llama")
    add(writer)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    return _fields(path)


def test_metadata_keys_are_written_and_empty_ones_left_out(tmp_path):
    meta = GGUFMetadata(
        name="Mythos Tiny",
        basename="mythos-tiny",
        size_label="1.2M",
        license="apache-2.0",
        author=None,
        url="https://example.org/m",
        description="",
        tags=["a", "b"],
        languages=["en"],
        sampling={"temp": 0.7, "top_p": 0.95, "top_k": 40},
    )
    got = _write(tmp_path, meta.add_to)
    assert got["general.type"] == "model"
    assert (got["general.name"], got["general.basename"], got["general.size_label"]) == (
        "Mythos Tiny",
        "mythos-tiny",
        "1.2M",
    )
    assert got["general.license"] == "apache-2.0" and got["general.url"] == "https://example.org/m"
    assert "general.author" not in got and "general.description" not in got
    assert got["general.tags"] == ["a", "b"] and got["general.languages"] == ["en"]
    assert got["general.sampling.temp"] == pytest.approx(0.7)
    assert got["general.sampling.top_p"] == pytest.approx(0.95)
    assert got["general.sampling.top_k"] == 40


def test_author_and_description_are_written_and_sampling_only_where_given(tmp_path):
    got = _write(tmp_path, GGUFMetadata(author="Ada", description="tiny", sampling={"top_k": 7}).add_to)
    assert got["general.author"] == "Ada" and got["general.description"] == "tiny"
    assert got["general.name"] == "Mythos" and got["general.basename"] == "mythos"
    assert got["general.sampling.top_k"] == 7
    assert "general.sampling.temp" not in got and "general.sampling.top_p" not in got


def test_imatrix_keys_are_llama_quantizes(tmp_path):
    info = ImatrixInfo({"a": np.ones(4, np.float32), "b": np.ones(4, np.float32)}, "imatrix.gguf", "calib.txt", 6)
    got = _write(tmp_path, info.add_to)
    assert got["quantize.imatrix.file"] == "imatrix.gguf"
    assert got["quantize.imatrix.dataset"] == "calib.txt"
    assert got["quantize.imatrix.entries_count"] == 2
    assert got["quantize.imatrix.chunks_count"] == 6


Q = gguf.GGMLQuantizationType
PLANS = [
    TensorPlan("blk.0.attn_norm.weight", (64,), Q.F32, ""),
    TensorPlan("blk.0.attn_q.weight", (64, 64), Q.Q4_K, ""),
    TensorPlan("blk.0.attn_v.weight", (32, 64), Q.Q6_K, ""),
    TensorPlan("blk.0.ffn_down.weight", (64, 192), Q.F16, ""),
]


def _header(tmp_path: Path, outtype, imatrix: ImatrixInfo | None) -> tuple[dict, list[str]]:
    """write_header's keys read back, and their names in file order."""
    path = tmp_path / f"{outtype.name}.gguf"
    writer = gguf.GGUFWriter(path, "llama")
    vocab = GGUFVocab(["<unk>", "a"], [2, 1], [], {}, "default", r"\S+", add_bos=False)
    write_header(writer, outtype, PLANS, tiny_config(512), vocab, GGUFMetadata(), imatrix)
    writer.close()
    return _fields(path), list(gguf.GGUFReader(path).fields)


IMATRIX = ImatrixInfo({"blk.0.attn_q.weight": np.ones(64, np.float32)}, "im.gguf", "calib.txt", 3)


def test_a_searched_file_holds_its_target_and_recipe_last_and_no_lists_of_exceptions(tmp_path):
    recipe = {"blk.0.attn_q.weight": Q.Q4_K, "blk.0.attn_v.weight": Q.Q6_K, "blk.0.ffn_down.weight": Q.Q5_K}
    fields, order = _header(tmp_path, searched_outtype("bpw4.50", recipe), IMATRIX)
    assert fields["mythos.quantize.target"] == "bpw4.50"
    assert fields["mythos.quantize.tensor_types"] == [
        "blk.0.attn_q.weight=Q4_K",
        "blk.0.attn_v.weight=Q6_K",
        "blk.0.ffn_down.weight=Q5_K",
    ]
    assert order[-1] == "mythos.quantize.tensor_types"
    assert fields["general.file_type"] == 7  # MOSTLY_Q8_0, llama-quantize's base for --tensor-type
    assert (fields["quantize.imatrix.file"], fields["quantize.imatrix.chunks_count"]) == ("im.gguf", 3)
    assert "mythos_convert.higher_precision_tensors" not in fields
    assert "mythos_convert.f16_fallback_tensors" not in fields
    fields, _ = _header(tmp_path, searched_outtype("size9MB", recipe), None)
    assert fields["mythos.quantize.target"] == "size9MB" and "quantize.imatrix.file" not in fields


@pytest.mark.parametrize(("outtype", "with_imatrix"), [("q4_k_m", True), ("q8_0", False), ("f32", False)])
def test_a_fixed_mix_names_its_exceptions_and_records_an_imatrix_only_where_llama_quantize_uses_one(
    tmp_path, outtype, with_imatrix
):
    fields, _ = _header(tmp_path, OUTTYPES[outtype], IMATRIX)
    assert ("quantize.imatrix.file" in fields) == with_imatrix
    assert ("quantize.imatrix.entries_count" in fields) == with_imatrix
    assert "mythos.quantize.target" not in fields and "mythos.quantize.tensor_types" not in fields
    # the 1-D norm is never listed; F16 is a fallback only in a file whose matrices are not F16
    kept = {
        "q4_k_m": ["blk.0.attn_v.weight=Q6_K"],
        "q8_0": ["blk.0.attn_q.weight=Q4_K", "blk.0.attn_v.weight=Q6_K"],
        "f32": ["blk.0.attn_q.weight=Q4_K", "blk.0.attn_v.weight=Q6_K"],
    }[outtype]
    assert fields["mythos_convert.higher_precision_tensors"] == kept
    assert fields["mythos_convert.f16_fallback_tensors"] == ["blk.0.ffn_down.weight"]


def test_size_label_counts_the_tied_head_once():
    # 512*64 embedding + 2 layers * (4 * 64*64 ... with GQA) : gguf-py rounds to "..K"/"..M"
    config = tiny_config(512)
    assert size_label(config) == f"{round(config.num_parameters() / 1e3)}K"


# --- Modelfile --------------------------------------------------------------------------------------


def test_modelfile_lists_each_parameter_under_ollamas_name(ref_tokenizer_path):
    tok = load_tokenizer(ref_tokenizer_path)
    generation = {"temperature": 0.5, "top_k": 40, "repetition_penalty": 1.1, "top_p": None, "max_length": 9}
    text = modelfile_text("m-Q4_K_M.gguf", tok, generation, 2048)
    assert text == (
        "# Ollama Modelfile written by mythos-convert. Create the model with:\n"
        "#   ollama create mythos -f Modelfile\n"
        "FROM ./m-Q4_K_M.gguf\n"
        "\n"
        "# A base model: the prompt is passed through as plain text (no chat template).\n"
        'TEMPLATE """{{ .Prompt }}"""\n'
        "\n"
        "PARAMETER temperature 0.5\n"
        "PARAMETER top_p 0.9\n"
        "PARAMETER top_k 40\n"
        "PARAMETER repeat_penalty 1.1\n"
        'PARAMETER stop "<eos>"\n'
        "PARAMETER num_ctx 2048\n"
    )


def test_modelfile_without_an_eos_token_has_no_stop_and_keeps_the_defaults():
    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    text = modelfile_text("x.gguf", tok, {}, 128)
    assert "PARAMETER stop" not in text
    assert "PARAMETER temperature 0.8\nPARAMETER top_p 0.9\nPARAMETER num_ctx 128\n" in text


def test_write_modelfile_refuses_an_existing_file_without_force(tmp_path, ref_tokenizer_path):
    tok = load_tokenizer(ref_tokenizer_path)
    path = write_modelfile(tmp_path / "a.gguf", tok, {"temperature": 0.3}, 64)
    assert path == tmp_path / "Modelfile" and "PARAMETER temperature 0.3" in path.read_text()
    assert "\nFROM ./a.gguf\n" in path.read_text() and path.read_text().endswith("\nPARAMETER num_ctx 64\n")
    with pytest.raises(MythosError):
        write_modelfile(tmp_path / "a.gguf", tok, {"temperature": 0.4}, 64)
    assert "PARAMETER temperature 0.3" in path.read_text()
    write_modelfile(tmp_path / "a.gguf", tok, {"temperature": 0.4}, 64, force=True)
    assert "PARAMETER temperature 0.4" in path.read_text()


def test_write_modelfile_refuses_a_file_that_appears_while_it_writes(tmp_path, ref_tokenizer_path, monkeypatch):
    import mythos_convert.export.modelfile as modelfile

    text = modelfile.modelfile_text

    def racing(*args):  # another process writes the Modelfile between the check and the rename
        (tmp_path / "Modelfile").write_text("theirs\n")
        return text(*args)

    monkeypatch.setattr(modelfile, "modelfile_text", racing)
    with pytest.raises(MythosError):
        write_modelfile(tmp_path / "a.gguf", load_tokenizer(ref_tokenizer_path), {}, 64)
    assert (tmp_path / "Modelfile").read_text() == "theirs\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Modelfile"]  # no temporary file left
