"""llama.cpp's GGUF importance-matrix file: read, checked against a model, and written.

The format of `tools/imatrix/imatrix.cpp` (read by `common/imatrix-loader.cpp`, which
llama-quantize uses): `general.type = imatrix`, `imatrix.datasets`, `imatrix.chunk_count`,
`imatrix.chunk_size`, and per matrix two F32 tensors, `NAME.in_sum2` (the sum over tokens of each
input column's squared activation) and `NAME.counts` (the tokens). Reading divides sums by counts
in float32 as llama-quantize does, so both quantizers get the same weights from the same file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import gguf
import numpy as np

from mythos_convert.errors import MythosError
from mythos_convert.model.config import MythosConfig
from mythos_convert.names import gguf_shapes
from mythos_convert.support.atomic import atomic_file
from mythos_convert.support.safe_paths import require_file

SUMS, COUNTS = ".in_sum2", ".counts"
KEY_DATASETS, KEY_CHUNK_COUNT, KEY_CHUNK_SIZE = (
    gguf.Keys.IMatrix.DATASETS,
    gguf.Keys.IMatrix.CHUNK_COUNT,
    gguf.Keys.IMatrix.CHUNK_SIZE,
)


@dataclass
class ImatrixStats:
    """Per GGUF tensor name: the float64 sums of squared inputs per column and the token count."""

    sums: dict[str, np.ndarray] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    datasets: list[str] = field(default_factory=list)
    chunk_count: int = 0
    chunk_size: int = 0
    tokens_per_second: float = 0.0

    def weights(self) -> dict[str, np.ndarray]:
        """What a quantizer uses: mean squared activation per column, float32 division as llama-quantize."""
        return {n: s.astype(np.float32) / np.float32(self.counts[n]) for n, s in self.sums.items()}


def quantized_matrices(config: MythosConfig) -> dict[str, int]:
    """GGUF names of the matrices llama-imatrix covers (the `blk.*` products) -> their input width."""
    return {n: s[-1] for n, s in gguf_shapes(config).items() if n.startswith("blk.") and len(s) == 2}


def write_imatrix(path: str | Path, stats: ImatrixStats, *, force: bool = False) -> Path:
    """Write `stats` as a GGUF imatrix file (atomically; an existing file needs `force`)."""
    path = Path(path)
    with atomic_file(path, force=force) as tmp:
        writer = gguf.GGUFWriter(tmp, arch="llama")
        writer.add_type(gguf.GGUFType.IMATRIX)
        writer.add_array(KEY_DATASETS, stats.datasets or ["unknown"])
        writer.add_uint32(KEY_CHUNK_COUNT, stats.chunk_count)
        writer.add_uint32(KEY_CHUNK_SIZE, stats.chunk_size)
        for name in sorted(stats.sums):
            writer.add_tensor(name + SUMS, stats.sums[name].astype(np.float32)[None, :])
            writer.add_tensor(name + COUNTS, np.array([[stats.counts[name]]], dtype=np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return path


def read_imatrix(path: str | Path, config: MythosConfig | None = None) -> ImatrixStats:
    """Read a GGUF imatrix file; with `config`, check it belongs to that model.

    Raises:
        MythosError: not an imatrix file; a tensor name or width the model does not have (the first
            mismatch named); NaN/Inf sums or a zero count.
    """
    path = require_file(path, "imatrix file", "pass a file written by `mythos-convert imatrix` or llama-imatrix")
    try:
        reader = gguf.GGUFReader(path)
    except Exception as exc:  # gguf-py raises ValueError/struct errors on foreign files
        raise MythosError(
            f"{path} is not a GGUF imatrix file ({str(exc).splitlines()[0][:100] if str(exc) else exc!r}): "
            "make one with `mythos-convert imatrix`"
        ) from exc
    stats = ImatrixStats()
    counts: dict[str, float] = {}
    for t in reader.tensors:
        if t.name.endswith((SUMS, COUNTS)) and t.tensor_type != gguf.GGMLQuantizationType.F32:
            raise MythosError(
                f"{path}: {t.name} is stored as {t.tensor_type.name}, not F32 as llama-imatrix writes it: "
                "the file is damaged or foreign; recompute it with `mythos-convert imatrix`"
            )
        data = np.asarray(t.data, dtype=np.float32).reshape(-1)
        if t.name.endswith(SUMS):
            stats.sums[t.name[: -len(SUMS)]] = data.astype(np.float64)
        elif t.name.endswith(COUNTS):
            counts[t.name[: -len(COUNTS)]] = float(data[0]) if data.size else 0.0
    if not stats.sums:
        raise MythosError(f"{path} holds no importance matrix entries: make one with `mythos-convert imatrix`")
    fields = reader.fields
    stats.chunk_size = _whole_number(fields, KEY_CHUNK_SIZE, path)
    stats.chunk_count = _whole_number(fields, KEY_CHUNK_COUNT, path)
    if KEY_DATASETS in fields:
        datasets = fields[KEY_DATASETS].contents()
        stats.datasets = [str(d) for d in datasets] if isinstance(datasets, list) else [str(datasets)]
    for name, sums in sorted(stats.sums.items()):
        if name not in counts:
            raise MythosError(f"{path}: {name} has sums but no counts: the file is damaged; recompute it")
        count = counts[name]
        if count == 0:
            raise MythosError(f"{path}: {name} has a zero token count: recompute the imatrix on more text")
        if not (math.isfinite(count) and count > 0):  # a token count: NaN, Inf or negative is damage
            raise MythosError(f"{path}: {name} has token count {count}: the file is damaged; recompute it")
        stats.counts[name] = round(count)
        if not np.isfinite(sums).all():
            raise MythosError(f"{path}: {name} holds NaN or Inf sums: recompute the imatrix (is the model finite?)")
        if (sums < 0).any():  # sums of squares
            raise MythosError(
                f"{path}: {name} holds negative sums of squares ({sums.min():g}): the file is damaged; recompute it"
            )
    if config is not None:
        check_matches(stats, config, path)
    return stats


def _whole_number(fields: dict, key: str, path: Path) -> int:
    """A header count (chunk size or count): 0 when absent, refused when not a whole number."""
    if key not in fields:
        return 0
    value = fields[key].contents()
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise MythosError(f"{path}: {key} is {value!r}, not a whole number: the file is damaged; recompute it")
    return value


def check_matches(stats: ImatrixStats, config: MythosConfig, where: str | Path) -> None:
    """Every entry names a matrix of this model with its input width, and every matrix has one."""
    widths = quantized_matrices(config)
    for name, sums in sorted(stats.sums.items()):
        if name not in widths:
            raise MythosError(
                f"{where} has an entry for {name}, which this model (n_layers={config.n_layers}) does not have: "
                "it was computed for another model; recompute it with `mythos-convert imatrix` on this one"
            )
        if sums.size != widths[name]:
            raise MythosError(
                f"{where} has {sums.size} columns for {name}, the model's rows have {widths[name]}: "
                "it was computed for another model; recompute it with `mythos-convert imatrix` on this one"
            )
    missing = sorted(set(widths) - set(stats.sums))
    if missing:
        raise MythosError(
            f"{where} has no entry for {missing[0]} ({len(missing)} missing): recompute it with `mythos-convert imatrix`"
        )
