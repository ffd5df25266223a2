"""llama.cpp's GGUF importance-matrix file: read, checked against a model, and written.

The format of `tools/imatrix/imatrix.cpp` (read by `common/imatrix-loader.cpp`, which
llama-quantize uses): `general.type = imatrix`, `imatrix.datasets`, `imatrix.chunk_count`,
`imatrix.chunk_size`, and per matrix two F32 tensors, `NAME.in_sum2` (the sum over tokens of each
input column's squared activation) and `NAME.counts` (the tokens). Reading divides sums by counts
in float32 as llama-quantize does, so both quantizers get the same weights from the same file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import gguf
import numpy as np

from mythos_convert.atomic import atomic_file
from mythos_convert.convert.gguf import gguf_shapes
from mythos_convert.errors import MythosError
from mythos_convert.model.config import MythosConfig
from mythos_convert.safe_paths import require_file

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
    for t in reader.tensors:
        data = np.asarray(t.data, dtype=np.float32).reshape(-1)
        if t.name.endswith(SUMS):
            stats.sums[t.name[: -len(SUMS)]] = data.astype(np.float64)
        elif t.name.endswith(COUNTS):
            stats.counts[t.name[: -len(COUNTS)]] = round(float(data[0])) if data.size else 0
    if not stats.sums:
        raise MythosError(f"{path} holds no importance matrix entries: make one with `mythos-convert imatrix`")
    fields = reader.fields
    if KEY_CHUNK_SIZE in fields:
        stats.chunk_size = int(fields[KEY_CHUNK_SIZE].contents())
    if KEY_CHUNK_COUNT in fields:
        stats.chunk_count = int(fields[KEY_CHUNK_COUNT].contents())
    if KEY_DATASETS in fields:
        stats.datasets = list(fields[KEY_DATASETS].contents())
    for name, sums in sorted(stats.sums.items()):
        if name not in stats.counts:
            raise MythosError(f"{path}: {name} has sums but no counts: the file is damaged; recompute it")
        if not stats.counts[name] > 0:
            raise MythosError(f"{path}: {name} has a zero token count: recompute the imatrix on more text")
        if not np.isfinite(sums).all():
            raise MythosError(f"{path}: {name} holds NaN or Inf sums: recompute the imatrix (is the model finite?)")
    if config is not None:
        check_matches(stats, config, path)
    return stats


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
