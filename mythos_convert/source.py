"""A model source: a native checkpoint, an HF folder or a GGUF file, read the same way.

Every writer (`hf`, `native`, `gguf`), verifier and evaluator starts from a `ModelSource`: its
config, where its tokenizer is, its provenance, and `tensors()`, a stream of checked tensors under
native names in one order. Opening a source runs the one check of `names.check_tensors` on the
stored shapes (nothing is read for it) and `names.check_tied` on a stored head, so a source that
opens is complete and consistent, whichever format it came from.

- native: `torch.load(mmap=True, weights_only=True)`, or without torch the restricted zip reader
  (`torch_zip`, tensors described as byte ranges) where nothing needs torch;
- HF folder: safetensors opened one tensor at a time (`hf_read`);
- DCP folder (`torch.distributed.checkpoint`): PyTorch's DCP reader, one tensor at a time (`formats/dcp`);
- GGUF: gguf-py's reader, every tensor dequantised to float32 and the q/k permutation undone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mythos_convert.data.tokenizer import TOKENIZER_FILE, load_tokenizer, resolve_tokenizer
from mythos_convert.errors import MythosError
from mythos_convert.formats.checkpoint import (
    MODEL_KEY,
    OPTIMIZER_KEY,
    NativeCheckpoint,
    checkpoint_from_data,
    load_checkpoint,
    tensor_of_array,
)
from mythos_convert.formats.dcp import is_dcp_checkpoint
from mythos_convert.formats.gguf_files import is_later_shard, shard_names, split_count
from mythos_convert.formats.hf_config import d_ff_for_width
from mythos_convert.formats.hf_folder import GENERATION_FILE, Provenance
from mythos_convert.formats.hf_read import HFSource, read_hf_folder
from mythos_convert.formats.permute import unpermute
from mythos_convert.formats.torch_zip import NotPlain, TensorRef, contains_tensor, read_torch_zip
from mythos_convert.model.config import MythosConfig, config_from_yaml
from mythos_convert.names import (
    CONFIG_KEYS,
    DERIVED,
    GGUF_ARCH,
    GGUF_OPTIONAL,
    HF_IGNORED,
    TIED_HEAD,
    check_tensors,
    check_tied,
    convert_name,
    native_shapes,
    transform_of,
)
from mythos_convert.support.safe_paths import inside, require_file
from mythos_convert.support.ui import track

if TYPE_CHECKING:  # torch is imported where a tensor is made: the torch-free reader must not pay for it
    import gguf
    import torch
    from tokenizers import Tokenizer


@dataclass
class ModelSource:
    """One model, wherever it is stored: what every writer, verifier and evaluator reads."""

    kind: str  # "native", "hf" or "gguf": the naming and layout of the stored tensors
    path: Path  # the checkpoint file, the HF folder or the (first) GGUF file
    config: MythosConfig
    stored: dict[str, str]  # native name -> stored name, checked, in export order (no head, no rope buffers)
    get: Callable[[str], Any] = field(repr=False)  # stored name -> tensor (torch, TensorRef or numpy)
    inputs: list[Path] = field(default_factory=list)  # every file read: no output may replace one
    provenance: Provenance | None = None  # mythos.json of an HF folder we wrote
    generation: dict[str, Any] = field(default_factory=dict)  # generation_config.json, if any
    checkpoint: NativeCheckpoint | None = None  # a native source's step, training facts, tokenizer
    hf: HFSource | None = None  # an HF source's folder reader (config.json, weight map)
    ggml_types: dict[str, str] = field(default_factory=dict)  # a GGUF source's stored type per tensor
    gguf_reader: Any = None  # a GGUF source's gguf.GGUFReader of its first file (its header: verify reads it)
    lazy: Mapping[str, Any] | None = field(default=None, repr=False)  # a DCP source's weights, read on demand

    @property
    def out_dir(self) -> Path:
        """Where outputs derived from this source go by default: the folder, or the file's folder."""
        return self.path if self.path.is_dir() else self.path.parent

    @property
    def run_folder(self) -> Path | None:
        """Where `train` left this model's run (its validation split): a checkpoint's folder, or the
        folder of the checkpoint an HF folder was exported from (its mythos.json); None for others."""
        if self.kind == "native":
            return self.path.parent
        return self.provenance.source_folder if self.provenance is not None else None

    def tensors(self) -> Iterator[tuple[str, Any]]:
        """(native name, tensor) in export order, one at a time; the tied head is not repeated."""
        for native, name in self.stored.items():
            yield native, self.get(name)

    def weights(self) -> dict[str, Any]:
        """Every exported tensor by native name (views or mappings: nothing is copied; a DCP source's
        are read when asked for, so the writer holds one at a time)."""
        return self.lazy if self.lazy is not None else dict(self.tensors())

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The reference model's state dict: float tensors, tied head sharing the embedding, rope buffers.

        The keys and order of `MythosModel.state_dict()`, so `load_state_dict(strict=True)` takes it.
        """
        import numpy as np

        from mythos_convert.model.layers import rope_tables

        cfg = self.config
        state: dict[str, torch.Tensor] = {}
        for native, tensor in track(self.tensors(), f"reading {self.kind} tensors", total=len(self.stored)):
            if isinstance(tensor, np.ndarray):
                tensor = tensor_of_array(tensor)
            elif isinstance(tensor, TensorRef):
                raise TypeError("a torch-free source has no tensors to load: open it with torch")
            state[native] = tensor
        state[TIED_HEAD["native"]] = state["embedding.weight"]  # one storage, two names, as the model saves it
        state["rope_cos"], state["rope_sin"] = rope_tables(cfg.head_dim, cfg.max_seq_len, cfg.rope_theta)
        return {name: state[name] for name in native_shapes(cfg)}

    def as_checkpoint(self) -> NativeCheckpoint:
        """The source as a native checkpoint in memory (for `load_model`, which runs it)."""
        if self.checkpoint is not None:
            return self.checkpoint
        return NativeCheckpoint(config=self.config, state_dict=self.state_dict(), path=self.path)

    @property
    def has_tokenizer(self) -> bool:
        """Does the source hold its own tokenizer (beside it, or embedded in a checkpoint)?"""
        if self.checkpoint is not None and self.checkpoint.tokenizer_json:
            return True
        return (self.out_dir / TOKENIZER_FILE).is_file()

    def tokenizer(self, explicit: str | Path | None = None) -> tuple[Tokenizer, str]:
        """The model's tokenizer and where it came from: `explicit`, else the source's own.

        Raises:
            MythosError: none found, naming where it was looked for and how to give one.
        """
        if self.checkpoint is not None:
            return resolve_tokenizer(self.checkpoint, explicit)
        if explicit is not None:
            return load_tokenizer(explicit), str(explicit)
        beside = inside(self.out_dir, TOKENIZER_FILE)
        if beside.is_file():
            return load_tokenizer(beside), str(beside)
        raise MythosError(f"{self.out_dir} has no tokenizer.json: pass --tokenizer PATH/tokenizer.json")


def _checked_native(ckpt: NativeCheckpoint) -> dict[str, str]:
    """The one check on a checkpoint's tensors; a stored head must be the embedding."""
    state = ckpt.state_dict
    stored = check_tensors({n: t.shape for n, t in state.items()}, ckpt.config, "native", what="checkpoint")
    head = state.get(TIED_HEAD["native"])
    if head is not None:
        check_tied(head, state["embedding.weight"], "native")
    return stored


