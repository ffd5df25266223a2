"""Write GGUF files for llama.cpp's `llama` architecture with gguf-py, one tensor at a time.

The writer takes a `MythosConfig`, an iterator of (name, tensor) in native or HF naming (mapped
through the one name table), a `GGUFVocab` and `GGUFMetadata`. Every tensor's shape and type is
known from the config before any data is read, so the header and tensor table are written first
and each tensor is converted, quantized and written as it arrives: peak memory stays near one
tensor. Several output types are written in the same pass (`--outtype all`).

q and k rows are permuted per head (k with n_kv_heads) from the half-split RoPE layout of Mythos
and transformers to the interleaved layout llama.cpp's llama architecture rotates. Quantization
runs in `kquants` (llama.cpp's quantizers compiled on first use, else numpy), bit-identical to
llama.cpp's own quantizer.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from math import prod
from pathlib import Path

import gguf
import numpy as np
from gguf.utility import model_weight_count_rounded_notation

from mythos_convert import __version__
from mythos_convert.errors import MythosError
from mythos_convert.export.gguf_vocab import GGUFVocab
from mythos_convert.formats.dtypes import float32_array
from mythos_convert.formats.gguf_files import shard_paths
from mythos_convert.formats.permute import TRANSFORMS
from mythos_convert.model.config import MythosConfig
from mythos_convert.names import convert_name, expected_names, native_shapes, transform_of
from mythos_convert.quant import kquants
from mythos_convert.quant.types import MAIN_TYPE, choose_types
from mythos_convert.support import interrupts
from mythos_convert.support.atomic import check_output_file, output_lock
from mythos_convert.support.ui import track
from mythos_convert.support.workers import close_pool, process_pool, starting_workers

Q = gguf.GGMLQuantizationType
F = gguf.LlamaFileType


@dataclass(frozen=True)
class OutType:
    """One `--outtype` (llama-quantize's name for it) and the file type llama.cpp records."""

    name: str  # as typed on the command line
    file_type: gguf.LlamaFileType

    @property
    def qtype(self) -> gguf.GGMLQuantizationType:
        """The type of the file's ordinary matrices; some tensors get others (`gguf_types`)."""
        return MAIN_TYPE[self.file_type]

    @property
    def label(self) -> str:  # as it appears in file names: F16, Q8_0, Q4_K_M
        return self.name.upper()


# Every type llama.cpp runs for a dense llama that this package can quantize: the float and legacy
# types (gguf.quants, or kquants with an importance matrix) and the K-quant mixes (kquants). Left
# out: IQ types, TQ1_0/TQ2_0 (ternary-trained weights only), MXFP4 (MoE-only in llama.cpp).
OUTTYPES: dict[str, OutType] = {
    t.name: t
    for t in (
        OutType("f32", F.ALL_F32),
        OutType("f16", F.MOSTLY_F16),
        OutType("bf16", F.MOSTLY_BF16),
        OutType("q8_0", F.MOSTLY_Q8_0),
        OutType("q6_k", F.MOSTLY_Q6_K),
        OutType("q5_k_m", F.MOSTLY_Q5_K_M),
        OutType("q5_k_s", F.MOSTLY_Q5_K_S),
        OutType("q5_1", F.MOSTLY_Q5_1),
        OutType("q5_0", F.MOSTLY_Q5_0),
        OutType("q4_k_m", F.MOSTLY_Q4_K_M),
        OutType("q4_k_s", F.MOSTLY_Q4_K_S),
        OutType("q4_1", F.MOSTLY_Q4_1),
        OutType("q4_0", F.MOSTLY_Q4_0),
        OutType("q3_k_l", F.MOSTLY_Q3_K_L),
        OutType("q3_k_m", F.MOSTLY_Q3_K_M),
        OutType("q3_k_s", F.MOSTLY_Q3_K_S),
        OutType("q2_k", F.MOSTLY_Q2_K),
    )
}
ALL = "all"
QUANTIZATION_VERSION = 2  # gguf.GGML_QUANT_VERSION


def parse_outtypes(text: str) -> list[OutType]:
    """`f16`, `q8_0,q4_0` or `all` -> the output types, in the order given.

    Raises:
        MythosError: an unknown type (the message lists the valid ones).
    """
    names = list(OUTTYPES) if text.strip().lower() == ALL else [t.strip().lower() for t in text.split(",")]
    unknown = [n for n in names if n not in OUTTYPES]
    if unknown or not names:
        raise MythosError(f"unknown --outtype {text!r}: choose one of {', '.join(OUTTYPES)} or {ALL}")
    return [OUTTYPES[n] for n in dict.fromkeys(names)]


def parse_size(text: str | int | None) -> int:
    """`500M`, `2G`, `1500K` or a byte count -> bytes (decimal units, as llama.cpp's gguf-split)."""
    if text is None or text == "" or text == 0:
        return 0
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)B?\s*", str(text), re.IGNORECASE)
    if match is None:
        raise MythosError(f"cannot read size {text!r}: write it like 500M, 2G or a number of bytes")
    scale = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}[match.group(2).upper()]
    return int(float(match.group(1)) * scale)


