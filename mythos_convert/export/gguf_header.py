"""The key-value header of a GGUF output: `general.*` metadata, the hyperparameters, our own keys.

The hyperparameters come from the one config-key table (`names.CONFIG_KEYS`), in llama.cpp's order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import gguf
import numpy as np
from gguf.utility import model_weight_count_rounded_notation

from mythos_convert import __version__
from mythos_convert.export.gguf_plan import OutType, TensorPlan
from mythos_convert.export.gguf_vocab import GGUFVocab
from mythos_convert.model.config import MythosConfig
from mythos_convert.names import gguf_header
from mythos_convert.quant import recipe as recipes

Q = gguf.GGMLQuantizationType
QUANTIZATION_VERSION = 2  # gguf.GGML_QUANT_VERSION


@dataclass(frozen=True)
class ImatrixInfo:
    """An importance matrix as the writer uses it, and what llama-quantize records of it."""

    weights: dict[str, np.ndarray]  # GGUF tensor name -> per-column weights (float32)
    file: str
    dataset: str
    chunks: int

    def add_to(self, writer: gguf.GGUFWriter) -> None:
        """llama-quantize's keys (`tools/quantize/quantize.cpp`), so tools recognise an imatrix quant."""
        writer.add_string("quantize.imatrix.file", self.file)
        writer.add_string("quantize.imatrix.dataset", self.dataset)
        writer.add_int32("quantize.imatrix.entries_count", len(self.weights))
        writer.add_int32("quantize.imatrix.chunks_count", self.chunks)


@dataclass
class GGUFMetadata:
    """`general.*` keys (from the card metadata) plus the sampling defaults of the release."""

    name: str = "Mythos"
    basename: str = "mythos"
    size_label: str = ""
    license: str | None = None
    author: str | None = None
    url: str | None = None
    description: str | None = None
    tags: list[str] = field(default_factory=list)
    languages: list[str] = field(default_factory=list)
    sampling: dict[str, float] = field(default_factory=dict)  # temp, top_p, top_k (general.sampling.*)

    def add_to(self, writer: gguf.GGUFWriter) -> None:
        writer.add_type(gguf.GGUFType.MODEL)
        writer.add_name(self.name)
        writer.add_basename(self.basename)
        writer.add_size_label(self.size_label)
        for key, value in (
            (gguf.Keys.General.LICENSE, self.license),
            (gguf.Keys.General.AUTHOR, self.author),
            (gguf.Keys.General.URL, self.url),
            (gguf.Keys.General.DESCRIPTION, self.description),
        ):
            if value:
                writer.add_string(key, str(value))
        writer.add_tags(self.tags)
        writer.add_languages(self.languages)
        if "temp" in self.sampling:
            writer.add_sampling_temp(float(self.sampling["temp"]))
        if "top_p" in self.sampling:
            writer.add_sampling_top_p(float(self.sampling["top_p"]))
        if "top_k" in self.sampling:
            writer.add_sampling_top_k(int(self.sampling["top_k"]))


def size_label(config: MythosConfig) -> str:
    """`154M` for the 172m preset: from the real parameter count (tied head once, GQA right)."""
    return model_weight_count_rounded_notation(config.num_parameters())


def add_hparams(writer: gguf.GGUFWriter, config: MythosConfig) -> None:
    """Every hyperparameter llama.cpp reads for the llama architecture (`names.CONFIG_KEYS`):
    sizes as uint32, floats as float32, as gguf-py's typed adders write them."""
    for key, value in gguf_header(config):
        if isinstance(value, float):
            writer.add_float32(key, value)
        else:
            writer.add_uint32(key, value)


# Our own keys (llama.cpp ignores keys it does not know): what differs from the file's type.
KEY_KEPT = "mythos_convert.higher_precision_tensors"
KEY_FALLBACK = "mythos_convert.f16_fallback_tensors"
KEY_VERSION = "mythos_convert.version"


def write_header(
    writer: gguf.GGUFWriter,
    outtype: OutType,
    plans: list[TensorPlan],
    config: MythosConfig,
    vocab: GGUFVocab,
    metadata: GGUFMetadata,
    imatrix: ImatrixInfo | None = None,
) -> None:
    """Add every key of one output and write the header, the keys and the tensor table to its file."""
    add_keys(writer, outtype, plans, config, vocab, metadata, imatrix)
    if outtype.recipe is not None:  # last: the search counts every other key (`quant/search.Layout`)
        writer.add_array(recipes.KEY_RECIPE, recipes.metadata_value(outtype.recipe))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()


def add_keys(
    writer: gguf.GGUFWriter,
    outtype: OutType,
    plans: list[TensorPlan],
    config: MythosConfig,
    vocab: GGUFVocab,
    metadata: GGUFMetadata,
    imatrix: ImatrixInfo | None = None,
) -> None:
    """Every key of one output but a searched file's recipe (which `write_header` adds last)."""
    metadata.add_to(writer)
    add_hparams(writer, config)
    writer.add_file_type(int(outtype.file_type))
    writer.add_quantization_version(QUANTIZATION_VERSION)
    vocab.add_to(writer)
    writer.add_string(KEY_VERSION, __version__)
    if outtype.recipe is not None:  # every matrix's type is in the recipe: no lists of exceptions
        writer.add_string(recipes.KEY_TARGET, outtype.name)
        if imatrix is not None:
            imatrix.add_to(writer)
        return
    main = outtype.qtype
    matrices = [p for p in plans if len(p.shape) > 1]
    fallback = [p.name for p in matrices if p.qtype == Q.F16 != main]
    kept = [f"{p.name}={p.qtype.name}" for p in matrices if p.qtype not in (main, Q.F16)]
    if kept:
        writer.add_array(KEY_KEPT, kept)
    if fallback:
        writer.add_array(KEY_FALLBACK, fallback)
    if imatrix is not None and outtype.qtype not in (Q.F32, Q.F16, Q.BF16, Q.Q8_0):
        imatrix.add_to(writer)
