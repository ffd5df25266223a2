"""Write GGUF files for llama.cpp's `llama` architecture with gguf-py, one tensor at a time.

The writer takes a `MythosConfig`, an iterator of (name, tensor) in native or HF naming (mapped
through the one name table), a `GGUFVocab` and `GGUFMetadata`. Every tensor's shape and type is
known from the config before any data is read, so the header and tensor table are written first
and each tensor is converted, quantized and written as it arrives: peak memory stays near one
tensor. Several output types are written in the same pass (`--outtype all`).

q and k rows are permuted per head (`formats.permute`) from the half-split RoPE layout of Mythos
and transformers to the interleaved layout llama.cpp's llama architecture rotates. The plan is
`gguf_plan`, the header `gguf_header`, the quantization `gguf_encode`; this module streams.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from mythos_convert.errors import MythosError
from mythos_convert.export.gguf_encode import ParallelEncoder, quantize_workers
from mythos_convert.export.gguf_header import GGUFMetadata, ImatrixInfo, write_header
from mythos_convert.export.gguf_plan import OUTTYPES, OutType, TensorPlan, count_shards, plan_tensors
from mythos_convert.export.gguf_vocab import GGUFVocab
from mythos_convert.formats.dtypes import float32_array
from mythos_convert.formats.gguf_files import shard_paths
from mythos_convert.formats.permute import TRANSFORMS
from mythos_convert.model.config import MythosConfig
from mythos_convert.names import GGUF_ARCH, convert_name, gguf_shapes, transform_of
from mythos_convert.quant import kquants
from mythos_convert.support import interrupts
from mythos_convert.support.atomic import check_output_file, output_lock
from mythos_convert.support.ui import track

Q = gguf.GGMLQuantizationType

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
            self.writer = gguf.GGUFWriter(self.tmpdir / final.name, GGUF_ARCH, split_max_size=split_max_size)
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
        write_header(self.writer, self.outtype, self.plans, config, vocab, metadata, imatrix)

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
    searched: list[OutType] = (),
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
        searched: outputs of searched recipes (`gguf_plan.searched_outtype`), named in `outputs` by
            their target; each matrix gets its recipe's type.

    Nothing is left under a final name unless that output was completely written.
    """
    known = {**OUTTYPES, **{t.name: t for t in searched}}
    chosen = [(known[name], Path(path)) for name, path in outputs.items()]
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
            encoder = locks.enter_context(ParallelEncoder(quantize_workers()))
            _stream_tensors(tensors, config, opened, encoder, imatrix.weights if imatrix is not None else {})
            for _outtype, path in chosen:  # another run may have written there meanwhile
                check_outputs(path, n_shards[path], force)
            return [WrittenGGUF(out.outtype, out.commit(), out.plans) for out in opened]
        except BaseException:  # the outputs not yet committed leave nothing behind (a committed one is complete)
            for out in opened:
                out.abort()
            raise


def _stream_tensors(
    tensors: Iterable[tuple[str, object]],
    config: MythosConfig,
    opened: list[_Output],
    encoder: ParallelEncoder,
    weights: dict,
) -> None:
    """One pass over the weights in plan order, each tensor encoded once per output's type."""
    order = list(gguf_shapes(config))
    stream = _in_plan_order(gguf_tensors(tensors, config), order)
    for index, (name, array) in enumerate(track(stream, "writing GGUF", total=len(order))):
        types = [out.plans[index].qtype for out in opened]
        try:
            encoded = encoder.encode_all(array, types, weights.get(name))
        except kquants.NonFiniteError:
            raise nonfinite_error(name) from None
        for out, data in zip(opened, encoded, strict=True):
            out.write(out.plans[index], data)