# --- the plan: every tensor's shape and type, from the config alone ---------------------------


def gguf_shapes(config: MythosConfig) -> dict[str, tuple[int, ...]]:
    """GGUF name -> numpy shape ([out, in] as in HF; ggml's order is the reverse), tied model.

    The shapes are the native ones: neither HF nor GGUF transposes, the q/k permutation keeps shapes.
    """
    native = native_shapes(config)
    return {name: native[convert_name(name, "gguf", "native")] for name in expected_names("gguf", config.n_layers)}


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


@dataclass(frozen=True)
class TensorPlan:
    name: str
    shape: tuple[int, ...]  # numpy order
    qtype: gguf.GGMLQuantizationType
    note: str = ""  # why the type differs from the file's type, if it does

    @property
    def nbytes(self) -> int:
        block, size = gguf.GGML_QUANT_SIZES[self.qtype]
        return prod(self.shape[:-1]) * self.shape[-1] // block * size


def plan_tensors(config: MythosConfig, outtype: OutType, *, imatrix: bool = False) -> list[TensorPlan]:
    """Each tensor's type in a file of `outtype`, chosen by llama.cpp's rules (`gguf_types`).

    1-D tensors (norms) stay F32; the tied embedding takes the output head's type; the _S/_M/_L
    mixes give some layers more bits; a row that does not fit a type's block falls back (noted).
    """
    shapes = gguf_shapes(config)
    choices = choose_types(
        outtype.file_type,
        shapes,
        n_layers=config.n_layers,
        n_heads=config.n_heads,
        n_kv_heads=config.n_kv_heads,
        imatrix=imatrix,
    )
    return [TensorPlan(name, shape, choices[name].qtype, choices[name].why) for name, shape in shapes.items()]


def encode(
    array: np.ndarray,
    qtype: gguf.GGMLQuantizationType,
    imatrix: np.ndarray | None = None,
    *,
    check_finite: bool = False,
) -> np.ndarray:
    """float32 array -> the bytes (as an array) of `qtype`, as llama.cpp's quantizer writes them.

    Float types are plain casts; every quantized type goes through `kquants.quantize`, which
    weights by `imatrix` where llama.cpp does and hands what gguf-py already does right to it.

    Raises:
        kquants.NonFiniteError: `check_finite` and a NaN or infinity in `array`. The cast and the
            quantizers check in their own pass over the data (compiled); F32 checks, then copies.
    """
    if qtype == Q.F32:
        out = np.ascontiguousarray(array, dtype=np.float32)
        if check_finite and not kquants.all_finite(out):
            raise kquants.NonFiniteError("NaN or infinite values")
        return out
    if qtype == Q.F16:  # numpy's IEEE rounding, compiled where the kernels loaded
        return kquants.to_f16(array, check_finite=check_finite)
    rows = np.ascontiguousarray(array, dtype=np.float32).reshape(-1, array.shape[-1])
    return kquants.quantize(rows, qtype, imatrix, check_finite=check_finite).reshape(*array.shape[:-1], -1)


def checking_type(qtypes: list[gguf.GGMLQuantizationType]) -> gguf.GGMLQuantizationType:
    """Of one tensor's output types, the one whose encoding checks it for NaN/Inf: the first that is
    not F32 (its cast or quantizer folds the check into its own read of the data), else F32."""
    return next((q for q in qtypes if q != Q.F32), qtypes[0])


MIN_PARALLEL = 1 << 20  # values of quantization work (one tensor, all types) below which processes cost more
MIN_PARALLEL_THREADS = 1 << 16  # the same for threads (the compiled quantizers): a submit costs microseconds


