"""Mythos model configuration: the reference's field names and defaults, plus YAML presets.

A preset YAML has a `model:` mapping of these fields and a `training:` mapping of `TrainingConfig`
fields, the layout the reference implementation's config files use.
"""

from __future__ import annotations

import dataclasses
import math
import reprlib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from mythos_convert.errors import MythosError
from mythos_convert.support.safe_paths import require_file

PRESET_NAMES = ("tiny", "mythos-172m", "mythos-500m", "mythos-1b")
# The largest value each size field may take: far beyond any released model (vocabularies reach
# ~256k, contexts 1M), so only a damaged or hostile config hits them.
LIMITS = {
    "vocab_size": 1 << 22,
    "d_model": 1 << 16,
    "n_layers": 1 << 10,
    "n_heads": 1 << 10,
    "n_kv_heads": 1 << 10,
    "d_ff": 1 << 20,
    "max_seq_len": 1 << 21,
}
# What a YAML file may expand to (aliases counted each time they are used): real configs and
# card metadata hold a few hundred values; an alias bomb (billion laughs) holds billions.
YAML_MAX_NODES = 100_000
YAML_MAX_DEPTH = 50


def short_repr(value: Any, limit: int = 60) -> str:
    """repr() cut to `limit` characters, so a huge or deeply nested bad value fits an error line."""
    short = reprlib.Repr()
    short.maxlevel, short.maxstring, short.maxother = 3, limit, limit
    text = short.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class MythosConfig:
    """Architecture of a Mythos decoder. Defaults are the reference implementation's."""

    vocab_size: int = 32000  # rows of the (tied) embedding
    d_model: int = 1024  # hidden size
    n_layers: int = 40
    n_heads: int = 16  # query heads; head_dim = d_model // n_heads
    n_kv_heads: int = 8  # key/value heads (GQA); must divide n_heads
    d_ff: int = 4096  # NOT the SwiGLU width: see `ffn_dim`
    max_seq_len: int = 2048  # RoPE table length and context limit
    dropout: float = 0.0
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def ffn_dim(self) -> int:
        """The real SwiGLU width: 2/3 of d_ff rounded up to a multiple of 256 (reference rule)."""
        return ffn_width(self.d_ff)

    def validate(self) -> MythosConfig:
        """Raise MythosError naming the first wrong field and its fix; return self for chaining.

        Runs before anything is built from the config: a size past `LIMITS` would allocate
        terabytes (the model, the RoPE tables) before any other check could fail.
        """
        for name, limit in LIMITS.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise MythosError(
                    f"config field {name} must be a positive integer, got {short_repr(value)}: fix {name} in the config"
                )
            if value > limit:
                raise MythosError(
                    f"config field {name}={value} is larger than {limit:,}, the most any real model needs: "
                    f"the config is damaged; fix {name} in the config"
                )
        for name in ("dropout", "norm_eps", "rope_theta"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise MythosError(
                    f"config field {name} must be a finite number, got {short_repr(value)}: fix {name} in the config"
                )
        if self.d_model % self.n_heads:
            raise MythosError(
                f"config d_model={self.d_model} is not divisible by n_heads={self.n_heads}: "
                "choose n_heads that divides d_model"
            )
        if self.n_heads % self.n_kv_heads:
            raise MythosError(
                f"config n_heads={self.n_heads} is not divisible by n_kv_heads={self.n_kv_heads}: "
                "choose n_kv_heads that divides n_heads"
            )
        if self.head_dim % 2:
            raise MythosError(f"head_dim={self.head_dim} must be even for RoPE: change d_model or n_heads")
        if not (0.0 <= self.dropout < 1.0):
            raise MythosError(f"config dropout must be in [0, 1), got {self.dropout}: set dropout to e.g. 0.0")
        if self.norm_eps <= 0 or self.rope_theta <= 0:
            raise MythosError(
                f"config norm_eps ({self.norm_eps}) and rope_theta ({self.rope_theta}) must be positive: "
                "fix them in the config (e.g. 1e-5 and 10000.0)"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MythosConfig:
        """Build from a dict, ignoring unknown fields (as the reference loader does)."""
        if not isinstance(data, dict):
            raise MythosError(
                f"model config must be a mapping of fields, got {type(data).__name__}: "
                "write `model:` as `field: value` lines"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        for name in ("dropout", "norm_eps", "rope_theta"):
            if name in kwargs and isinstance(kwargs[name], (int, str)) and not isinstance(kwargs[name], bool):
                try:
                    kwargs[name] = float(kwargs[name])
                except ValueError as exc:
                    raise MythosError(
                        f"config field {name} must be a number, got {short_repr(kwargs[name])}: "
                        f"fix {name} in the config"
                    ) from exc
        return cls(**kwargs).validate()

    def num_parameters(self, *, include_embedding: bool = True) -> int:
        """Count of the real tensors' elements (tied output counted once, GQA counted right)."""
        hd, kv = self.head_dim, self.n_kv_heads
        attn = self.d_model * self.n_heads * hd * 2 + self.d_model * kv * hd * 2
        ffn = 3 * self.d_model * self.ffn_dim
        per_layer = attn + ffn + 2 * self.d_model
        total = self.n_layers * per_layer + self.d_model
        return total + (self.vocab_size * self.d_model if include_embedding else 0)


def ffn_width(d_ff: int) -> int:
    """The reference's SwiGLU width rule: `256 * ceil(int(2 * d_ff / 3) / 256)`."""
    return 256 * math.ceil(int(2 * d_ff / 3) / 256)


@dataclass
class TrainingConfig:
    """Optimisation settings of a preset's `training:` mapping."""

    batch_size: int = 8
    gradient_accumulation_steps: int = 1
    seq_len: int = 256
    learning_rate: float = 3e-4
    min_lr: float = 3e-5  # floor of the cosine decay
    warmup_steps: int = 100
    max_steps: int = 1000
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    bf16: bool = True  # autocast to bfloat16 where the device supports it
    eval_interval: int = 100
    eval_steps: int = 10
    save_interval: int = 500
    log_interval: int = 10
    seed: int = 1337

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> TrainingConfig:
        data = data or {}
        if not isinstance(data, dict):
            raise MythosError(
                f"`training:` must be a mapping of fields, got {type(data).__name__}: write it as `field: value` lines"
            )
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise MythosError(
                f"unknown training field(s) {short_repr(unknown)}: remove or rename them; known: {sorted(known)}"
            )
        out = cls()
        for key, value in data.items():
            default = getattr(out, key)
            try:
                setattr(out, key, type(default)(value))
            except (TypeError, ValueError) as exc:
                raise MythosError(
                    f"training field {key} must be {type(default).__name__}, got {short_repr(value)}: "
                    f"fix {key} under `training:`"
                ) from exc
        return out

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Preset:
    """A named model + training configuration loaded from YAML."""

    name: str
    model: MythosConfig
    training: TrainingConfig = field(default_factory=TrainingConfig)


def _preset_text(name: str) -> str:
    return resources.files("mythos_convert.model").joinpath("presets", f"{name}.yaml").read_text()


def bounded_yaml_load(text: str, what: str) -> Any:
    """yaml.safe_load, refusing a document that expands past YAML_MAX_NODES values or YAML_MAX_DEPTH levels.

    The node graph is counted before anything is constructed, each alias as often as it is used,
    so an alias bomb is refused in milliseconds instead of exhausting memory when walked later.
    Raises yaml.YAMLError for bad syntax (the caller words it) and MythosError for a bomb.
    """
    loader = yaml.SafeLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except RecursionError as exc:
            raise MythosError(f"{what} nests deeper than Python can read: flatten the file") from exc
        if node is None:
            return None
        _check_yaml_size(node, what)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _check_yaml_size(root: yaml.Node, what: str) -> None:
    stack, count = [(root, 1)], 0
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > YAML_MAX_NODES or depth > YAML_MAX_DEPTH:
            raise MythosError(
                f"{what} expands to more than {YAML_MAX_NODES:,} values or {YAML_MAX_DEPTH} levels "
                "(YAML aliases repeating themselves?): write the values out plainly"
            )
        if isinstance(node, yaml.SequenceNode):
            stack.extend((child, depth + 1) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            stack.extend((child, depth + 1) for pair in node.value for child in pair)


def load_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """Read a YAML file that must hold a mapping; errors name the file."""
    path = Path(path)
    require_file(path, "config file", "pass the path of a YAML file")
    try:
        data = bounded_yaml_load(path.read_text(), f"config file {path}")
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise MythosError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}; fix the file") from exc
    if not isinstance(data, dict):
        raise MythosError(
            f"config file {path} must hold a mapping with a `model:` section: see mythos_convert/model/presets/tiny.yaml"
        )
    return data


def load_preset(name_or_path: str | Path) -> Preset:
    """Load a built-in preset by name, or a preset YAML file by path.

    Raises:
        MythosError: unknown name (listing the known ones), unreadable file, bad fields.
    """
    text_name = str(name_or_path)
    if text_name in PRESET_NAMES:
        data = yaml.safe_load(_preset_text(text_name))
        name = text_name
    elif text_name.endswith((".yaml", ".yml")) or Path(text_name).exists():
        data = load_yaml_mapping(text_name)
        name = Path(text_name).stem
    else:
        raise MythosError(f"{text_name!r} is not a known preset; use one of {', '.join(PRESET_NAMES)} or a YAML file")
    if "model" not in data:
        raise MythosError(
            f"preset {name} has no `model:` mapping: add one, as in mythos_convert/model/presets/tiny.yaml"
        )
    return Preset(name, MythosConfig.from_dict(data["model"]), TrainingConfig.from_dict(data.get("training")))


def config_from_yaml(path: str | Path) -> MythosConfig:
    """The `model:` mapping of a YAML file (for checkpoints saved without an embedded config)."""
    data = load_yaml_mapping(path)
    if "model" not in data:
        raise MythosError(f"config file {path} has no top-level `model:` mapping: put the model fields under `model:`")
    return MythosConfig.from_dict(data["model"])
