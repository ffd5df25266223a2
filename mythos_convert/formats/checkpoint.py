"""Read and write the native Mythos checkpoint (see shared/NATIVE_FORMAT.md).

The native format is the converters' source and the trainer's output, so it lives here, beside
the name table it strips prefixes with; `train` imports it (down), nothing here imports `train`.

Reading memory-maps the file and never touches the optimizer state, so converting a checkpoint
costs about one copy of the weights. Writing goes to a temporary name and is renamed into place.
"""

from __future__ import annotations

import contextlib
import pickle
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mythos_convert.errors import MythosError
from mythos_convert.formats.dtypes import NATIVE_DTYPES, dtype_text
from mythos_convert.model.config import MythosConfig, config_from_yaml, short_repr
from mythos_convert.names import NATIVE_DROPPED, check_tensors, strip_native_prefixes
from mythos_convert.support.atomic import atomic_file
from mythos_convert.support.safe_paths import require_file

if TYPE_CHECKING:  # torch is imported where it is used: `hf --no-verify` can run without it
    import torch

# Keys of the checkpoint dict, the reference's plus our extras (which the reference ignores).
MODEL_KEY, OPTIMIZER_KEY, STEP_KEY, CONFIG_KEY = "model", "optimizer", "step", "config"
TOKENIZER_KEY = "tokenizer_json"  # the tokenizer.json text, so a lone ckpt.pt is self-contained
TRAINING_KEY = "training"  # facts for the model card, see TRAINING_FACTS below
# How deep plain values (config, training facts) may nest: ours nest 3 levels; a value nested
# thousands deep would end in RecursionError in whatever walks it next (json, repr, the card).
MAX_NESTING = 100
MAX_VALUES = 10_000_000

# The `training` dict the trainer records (all optional; the card shows what is there):
TRAINING_FACTS = {
    "tokens_seen": "int, training tokens consumed",
    "train_config": "dict, the TrainingConfig fields",
    "data": "dict: description (str), name (str), sources (list[str]), train_tokens, val_tokens (int)",
    "val_loss": "float, last validation loss (nats/token)",
    "val_ppl": "float, exp(val_loss)",
    "optimizer": "str, e.g. 'AdamW(betas=(0.9, 0.95), weight_decay=0.1 on matrices)'",
    "schedule": "str, e.g. 'linear warmup 30 steps, cosine to 3e-4'",
    "precision": "str, 'bf16 autocast' or 'float32'",
    "hardware": "str, e.g. '2x CPU (x86_64)'",
    "world_size": "int, processes",
    "wall_seconds": "float",
}


@dataclass
class NativeCheckpoint:
    """A loaded checkpoint: the config, the weights by (prefix-stripped) native name, and facts."""

    config: MythosConfig
    state_dict: dict[str, torch.Tensor]
    step: int = 0
    tokenizer_json: str | None = None
    training: dict[str, Any] = field(default_factory=dict)
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)  # everything, optimizer unread
    path: Path | None = None

    def weights(self) -> dict[str, torch.Tensor]:
        """The tensors a converter exports: buffers (rope tables) dropped, tied head kept."""
        return {k: v for k, v in self.state_dict.items() if k not in NATIVE_DROPPED}


def torch_load(path: Path) -> Any:
    """A checkpoint file's dict, read the safe way (weights_only, memory-mapped where the file allows)."""
    import torch

    with warnings.catch_warnings():  # torch warns about pickle protocols; the error, if any, says it all
        warnings.simplefilter("ignore")
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" in str(exc) and "zip" in str(exc):  # legacy (non-zip) files cannot be mapped
                return torch.load(path, map_location="cpu", weights_only=True)
            raise


def tensor_of_array(array: Any) -> Any:
    """A torch tensor sharing `array`'s memory, which may be a file's read-only mapping: the model
    built on it only reads its weights (what changes a weight points the parameter elsewhere)."""
    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)


