"""Mythos model configuration: the reference's field names and defaults, plus YAML presets.

A preset YAML has a `model:` mapping of these fields and a `training:` mapping of `TrainingConfig`
fields, the layout the reference implementation's config files use.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from mythos_convert.errors import MythosError

PRESET_NAMES = ("tiny", "mythos-172m", "mythos-500m")


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
        """Raise MythosError naming the first inconsistent field; return self for chaining."""
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "d_ff", "max_seq_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise MythosError(f"config field {name} must be a positive integer, got {value!r}")
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
            raise MythosError(f"config dropout must be in [0, 1), got {self.dropout}")
        if self.norm_eps <= 0 or self.rope_theta <= 0:
            raise MythosError("config norm_eps and rope_theta must be positive")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MythosConfig:
        """Build from a dict, ignoring unknown fields (as the reference loader does)."""
        if not isinstance(data, dict):
            raise MythosError(f"model config must be a mapping, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        for name in ("dropout", "norm_eps", "rope_theta"):
            if name in kwargs and isinstance(kwargs[name], (int, str)) and not isinstance(kwargs[name], bool):
                try:
                    kwargs[name] = float(kwargs[name])
                except ValueError as exc:
                    raise MythosError(f"config field {name} must be a number, got {kwargs[name]!r}") from exc
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
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise MythosError(f"unknown training field(s) {unknown}; known: {sorted(known)}")
        out = cls()
        for key, value in data.items():
            default = getattr(out, key)
            try:
                setattr(out, key, type(default)(value))
            except (TypeError, ValueError) as exc:
                raise MythosError(f"training field {key} must be {type(default).__name__}, got {value!r}") from exc
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


def load_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """Read a YAML file that must hold a mapping; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise MythosError(f"config file {path} does not exist: pass the path of a YAML file")
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise MythosError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    if not isinstance(data, dict):
        raise MythosError(f"config file {path} must hold a mapping with a `model:` section")
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
        raise MythosError(f"preset {name} has no `model:` mapping")
    return Preset(name, MythosConfig.from_dict(data["model"]), TrainingConfig.from_dict(data.get("training")))


def config_from_yaml(path: str | Path) -> MythosConfig:
    """The `model:` mapping of a YAML file (for checkpoints saved without an embedded config)."""
    data = load_yaml_mapping(path)
    if "model" not in data:
        raise MythosError(f"config file {path} has no top-level `model:` mapping")
    return MythosConfig.from_dict(data["model"])
