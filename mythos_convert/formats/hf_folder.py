"""An HF folder written by `mythos-convert hf`: its file names, and `mythos.json` as a typed record.

`mythos.json` is published with the model: what the card says of its training, and what `native`
needs to give back the exact checkpoint (the native config with its d_ff, step, the tokenizer's
training post-processor). `.mythos-local.json` holds the absolute local paths `verify` and `eval`
default to; it is hidden, so `push` never publishes a user's directory layout.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONFIG_FILE = "config.json"
GENERATION_FILE = "generation_config.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_FILE = "special_tokens_map.json"
META_FILE = "mythos.json"
LOCAL_FILE = ".mythos-local.json"
META_FORMAT_VERSION = 1


def _dict(value: Any) -> dict[str, Any] | None:
    return dict(value) if isinstance(value, dict) else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


@dataclass(frozen=True)
class Provenance:
    """What `mythos.json` (and, locally, `.mythos-local.json`) records of an export.

    Read tolerantly: a field of the wrong type in a hand-edited or foreign file reads as absent,
    and each reader decides what absence means.
    """

    native_config: dict[str, Any] | None = None  # MythosConfig.to_dict() of the checkpoint (its own d_ff)
    step: int | None = None  # the training step of the checkpoint (None: not recorded)
    training: dict[str, Any] = field(default_factory=dict)  # the trainer's facts, for the card
    source_checkpoint: str | None = None  # the checkpoint's file name (never a path: it is published)
    tokenizer_source: str | None = None  # where the tokenizer came from (a name, or "embedded ...")
    native_post_processor: dict[str, Any] | None = None  # the training post-processor `native` restores
    has_post_processor: bool = False  # whether mythos.json recorded one (it may be null)
    dtype: str | None = None
    mythos_convert_version: str | None = None
    format_version: int = META_FORMAT_VERSION
    # .mythos-local.json (never published)
    source_checkpoint_path: str | None = None
    tokenizer_source_path: str | None = None

    def published(self) -> dict[str, Any]:
        """mythos.json's content, in its fixed key order."""
        return {
            "format_version": self.format_version,
            "native_config": self.native_config,
            "step": self.step,
            "training": self.training,
            "source_checkpoint": self.source_checkpoint,
            "tokenizer_source": self.tokenizer_source,
            "native_post_processor": self.native_post_processor,
            "dtype": self.dtype,
            "mythos_convert_version": self.mythos_convert_version,
        }

    def local(self) -> dict[str, Any]:
        """.mythos-local.json's content."""
        return {
            "source_checkpoint_path": self.source_checkpoint_path,
            "tokenizer_source_path": self.tokenizer_source_path,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Provenance:
        """mythos.json merged with .mythos-local.json, as `hf_read` reads them."""
        step = data.get("step")
        version = data.get("format_version")
        return cls(
            native_config=_dict(data.get("native_config")),
            step=int(step) if isinstance(step, (int, float)) and not isinstance(step, bool) else None,
            training=_dict(data.get("training")) or {},
            source_checkpoint=_str(data.get("source_checkpoint")),
            tokenizer_source=_str(data.get("tokenizer_source")),
            native_post_processor=_dict(data.get("native_post_processor")),
            has_post_processor="native_post_processor" in data,
            dtype=_str(data.get("dtype")),
            mythos_convert_version=_str(data.get("mythos_convert_version")),
            format_version=version if isinstance(version, int) else 0,
            source_checkpoint_path=_str(data.get("source_checkpoint_path")),
            tokenizer_source_path=_str(data.get("tokenizer_source_path")),
        )

    @property
    def source_folder(self) -> Path | None:
        """The folder of the checkpoint the export came from, when the local record has it."""
        return Path(self.source_checkpoint_path).parent if self.source_checkpoint_path else None