def open_native(
    path: str | Path, config_yaml: str | Path | None = None, *, recorded_config: dict[str, Any] | None = None
) -> ModelSource:
    """A native checkpoint, memory-mapped through torch (tensors are views of the file's pages).

    `recorded_config`: the config an export recorded for it (mythos.json), for a file saved without one.

    Raises:
        MythosError: see `load_checkpoint` and `names.check_tensors`.
    """
    if is_dcp_checkpoint(path):
        return open_dcp(path, config_yaml)
    ckpt = load_checkpoint(path, config_yaml, recorded_config=recorded_config)
    return _native_source(ckpt)


def open_dcp(folder: str | Path, config_yaml: str | Path | None = None) -> ModelSource:
    """A distributed checkpoint folder (`formats/dcp`): checked from its index, each tensor read when asked.

    Raises:
        MythosError: see `formats.dcp.read_dcp` and `names.check_tensors`.
    """
    from mythos_convert.formats.dcp import read_dcp  # torch.distributed: only for such a folder

    config = config_from_yaml(config_yaml) if config_yaml is not None else None
    ckpt, tensors, _, inputs = read_dcp(folder, config)
    stored = check_tensors(tensors.shapes, ckpt.config, "native", what=str(ckpt.path))
    if TIED_HEAD["native"] in tensors:
        check_tied(tensors[TIED_HEAD["native"]], tensors["embedding.weight"], "native")
    assert ckpt.path is not None
    lazy = tensors.only(list(stored))
    return ModelSource(
        "native", ckpt.path, ckpt.config, stored, tensors.__getitem__, inputs, checkpoint=ckpt, lazy=lazy
    )


