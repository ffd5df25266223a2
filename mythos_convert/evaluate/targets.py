"""What `eval` measures: its targets, each opened through `source.open_source`, and what they must share.

A path given to `eval` is a native checkpoint, a `.gguf` file, or a folder, which means its HF
model (when it holds config.json) plus every GGUF file in it and the MLX folders `mythos-convert
mlx` wrote beside it (`mlx-4bit/`, `mlx-8bit/`); an MLX folder may also be given alone. Every
other target is a `ModelSource`, so it is opened and checked (tensors against its config) as
every other command opens it; an MLX folder is read by `mlx.folder` and run by mlx-lm. The
targets must then agree on the tokenizer's vocabulary and on a context they all have.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from mythos_convert.data.tokenizer import TOKENIZER_FILE, load_tokenizer
from mythos_convert.errors import MythosError
from mythos_convert.evaluate.record import GGUFHeader, read_gguf_header
from mythos_convert.formats.dcp import is_dcp_checkpoint
from mythos_convert.formats.gguf_files import is_later_shard
from mythos_convert.formats.hf_folder import CONFIG_FILE
from mythos_convert.mlx.folder import MLXFolder, is_mlx_folder, mlx_subfolders, read_mlx_folder
from mythos_convert.model.config import MythosConfig
from mythos_convert.source import ModelSource, open_source
from mythos_convert.support.safe_paths import require_file

DEFAULT_CTX = 512  # llama-perplexity's default context


@dataclass
class Target:
    """One thing to evaluate, as resolved from the command line."""

    kind: str  # "native", "hf", "gguf" or "mlx"
    path: Path
    key: str  # recorded under: "hf", the GGUF file name, "mlx-4bit/", the checkpoint's file name
    shown: str  # as the table names it
    source: ModelSource | None  # None for an MLX folder (mlx-lm opens it)
    header: GGUFHeader | None = None  # a GGUF file's type, context, vocabulary and sizes
    files: dict[str, dict[str, Any]] = field(default_factory=dict)  # bound files (hf/gguf/mlx)
    mlx: MLXFolder | None = None  # an MLX folder's width, config and files
    found: bool = False  # an MLX folder found beside an HF export (skipped without mlx-lm), not given

    @property
    def folder(self) -> Path | None:
        """The folder whose eval.json records this target (None for a checkpoint)."""
        return None if self.kind == "native" else (self.path if self.kind == "hf" else self.path.parent)

    @property
    def config(self) -> MythosConfig:
        return self.mlx.config if self.mlx is not None else self.source.config

    @property
    def context(self) -> int:
        if self.header is not None:
            return self.header.context
        return int(self.config.max_seq_len)

    @property
    def size(self) -> int:
        if self.mlx is not None:
            return self.mlx.size
        if self.header is not None:
            return sum((self.path.parent / n).stat().st_size for n in self.header.shards)
        if self.kind == "hf":
            return sum(f["size"] for n, f in self.files.items() if n.endswith(".safetensors"))
        return sum(p.stat().st_size for p in self.source.inputs)  # a ckpt.pt, or a DCP folder's files


def _target(kind: str, path: Path, config_yaml: str | Path | None) -> Target:
    """`path` opened (and checked) as a source of its kind."""
    if kind in ("mlx", "mlx-found"):
        mlx = read_mlx_folder(path)
        return Target("mlx", path, f"{path.name}/", f"{path}/", None, mlx=mlx, found=kind == "mlx-found")
    source = open_source(path, config_yaml=config_yaml)  # refuses a torn file, or one lacking tensors
    if kind == "gguf":
        return Target(kind, path, path.name, str(path), source, header=read_gguf_header(path))
    if kind == "hf":
        return Target(kind, path, "hf", f"{path}/", source)
    return Target(kind, path, path.name, str(path), source)


def _kinds(path: Path) -> list[tuple[str, Path]]:
    """What one path given to `eval` stands for: (kind, path) of each target in it."""
    if is_dcp_checkpoint(path):  # a distributed checkpoint folder is one native model
        return [("native", path)]
    if not path.is_dir():
        require_file(path, "TARGET", "pass a checkpoint, an HF folder or a .gguf file")
        return [("gguf" if path.suffix == ".gguf" else "native", path)]
    if is_mlx_folder(path):
        return [("mlx", path)]
    ggufs = sorted(p for p in path.glob("*.gguf") if p.is_file() and not is_later_shard(p.name))
    has_model = (path / CONFIG_FILE).is_file()
    mlx = [("mlx-found", p) for p in mlx_subfolders(path)] if has_model else []
    if not has_model and not ggufs:
        raise MythosError(
            f"{path} holds neither an HF model (config.json) nor .gguf files: pass the folder "
            "`mythos-convert hf` wrote, GGUF files or a checkpoint"
        )
    return [("hf", path)] * has_model + [("gguf", p) for p in ggufs] + mlx


def resolve_targets(paths: list[str | Path], config_yaml: str | Path | None = None) -> list[Target]:
    """Targets from paths, each opened once: a folder means its HF model (if it has config.json) plus every GGUF in it.

    Raises:
        MythosError: a missing path, a folder with no model in it, no targets at all, a source
            that does not open (see `open_source`).
    """
    if not paths:
        raise MythosError("no TARGET given: pass a checkpoint, an HF folder or GGUF files, e.g. `eval out/`")
    targets: list[Target] = []
    seen: set[Path] = set()
    for raw in paths:
        for kind, path in _kinds(Path(raw)):
            if path.resolve() not in seen:
                seen.add(path.resolve())
                targets.append(_target(kind, path, config_yaml))
    return targets


def reference_folder(targets: list[Target]) -> Path | None:
    """The HF folder a GGUF file or MLX folder sits in, whose weights are the float32 reference without a checkpoint."""
    beside = (t.folder for t in targets if t.kind in ("gguf", "mlx") and t.folder is not None)
    return next((f for f in beside if (f / CONFIG_FILE).is_file() and not is_mlx_folder(f)), None)


def pick_tokenizer(targets: list[Target], explicit: str | Path | None) -> Tokenizer:
    """--tokenizer, else the first target that holds one: a checkpoint's (beside it or embedded
    in it), then a folder's tokenizer.json (an HF export, the folder a GGUF file sits in, an MLX folder)."""
    if explicit is not None:
        return load_tokenizer(explicit)
    for t in sorted(targets, key=lambda t: t.kind != "native"):
        if t.source is not None and t.source.has_tokenizer:
            return t.source.tokenizer()[0]
        if t.mlx is not None and (t.path / TOKENIZER_FILE).is_file():  # mlx-lm copies the export's
            return load_tokenizer(t.path / TOKENIZER_FILE)
    raise MythosError(
        "no tokenizer for the evaluation text: pass --tokenizer with the tokenizer.json the model was trained with"
    )