def load_checkpoint(
    path: str | Path, config_yaml: str | Path | None = None, *, recorded_config: Mapping[str, Any] | None = None
) -> NativeCheckpoint:
    """Load a native checkpoint written by us or by the reference implementation.

    Args:
        path: the `.pt` file.
        config_yaml: a YAML file with a `model:` mapping, used when the file has no `config`
            (older reference files) and overriding it when given.
        recorded_config: the config an export recorded for this checkpoint (mythos.json), used
            only when the file has no `config` and no `config_yaml` is given.

    Raises:
        MythosError: missing, truncated or corrupt file; no weights; no config anywhere.
    """
    path = Path(path)
    if path.is_dir():
        raise MythosError(f"checkpoint {path} is a folder: pass the ckpt.pt file (e.g. {path / 'ckpt.pt'})")
    require_file(path, "checkpoint", "pass the path of a ckpt.pt file")
    try:
        data = torch_load(path)
    except pickle.UnpicklingError as exc:  # weights_only refuses anything but tensors and plain types
        raise MythosError(
            f"checkpoint {path} holds Python objects other than tensors and plain values, so it is not a "
            "Mythos checkpoint (or is unsafe to load): pass a ckpt.pt written by the trainer or the reference"
        ) from exc
    except Exception as exc:  # a torn or foreign file fails in many ways (zip, EOF, bad opcodes, KeyError)
        reason = str(exc).splitlines()[0] if str(exc) else ""
        if not isinstance(exc, (RuntimeError, OSError)):  # e.g. "KeyError: 101" says more than "101"
            reason = f"{type(exc).__name__}: {reason}" if reason else type(exc).__name__
        raise MythosError(
            f"checkpoint {path} is truncated or not a PyTorch checkpoint ({reason[:120]}): re-copy or re-save it"
        ) from exc
    import torch

    return checkpoint_from_data(
        data, path, config_yaml, lambda value: isinstance(value, torch.Tensor), recorded_config=recorded_config
    )


def checkpoint_from_data(
    data: Any,
    path: Path,
    config_yaml: str | Path | None,
    is_tensor: Callable[[Any], bool],
    *,
    recorded_config: Mapping[str, Any] | None = None,
) -> NativeCheckpoint:
    """Interpret what a checkpoint file unpickled to (tensors recognised by `is_tensor`).

    Shared by `load_checkpoint` and the torch-free reader of `hf --no-verify`, so both accept,
    refuse and strip exactly the same things.
    """
    if not isinstance(data, Mapping):
        raise MythosError(
            f"checkpoint {path} holds a {type(data).__name__}, expected a dict with a 'model' key: "
            "pass a ckpt.pt written by the trainer or the reference"
        )
    state = _model_state(data, path, is_tensor)
    for key, value in data.items():
        if key != MODEL_KEY and key != OPTIMIZER_KEY and too_deep(value):
            raise MythosError(
                f"checkpoint {path} nests the value of {short_repr(key)} more than {MAX_NESTING} levels deep "
                f"(or repeats it past {MAX_VALUES:,} values): it is damaged or hostile; re-save it with plain values"
            )
    training = data.get(TRAINING_KEY)
    step = data.get(STEP_KEY, 0)
    return NativeCheckpoint(
        config=_config(data, path, config_yaml, recorded_config),
        state_dict={strip_native_prefixes(k): v for k, v in state.items()},
        step=int(step) if isinstance(step, (int, float)) else 0,
        tokenizer_json=data.get(TOKENIZER_KEY) if isinstance(data.get(TOKENIZER_KEY), str) else None,
        training=dict(training) if isinstance(training, Mapping) else {},
        raw=data,
        path=path,
    )


def _model_state(data: Mapping[Any, Any], path: Path, is_tensor: Callable[[Any], bool]) -> Mapping[Any, Any]:
    """The weights: `data["model"]`, or `data` itself when it is a bare state dict; every entry a float tensor."""
    if MODEL_KEY in data and isinstance(data[MODEL_KEY], Mapping):
        state = data[MODEL_KEY]
    elif data and all(is_tensor(v) for v in data.values()):
        state = data  # a bare state dict: accept it, the config must then come from YAML
    else:
        raise MythosError(
            f"checkpoint {path} has no 'model' state dict (keys: {short_repr(sorted(map(str, data))[:8])}): "
            "pass a ckpt.pt written by the trainer or the reference"
        )
    for name, value in state.items():
        if not isinstance(name, str) or not is_tensor(value):
            raise MythosError(
                f"checkpoint {path} has a 'model' entry {short_repr(name)} holding a {type(value).__name__}, "
                "not a tensor: re-save the checkpoint from the model's state_dict()"
            )
        if dtype_text(value.dtype) not in NATIVE_DTYPES:
            raise MythosError(
                f"checkpoint {path} stores {name} as {dtype_text(value.dtype)}: weights must be floating point "
                f"({', '.join(NATIVE_DTYPES)}); re-save the checkpoint from the trained model's state_dict()"
            )
    return state


