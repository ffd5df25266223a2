"""config.json and generation_config.json of an HF Llama export, and the way back to a MythosConfig.

The config carries both schemas: transformers 5.x reads `rope_parameters`/`dtype`, while 4.x reads
only top-level `rope_theta`/`torch_dtype` and silently falls back to theta 10000 without them.
`rms_norm_eps` is always written because v5's LlamaConfig defaults it to 1e-6 (ours is 1e-5).
"""

from __future__ import annotations

import math
from typing import Any

from mythos_convert.data.tokenizer import SpecialTokens
from mythos_convert.errors import MythosError
from mythos_convert.formats.dtypes import HF_DTYPES
from mythos_convert.model.config import LIMITS, MythosConfig, ffn_width, short_repr
from mythos_convert.names import COMPUTE, CONFIG_KEYS, HF_KEY, ConfigKey, config_values

DEFAULT_TEMPERATURE = 0.8
DEFAULT_TOP_P = 0.9
# What transformers writes for a config with no transformers_version; any 4.46+ reads the file.
_TRANSFORMERS_VERSION_FALLBACK = "4.46.3"


def _transformers_version() -> str:
    """The installed transformers' version, read from its metadata (importing it costs seconds)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("transformers")
    except PackageNotFoundError:  # writing a config needs no transformers
        return _TRANSFORMERS_VERSION_FALLBACK


def hf_config_dict(cfg: MythosConfig, specials: SpecialTokens, dtype: str) -> dict[str, Any]:
    """The hybrid v4+v5 LlamaForCausalLM config.json for a Mythos model stored in `dtype`."""
    if dtype not in HF_DTYPES:
        raise MythosError(f"dtype {dtype!r} is not supported: use one of {', '.join(HF_DTYPES)}")
    values = config_values(cfg)
    theta_key, theta = HF_KEY["rope_theta"], values["rope_theta"]  # written twice, once per schema
    sizes = {row.hf: values[row.field] for row in CONFIG_KEYS if row.role != COMPUTE}
    computed = {row.hf: values[row.field] for row in CONFIG_KEYS if row.role == COMPUTE and row.hf != theta_key}
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        **sizes,  # intermediate_size is the SwiGLU width rule applied (ffn_dim), not d_ff
        "hidden_act": "silu",
        **computed,
        "initializer_range": 0.02,
        "use_cache": True,
        "tie_word_embeddings": True,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "pretraining_tp": 1,
        "bos_token_id": specials.id("bos"),
        "eos_token_id": specials.id("eos"),
        "pad_token_id": specials.id("pad"),
        # v5 schema
        "rope_parameters": {"rope_type": "default", theta_key: theta},
        "dtype": dtype,
        # v4 schema (4.46 .. 4.57 ignore rope_parameters)
        theta_key: theta,
        "rope_scaling": None,
        "torch_dtype": dtype,
        "transformers_version": _transformers_version(),
    }


def generation_config_dict(
    specials: SpecialTokens, *, temperature: float = DEFAULT_TEMPERATURE, top_p: float = DEFAULT_TOP_P
) -> dict[str, Any]:
    """generation_config.json: sampling defaults with `do_sample: true` (else transformers refuses to save it)."""
    if not (math.isfinite(temperature) and temperature > 0):  # NaN passes `<= 0`
        raise MythosError(f"--temperature must be positive, got {temperature}: pass e.g. --temperature 0.8")
    if not 0 < top_p <= 1:
        raise MythosError(f"--top-p must be in (0, 1], got {top_p}: pass e.g. --top-p 0.9")
    return {
        "bos_token_id": specials.id("bos"),
        "eos_token_id": specials.id("eos"),
        "pad_token_id": specials.id("pad"),
        "do_sample": True,
        "temperature": float(temperature),
        "top_p": float(top_p),
        "transformers_version": _transformers_version(),
    }


def _rope_theta(config: dict[str, Any]) -> float:
    """Theta from either schema; refuse any rope scaling (Mythos has plain RoPE)."""
    key = HF_KEY["rope_theta"]
    params = config.get("rope_parameters")
    scaling = config.get("rope_scaling")
    for field, value in (("rope_parameters", params), ("rope_scaling", scaling)):
        if value is None:
            continue
        if not isinstance(value, dict):
            raise MythosError(
                f"config.json field {field} must be a mapping or null, got {short_repr(value)}: fix it or set it to null"
            )
        kind = value.get("rope_type", value.get("type", "default"))
        if kind != "default":
            raise MythosError(
                f"config.json field {field} asks for rope_type {kind!r}: Mythos has plain RoPE, "
                "so a model with RoPE scaling cannot be converted; convert one with plain RoPE"
            )
        extra = sorted(set(value) - {"rope_type", "type", key})
        if extra:
            raise MythosError(
                f"config.json field {field} has scaling parameters {short_repr(extra)} Mythos cannot represent: "
                "only models with plain RoPE convert"
            )
    values = [v for v in ((params or {}).get(key), config.get(key)) if v is not None]
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise MythosError(f"config.json {key} must be a number, got {short_repr(value)}: fix it (e.g. 10000.0)")
    thetas = {float(v) for v in values}
    if len(thetas) > 1:
        raise MythosError(
            f"config.json has two different RoPE thetas {sorted(thetas)} (rope_parameters vs {key}): make them equal"
        )
    return thetas.pop() if thetas else 10000.0


def d_ff_for_width(width: int) -> int:
    """A d_ff whose SwiGLU width rule gives `width` (intermediate_size), or MythosError if none does."""
    d_ff = width * 3 // 2
    if ffn_width(d_ff) != width:
        raise MythosError(
            f"config.json field {HF_KEY['ffn_dim']}={width} is not reachable by the Mythos SwiGLU "
            "width rule (multiples of 256): this model cannot be represented as a Mythos checkpoint; "
            "only folders `mythos-convert hf` wrote convert"
        )
    return d_ff


def mythos_config_from_hf(config: dict[str, Any]) -> MythosConfig:
    """Map an HF Llama config.json to a MythosConfig; refuse (naming the field) whatever cannot map.

    Tying is not decided here: a folder with `tie_word_embeddings: false` maps only when its
    lm_head equals the embedding, which the folder reader checks on the weights.
    """
    _check_llama(config)
    values: dict[str, Any] = _hf_sizes(config)
    eps_key = HF_KEY["norm_eps"]
    eps = config.get(eps_key)
    if eps is None:
        raise MythosError(f"config.json lacks {eps_key}: its value differs between transformers versions, add it")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
        raise MythosError(f"config.json field {eps_key} must be a number, got {short_repr(eps)}: fix it (e.g. 1e-05)")
    values["d_ff"] = d_ff_for_width(values.pop("ffn_dim"))
    values.update(dropout=0.0, norm_eps=float(eps), rope_theta=_rope_theta(config))
    return MythosConfig.from_dict(values)


def _check_llama(config: dict[str, Any]) -> None:
    """Refuse a config.json that is not a plain Llama (another model type, biases, another activation)."""
    model_type = config.get("model_type")
    if model_type != "llama":
        raise MythosError(
            f"config.json field model_type is {short_repr(model_type)}: only 'llama' folders map to Mythos; "
            "pass a folder that `mythos-convert hf` wrote"
        )
    for field in ("attention_bias", "mlp_bias", "tie_word_embeddings"):  # JSON booleans: "false" is truthy
        value = config.get(field)
        if field in config and not isinstance(value, bool) and not (value is None and field != "tie_word_embeddings"):
            raise MythosError(
                f"config.json field {field} must be true or false, got {short_repr(value)}: fix it or re-export the folder"
            )
    for field in ("attention_bias", "mlp_bias"):
        if config.get(field):
            raise MythosError(
                f"config.json field {field} is true: Mythos linear layers have no bias, so only models without "
                "biases convert"
            )
    act = config.get("hidden_act", "silu")
    if act != "silu":
        raise MythosError(
            f"config.json field hidden_act is {short_repr(act)}: Mythos uses silu (SwiGLU), so only silu models convert"
        )


def _hf_sizes(config: dict[str, Any]) -> dict[str, int]:
    """config.json's integer fields by MythosConfig field, each checked; head_dim checked and dropped.

    num_key_value_heads defaults to num_attention_heads and head_dim to their quotient, as in transformers.
    """
    ints = [row for row in CONFIG_KEYS if row.kind is int]
    optional = (HF_KEY["n_kv_heads"], HF_KEY["head_dim"])
    missing = [row.hf for row in ints if config.get(row.hf) is None and row.hf not in optional]
    if missing:
        raise MythosError(
            f"config.json lacks field(s) {missing}: it is not a complete Llama config; re-export the folder"
        )
    sizes = {row.field: _size(config, row) for row in ints if config.get(row.hf) is not None}
    sizes.setdefault("n_kv_heads", sizes["n_heads"])
    head_dim = sizes.pop("head_dim", None)
    if head_dim is not None and head_dim * sizes["n_heads"] != sizes["d_model"]:
        raise MythosError(
            f"config.json field {HF_KEY['head_dim']}={head_dim} differs from {HF_KEY['d_model']}/"
            f"{HF_KEY['n_heads']}={sizes['d_model']}/{sizes['n_heads']}: Mythos derives head_dim from d_model; "
            f"remove {HF_KEY['head_dim']} or fix it"
        )
    return sizes


def _size(config: dict[str, Any], row: ConfigKey) -> int:
    """A config.json size field: a positive JSON integer within the native field's limit, else MythosError.

    Checked here, in transformers' names, so the message names the field the user sees in the file.
    """
    field, value, limit = row.hf, config[row.hf], LIMITS[row.limit or "d_model"]
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise MythosError(
            f"config.json field {field} must be a positive integer, got {short_repr(value)}: "
            "fix it or re-export the folder"
        )
    if value > limit:
        raise MythosError(
            f"config.json field {field}={value} is larger than {limit:,}, the most any real model needs: "
            "the config is damaged; fix it or re-export the folder"
        )
    return value