def run_folder(targets: list[Target]) -> Path | None:
    """Where `train` left the validation split: beside the checkpoint (or the one an HF folder came from)."""
    for t in sorted(targets, key=lambda t: t.kind != "native"):
        if t.kind in ("native", "hf") and t.source.run_folder is not None:
            return t.source.run_folder
    return None


def _vocab_problem(what: str, tokens: list[str], vocab: dict[str, int], n_rows: int) -> str | None:
    """Why `tokens` (a GGUF's, by id) is not the reference tokenizer's vocabulary (None: it is)."""
    if len(tokens) != n_rows:
        return f"{what} has {len(tokens)} tokens, the reference {n_rows}"
    for token, token_id in sorted(vocab.items(), key=lambda kv: kv[1]):
        if token_id >= len(tokens) or tokens[token_id] != token:
            theirs = tokens[token_id] if token_id < len(tokens) else "nothing"
            return f"{what} has {theirs!r} at id {token_id} where the reference has {token!r}"
    return None


def _target_vocab_problem(t: Target, vocab: dict[str, int], n_rows: int) -> str | None:
    if t.header is not None:
        return _vocab_problem(t.path.name, t.header.tokens, vocab, n_rows)
    if t.config.vocab_size != n_rows:
        return f"{t.shown} has {t.config.vocab_size} vocabulary rows, the reference {n_rows}"
    if t.mlx is not None:
        own = t.path / TOKENIZER_FILE if (t.path / TOKENIZER_FILE).is_file() else None
    else:
        own = t.source.hf.tokenizer_path if t.source.hf is not None else None
    if own is not None and load_tokenizer(own).get_vocab(with_added_tokens=True) != vocab:
        return f"{t.shown}tokenizer.json has another vocabulary than the reference tokenizer"
    return None


def check_vocabularies(targets: list[Target], tok: Tokenizer, n_rows: int) -> None:
    """All targets must number the same tokens alike: their token ids are the same text, or nothing compares."""
    vocab = tok.get_vocab(with_added_tokens=True)
    for t in targets:
        problem = _target_vocab_problem(t, vocab, n_rows)
        if problem:
            raise MythosError(
                f"vocabulary mismatch: {problem}; the same ids would be other text, so neither perplexity nor "
                "KL divergence compares: evaluate each model with the tokenizer and reference it was made from"
            )


def pick_context(targets: list[Target], ctx: int | None) -> int:
    """--ctx, else llama-perplexity's 512; never above the smallest context among the targets."""
    smallest = min(targets, key=lambda t: t.context)
    if ctx is None:
        return min(DEFAULT_CTX, smallest.context)
    if ctx < 2:
        raise MythosError(f"--ctx {ctx} is too small: pass at least 2 (llama-perplexity uses 512)")
    if ctx > smallest.context:
        raise MythosError(
            f"--ctx {ctx} is above the model's context of {smallest.context} tokens ({smallest.shown}): "
            f"pass --ctx {smallest.context} or less"
        )
    return ctx