def quantize_workers() -> int:
    """Workers to quantize with: MYTHOS_QUANT_WORKERS, else the cores this process may use.

    The compiled quantizers release the GIL, so the workers are threads; kquants' numpy fallback
    loops over positions in a block in Python, where threads gain nothing, so it gets processes.
    """
    value = os.environ.get("MYTHOS_QUANT_WORKERS", "")
    if value.strip():
        try:
            return max(1, int(value))
        except ValueError as exc:
            raise MythosError(f"MYTHOS_QUANT_WORKERS must be an integer, got {value!r}: fix or unset it") from exc
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class ParallelEncoder:
    """`encode` for one tensor into every output's type, the quantization spread over workers.

    Rows are independent in every GGUF type, so slicing them changes no byte (tested). Threads
    where the compiled quantizers loaded, else processes (`quantize_workers`). The pool starts only
    when there is quantization work worth it; float casts stay in this thread.
    """

    def __init__(self, workers: int):
        self.workers = workers
        self._pool: concurrent.futures.Executor | None = None

    def __enter__(self) -> ParallelEncoder:
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        if self._pool is not None:
            close_pool(self._pool, abandon=kind is not None)

    def encode_all(
        self, array: np.ndarray, qtypes: list[gguf.GGMLQuantizationType], imatrix: np.ndarray | None = None
    ) -> list[np.ndarray]:
        """`encode` into each of `qtypes`, the tensor checked for NaN/Inf once (`checking_type`).

        Raises:
            kquants.NonFiniteError: a NaN or infinity in `array`.
        """
        checker = checking_type(qtypes)
        check_at = qtypes.index(checker)  # one check per tensor, however many outputs share the type
        quantized = [q for q in qtypes if q not in (Q.F32, Q.F16)]
        threads = kquants.kernel_status().quantize is not None
        if (
            self.workers < 2
            or array.ndim < 2
            or array.size * len(quantized) < (MIN_PARALLEL_THREADS if threads else MIN_PARALLEL)
        ):
            return [encode(array, q, imatrix, check_finite=i == check_at) for i, q in enumerate(qtypes)]
        rows = np.ascontiguousarray(array, dtype=np.float32).reshape(-1, array.shape[-1])
        slices = np.array_split(np.arange(rows.shape[0]), min(rows.shape[0], 2 * self.workers))
        pool = self._start()
        joined = {  # threads write their rows into these; processes return copies, joined below
            q: np.empty((rows.shape[0], TensorPlan("", rows.shape, q).nbytes // rows.shape[0]), np.uint8)
            for q in quantized
            if threads
        }
        with starting_workers():  # a worker started here is deaf to Ctrl-C from birth
            pending = {
                q: [
                    pool.submit(
                        kquants.quantize,
                        rows[s[0] : s[-1] + 1],
                        q,
                        imatrix,
                        check_finite=q == checker,
                        into=joined[q][s[0] : s[-1] + 1] if threads else None,
                    )
                    for s in slices
                    if s.size
                ]
                for q in dict.fromkeys(quantized)
            }
        out = []
        for i, q in enumerate(qtypes):
            if q in pending:
                parts = [f.result() for f in pending[q]]
                data = joined[q] if threads else np.concatenate(parts)
                out.append(data.reshape(*array.shape[:-1], -1))
            else:
                out.append(encode(array, q, imatrix, check_finite=i == check_at))
        return out

    def _start(self) -> concurrent.futures.Executor:
        if self._pool is None and kquants.kernel_status().quantize is not None:
            self._pool = concurrent.futures.ThreadPoolExecutor(self.workers, thread_name_prefix="quantize")
        elif self._pool is None:  # spawn: no copy of this process's torch threads, and they die with it
            self._pool = process_pool(self.workers, "spawn")
        return self._pool


# --- metadata ---------------------------------------------------------------------------------


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
    """Every hyperparameter llama.cpp reads for the llama architecture."""
    writer.add_context_length(config.max_seq_len)
    writer.add_embedding_length(config.d_model)
    writer.add_block_count(config.n_layers)
    writer.add_feed_forward_length(config.ffn_dim)  # the real SwiGLU width, not d_ff
    writer.add_head_count(config.n_heads)
    writer.add_head_count_kv(config.n_kv_heads)
    writer.add_layer_norm_rms_eps(config.norm_eps)
    writer.add_rope_freq_base(config.rope_theta)
    # llama.cpp refuses `invalid n_rot` unless rope dims == key length == head_dim
    writer.add_rope_dimension_count(config.head_dim)
    writer.add_key_length(config.head_dim)
    writer.add_value_length(config.head_dim)
    writer.add_vocab_size(config.vocab_size)


# Our own keys (llama.cpp ignores keys it does not know): what differs from the file's type.
KEY_KEPT = "mythos_convert.higher_precision_tensors"
KEY_FALLBACK = "mythos_convert.f16_fallback_tensors"
KEY_VERSION = "mythos_convert.version"


# --- the tensor stream ------------------------------------------------------------------------


def gguf_tensors(tensors: Iterable[tuple[str, object]], config: MythosConfig) -> Iterator[tuple[str, np.ndarray]]:
    """Map (native name, tensor) to (gguf name, float32 array), transforms applied.

    The tensors are a `ModelSource`'s: already checked against the config (`names.check_tensors`),
    the tied head left out (llama.cpp then uses `token_embd` as the output head). Not yet checked
    for NaN/Inf: the writer's encoding does that in its own pass over the data (`encode_all`).
    """
    for name, tensor in tensors:
        array = float32_array(tensor)
        transform = transform_of(name, "native")
        if transform is not None:
            array = TRANSFORMS[transform](array, config)
        yield convert_name(name, "native", "gguf"), array


def nonfinite_error(gguf_name: str) -> MythosError:
    """The refusal of a tensor holding NaN/Inf, named as the source names it."""
    name = convert_name(gguf_name, "gguf", "native")
    return MythosError(
        f"tensor {name} holds NaN or Inf values: the checkpoint is damaged; "
        "convert a healthy checkpoint (llama.cpp would compute NaN logits)"
    )


def _in_plan_order(stream: Iterator[tuple[str, np.ndarray]], order: list[str]) -> Iterator[tuple[str, np.ndarray]]:
    """Yield tensors in `order`; ones that arrive early wait (memory stays one tensor in order)."""
    pending: dict[str, np.ndarray] = {}
    position = 0
    for name, array in stream:
        if name in pending or order.index(name) < position:
            raise MythosError(f"tensor {name} appears twice in the source: re-save or re-export the weights")
        pending[name] = array
        while position < len(order) and order[position] in pending:
            yield order[position], pending.pop(order[position])
            position += 1
    missing = order[position:]
    if missing:
        raise MythosError(
            f"{len(missing)} tensor(s) missing from the source, first {missing[0]}: the weights are incomplete; "
            "re-save or re-export them"
        )


# --- writing ----------------------------------------------------------------------------------


@dataclass
class WrittenGGUF:
    """One written output: its files (several when split) and how each tensor was stored."""

    outtype: OutType
    paths: list[Path]
    plans: list[TensorPlan]

    @property
    def path(self) -> Path:  # the file to load (the first shard when split)
        return self.paths[0]

    @property
    def nbytes(self) -> int:
        return sum(p.stat().st_size for p in self.paths)

    @property
    def special(self) -> list[TensorPlan]:
        return [p for p in self.plans if p.note]


class _Output:
    """One GGUF output being written into a temporary folder beside its final path."""

    def __init__(self, outtype: OutType, final: Path, plans: list[TensorPlan], split_max_size: int):
        self.outtype, self.final, self.plans = outtype, final, plans
        self.tmpdir = Path(tempfile.mkdtemp(prefix=f".{final.stem}.tmp-", dir=final.parent))
        try:
            self.writer = gguf.GGUFWriter(self.tmpdir / final.name, "llama", split_max_size=split_max_size)
            self._add_infos(plans)
        except BaseException:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            raise

    def _add_infos(self, plans: list[TensorPlan]) -> None:
        for plan in plans:
            if plan.qtype in (Q.F32, Q.F16):
                dtype = np.float32 if plan.qtype == Q.F32 else np.float16
                self.writer.add_tensor_info(plan.name, plan.shape, np.dtype(dtype), plan.nbytes)
            else:
                byte_shape = gguf.quants.quant_shape_to_byte_shape(plan.shape, plan.qtype)
                self.writer.add_tensor_info(plan.name, byte_shape, np.dtype(np.uint8), plan.nbytes, plan.qtype)

    @property
    def n_shards(self) -> int:
        return len(self.writer.tensors)

    def write_header(
        self, config: MythosConfig, vocab: GGUFVocab, metadata: GGUFMetadata, imatrix: ImatrixInfo | None = None
    ) -> None:
        w = self.writer
        metadata.add_to(w)
        add_hparams(w, config)
        w.add_file_type(int(self.outtype.file_type))
        w.add_quantization_version(QUANTIZATION_VERSION)
        vocab.add_to(w)
        w.add_string(KEY_VERSION, __version__)
        main = self.outtype.qtype
        matrices = [p for p in self.plans if len(p.shape) > 1]
        fallback = [p.name for p in matrices if p.qtype == Q.F16 != main]
        kept = [f"{p.name}={p.qtype.name}" for p in matrices if p.qtype not in (main, Q.F16)]
        if kept:
            w.add_array(KEY_KEPT, kept)
        if fallback:
            w.add_array(KEY_FALLBACK, fallback)
        if imatrix is not None and self.outtype.qtype not in (Q.F32, Q.F16, Q.BF16, Q.Q8_0):
            imatrix.add_to(w)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()

    def write(self, plan: TensorPlan, data: np.ndarray) -> None:
        """Append one tensor's encoded bytes (`encode` / `ParallelEncoder`)."""
        assert data.nbytes == plan.nbytes, (plan.name, data.nbytes, plan.nbytes)
        self.writer.write_tensor_data(data)

    def commit(self) -> list[Path]:
        """Move the finished file(s) onto their final names."""
        self.writer.close()
        finals = shard_paths(self.final, self.n_shards)
        produced = shard_paths(self.tmpdir / self.final.name, self.n_shards)
        with interrupts.deferred():  # every shard of the new output, never some of them
            for tmp, final in zip(produced, finals, strict=True):
                os.replace(tmp, final)
        shutil.rmtree(self.tmpdir, ignore_errors=True)
        return finals

    def abort(self) -> None:
        """Remove what is left of the temporary folder (nothing after `commit`)."""
        self.writer.close()
        shutil.rmtree(self.tmpdir, ignore_errors=True)


def check_outputs(path: Path, n_shards: int, force: bool) -> None:
    """Refuse existing outputs (and their shards) unless force."""
    for final in shard_paths(path, n_shards):
        check_output_file(final, force)


def count_shards(config: MythosConfig, outtype: OutType, split_max_size: int) -> int:
    """How many files an output will have, computed as gguf-py splits (before writing)."""
    if not split_max_size:
        return 1
    shards, current = 1, 0
    for plan in plan_tensors(config, outtype):
        if current and current + plan.nbytes > split_max_size:
            shards, current = shards + 1, 0
        current += plan.nbytes
    return shards


def write_gguf(
    tensors: Iterable[tuple[str, object]],
    config: MythosConfig,
    vocab: GGUFVocab,
    metadata: GGUFMetadata,
    outputs: dict[str, Path],
    *,
    split_max_size: int = 0,
    force: bool = False,
    imatrix: ImatrixInfo | None = None,
) -> list[WrittenGGUF]:
    """Write one GGUF per output type from one pass over `tensors`.

    Args:
        tensors: (native name, tensor) pairs checked against `config` (a `ModelSource`'s
            `tensors()`), any order; in the canonical order (embedding, layers, norm) nothing is held back.
        outputs: outtype name -> final path (a split output gets `-0000k-of-0000n` names).
        split_max_size: bytes of tensor data per shard (0: one file).
        force: replace existing files.
        imatrix: per-column importance weights by GGUF name (`mythos_convert.quant.imatrix`): the
            quantizers weight by them and llama.cpp's imatrix rules pick the types.

    Nothing is left under a final name unless that output was completely written.
    """
    chosen = [(OUTTYPES[name], Path(path)) for name, path in outputs.items()]
    n_shards = {path: count_shards(config, outtype, split_max_size) for outtype, path in chosen}
    for _outtype, path in chosen:
        check_outputs(path, n_shards[path], force)
        path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as locks:
        for _outtype, path in chosen:
            locks.enter_context(output_lock(path))
        opened: list[_Output] = []
        try:
            for outtype, path in chosen:
                plans = plan_tensors(config, outtype, imatrix=imatrix is not None)
                with interrupts.deferred():  # its temporary folder is created and listed for cleanup at once
                    opened.append(_Output(outtype, path, plans, split_max_size))
                opened[-1].write_header(config, vocab, metadata, imatrix)
            order = list(gguf_shapes(config))
            stream = _in_plan_order(gguf_tensors(tensors, config), order)
            weights = imatrix.weights if imatrix is not None else {}
            encoder = locks.enter_context(ParallelEncoder(quantize_workers()))
            for index, (name, array) in enumerate(track(stream, "writing GGUF", total=len(order))):
                types = [out.plans[index].qtype for out in opened]
                try:
                    encoded = encoder.encode_all(array, types, weights.get(name))
                except kquants.NonFiniteError:
                    raise nonfinite_error(name) from None
                for out, data in zip(opened, encoded, strict=True):
                    out.write(out.plans[index], data)
            for _outtype, path in chosen:  # another run may have written there meanwhile
                check_outputs(path, n_shards[path], force)
            return [WrittenGGUF(out.outtype, out.commit(), out.plans) for out in opened]
        except BaseException:  # the outputs not yet committed leave nothing behind (a committed one is complete)
            for out in opened:
                out.abort()
            raise