def _config(
    data: Mapping[Any, Any], path: Path, config_yaml: str | Path | None, recorded: Mapping[str, Any] | None
) -> MythosConfig:
    """The model config: `config_yaml` when given, else the file's own, else the one an export recorded."""
    if config_yaml is not None:
        return config_from_yaml(config_yaml)
    if isinstance(data.get(CONFIG_KEY), Mapping):
        return MythosConfig.from_dict(dict(data[CONFIG_KEY]))
    if recorded is not None:
        return MythosConfig.from_dict(dict(recorded))
    raise MythosError(f"checkpoint {path} has no embedded config: pass --config with a YAML file holding `model:`")


def too_deep(value: Any, limit: int = MAX_NESTING, budget: int = MAX_VALUES) -> bool:
    """Do dicts, lists and tuples inside `value` nest past `limit` levels or hold over `budget` values?

    Iterative (no RecursionError), and shared references count each time they occur, as anything
    walking the value later would see them: a pickled value can repeat itself exponentially.
    """
    stack, seen = [(value, 0)], 0
    while stack:
        item, depth = stack.pop()
        seen += 1
        if depth > limit or seen > budget:
            return True
        if isinstance(item, Mapping):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            stack.extend((v, depth + 1) for v in item)
    return False


def save_checkpoint(
    path: str | Path,
    model_state: Mapping[str, torch.Tensor],
    config: MythosConfig,
    *,
    step: int = 0,
    optimizer_state: Mapping[str, Any] | None = None,
    tokenizer_json: str | None = None,
    training: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    replace: bool = True,
) -> Path:
    """Write a checkpoint in the reference layout, atomically (temporary name, then rename).

    Only plain Python types and tensors go in, so `torch.load(weights_only=True)` reads it.
    `replace=False` refuses an existing file, before and at rename time (training replaces its own).
    """
    payload: dict[str, Any] = {
        MODEL_KEY: {strip_native_prefixes(k): v for k, v in model_state.items()},
        OPTIMIZER_KEY: optimizer_state if optimizer_state is not None else {},
        STEP_KEY: int(step),
        CONFIG_KEY: config.to_dict(),
    }
    if tokenizer_json is not None:
        payload[TOKENIZER_KEY] = tokenizer_json
    if training is not None:
        payload[TRAINING_KEY] = dict(training)
    if extra:
        payload.update(extra)
    import torch

    with atomic_file(path, force=replace) as tmp:
        torch.save(payload, tmp)
    return Path(path)


@contextlib.contextmanager
def _no_init() -> Iterator[None]:
    """torch.nn.init's random fills as no-ops while a model is built whose weights are then assigned.

    (The meta device would do the same, but in torch 2.13 its first use imports torch._dynamo: 0.7 s.)
    """
    import torch

    names = ("normal_", "uniform_", "kaiming_uniform_")
    saved = {name: getattr(torch.nn.init, name) for name in names}
    for name in names:
        setattr(torch.nn.init, name, lambda tensor, *args, **kwargs: tensor)
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(torch.nn.init, name, fn)


def load_model(ckpt: NativeCheckpoint, dtype: torch.dtype | None = None):
    """Build the native model on a checkpoint's own tensors (strict); for running it, not for converting.

    The weights are checked against the config before the model is built, so a config that does
    not describe them (or asks for absurd sizes) fails by name instead of allocating the model.
    The model is built without its random initialisation and the checkpoint's tensors are assigned,
    not copied: for a memory-mapped float32 checkpoint the weights are the file's pages (other
    dtypes are widened to float32 first, as loading into float32 parameters did), then cast to
    `dtype` when given.
    """
    import torch

    from mythos_convert.model.model import Mythos  # local: converters must not need the model

    state = {n: t if t.dtype == torch.float32 else t.float() for n, t in ckpt.state_dict.items()}
    if "output.weight" not in state and "embedding.weight" in state:
        state["output.weight"] = state["embedding.weight"]
    check_tensors({n: t.shape for n, t in state.items()}, ckpt.config, "native", what="checkpoint")
    with _no_init():
        model = Mythos(ckpt.config)
    for name in sorted(NATIVE_DROPPED):
        state.setdefault(name, getattr(model, name))  # formats that drop the buffers
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise MythosError(
            f"checkpoint weights do not match its config: {str(exc).splitlines()[0]} (check --config)"
        ) from exc
    model.output.weight = model.embedding.weight  # assigning made the tied head two parameters
    model.eval()
    return model.to(dtype) if dtype is not None else model