def _native_source(ckpt: NativeCheckpoint) -> ModelSource:
    assert ckpt.path is not None
    stored = _checked_native(ckpt)
    return ModelSource(
        "native", ckpt.path, ckpt.config, stored, ckpt.state_dict.__getitem__, [ckpt.path], checkpoint=ckpt
    )


def open_native_without_torch(path: str | Path, config_yaml: str | Path | None = None) -> ModelSource | None:
    """A native checkpoint read by the restricted zip reader: tensors as `TensorRef` byte ranges.

    None where torch must read it: not a plain torch zip, tensors outside the model and optimizer
    state, or a head stored apart from the embedding (comparing them needs the values). Every
    refusal of a bad checkpoint is the torch path's own (the same `checkpoint_from_data` and
    `check_tensors`), raised here as there.
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        data = read_torch_zip(path)
    except NotPlain:
        return None
    if not isinstance(data, dict) or any(
        contains_tensor(v) for k, v in data.items() if k not in (MODEL_KEY, OPTIMIZER_KEY)
    ):
        return None
    ckpt = checkpoint_from_data(data, path, config_yaml, lambda value: isinstance(value, TensorRef))
    state = ckpt.state_dict
    head = state.get(TIED_HEAD["native"])
    if head is not None and head != state.get("embedding.weight"):
        return None  # a separate head: torch compares its values with the embedding's
    return _native_source(ckpt)


def open_hf(folder: str | Path, *, arrays: bool = False) -> ModelSource:
    """An HF Llama folder: shapes from the safetensors headers, tensors opened one at a time.

    `arrays`: tensors as numpy views of the mapped files (`HFSource.get_array`), no torch import
    (the GGUF writer's way); else torch tensors.

    Raises:
        MythosError: see `read_hf_folder` and `names.check_tensors`; an lm_head that is not the embedding.
    """
    src = read_hf_folder(folder)
    shapes = {n: shape for n, shape in src.shapes().items() if not HF_IGNORED.search(n)}
    stored = check_tensors(shapes, src.config, "hf", what=str(src.folder))
    get = src.get_array if arrays else src.get_tensor
    head = TIED_HEAD["hf"]
    if head in shapes:
        check_tied(get(head), get(stored["embedding.weight"]), "hf")
    generation: dict[str, Any] = {}
    if (src.folder / GENERATION_FILE).is_file():
        generation = src.read_json(GENERATION_FILE, "generation config")
    return ModelSource(
        "hf",
        src.folder,
        src.config,
        stored,
        get,
        src.files(),
        provenance=src.provenance,
        generation=generation,
        hf=src,
    )


def gguf_config(reader: Any, path: Path) -> MythosConfig:
    """The Mythos config a GGUF file's `llama.*` header describes (1e-5 read back as 1e-5, not 9.99e-6).

    Raises:
        MythosError: not a llama file, or a key missing (naming it).
    """
    import gguf
    import numpy as np  # with gguf-py, which holds the reader: the torch-free HF path needs neither

    arch = reader.get_field(gguf.Keys.General.ARCHITECTURE)
    if arch is None or arch.contents() != GGUF_ARCH:
        got = arch.contents() if arch is not None else None
        raise MythosError(f"{path} is a {got!r} GGUF, not {GGUF_ARCH}: pass a GGUF written by `mythos-convert gguf`")
    values: dict[str, Any] = {}
    for row in (row for row in CONFIG_KEYS if row.role != DERIVED):  # head_dim is d_model / n_heads
        key = row.gguf_keys()[0]
        entry = reader.get_field(key)
        if entry is not None:
            number = _header_number(entry.contents(), key, path)
            # floats are stored as float32: back to the shortest decimal that rounds to it
            values[row.field] = float(str(np.float32(number))) if row.kind is float else int(number)
        elif row.field not in GGUF_OPTIONAL:
            raise MythosError(f"{path} has no {key} in its header: re-convert the GGUF file")
    values["d_ff"] = d_ff_for_width(values.pop("ffn_dim"))
    embed_name = convert_name("embedding.weight", "native", "gguf")
    embed = next((t for t in reader.tensors if t.name == embed_name), None)
    if "vocab_size" not in values and embed is not None:
        values["vocab_size"] = int(embed.shape[-1])
    return MythosConfig.from_dict(values)


def _header_number(value: Any, key: str, path: Path) -> int | float:
    """A GGUF header value that must be a number (a string there would end as int()'s ValueError)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MythosError(f"{path} has {key} = {value!r} in its header, not a number: re-convert the GGUF file")
    return value


def gguf_readers(path: Path, first: gguf.GGUFReader | None = None) -> list[gguf.GGUFReader]:
    """gguf-py's reader on a GGUF file and on each further shard of a split one: the one place GGUF
    files are opened. gguf-py's own exceptions (ValueError, KeyError, struct errors...) pass through,
    for the caller to name the file in its own words."""
    import gguf

    first = first if first is not None else gguf.GGUFReader(path)
    names = shard_names(path.name, split_count(first))
    return [first] + [gguf.GGUFReader(path.parent / n) for n in names[1:]]


def open_gguf(
    path: str | Path, config: MythosConfig | None = None, *, first: gguf.GGUFReader | None = None
) -> ModelSource:
    """A GGUF file (every shard of a split one), each tensor dequantised to float32 by gguf-py and
    llama.cpp's q/k permutation undone, so it compares with any other source tensor for tensor.

    `config` overrides the header's (verify compares a file with the config it should have);
    `first` is `path`'s gguf.GGUFReader when the caller has one (verify reads each header once).

    Raises:
        MythosError: not a readable GGUF, or tensors that do not fit the config (named in GGUF naming).
    """
    import gguf
    import numpy as np

    path = Path(path)
    try:
        readers = gguf_readers(path, first)
    except Exception as exc:  # gguf-py raises ValueError, KeyError, struct errors... on a torn or foreign file
        raise MythosError(
            f"{path} is not a readable GGUF file ({type(exc).__name__}: {str(exc)[:120]}): "
            "re-convert it with `mythos-convert gguf` (or pass a .gguf written by llama.cpp)"
        ) from exc
    first = readers[0]
    files = [path.parent / n for n in shard_names(path.name, len(readers))]
    cfg = config or gguf_config(first, path)
    by_name = {t.name: t for reader in readers for t in reader.tensors}
    shapes = {name: tuple(int(d) for d in reversed(t.shape.tolist())) for name, t in by_name.items()}
    stored = check_tensors(shapes, cfg, "gguf", what=str(path))

    def dequantised(name: str) -> np.ndarray:
        t = by_name[name]
        array = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).reshape(shapes[name]).astype(np.float32)
        kind = transform_of(name, "gguf")
        return unpermute(array, kind, cfg) if kind is not None else array

    if TIED_HEAD["gguf"] in shapes:
        check_tied(dequantised(TIED_HEAD["gguf"]), dequantised(stored["embedding.weight"]), "gguf")
    types = {name: t.tensor_type.name for name, t in by_name.items()}
    return ModelSource("gguf", path, cfg, stored, dequantised, files, ggml_types=types, gguf_reader=first)


def gguf_problems(folder: str | Path) -> list[str]:
    """One line per GGUF file of `folder` that `open_gguf` refuses (torn, foreign, tensors missing):
    the card does not advertise such a file, and push does not publish it."""
    problems = []
    for path in sorted(Path(folder).glob("*.gguf")):
        if path.is_file() and not is_later_shard(path.name):
            try:
                open_gguf(path)
            except MythosError as exc:
                problems.append(str(exc))
    return problems


def open_source(
    path: str | Path,
    *,
    config_yaml: str | Path | None = None,
    gguf_as: MythosConfig | None = None,
    arrays: bool = False,
) -> ModelSource:
    """A native checkpoint (a file), an HF folder (a folder) or a GGUF file (`.gguf`), opened and checked.

    `config_yaml` is a native checkpoint's config, `gguf_as` the config to read a GGUF with,
    `arrays` reads an HF folder's tensors as numpy (see `open_hf`).
    """
    path = Path(path)
    if is_dcp_checkpoint(path):
        return open_dcp(path, config_yaml)
    if path.is_dir():
        return open_hf(path, arrays=arrays)
    if path.suffix == ".gguf" and path.is_file():
        return open_gguf(path, gguf_as)
    if path.suffix == ".gguf" and path.exists():
        require_file(path, "GGUF file", "pass a .gguf file written by `mythos-convert gguf`")  # a pipe, a device...
    if path.exists():  # a regular file, or something else its reader names (a named pipe, a device)
        return open_native(path, config_yaml)
    raise MythosError(f"{path} does not exist: pass an HF folder written by `mythos-convert hf`, a ckpt.pt or a .gguf")
