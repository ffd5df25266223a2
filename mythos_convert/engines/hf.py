"""The transformers engine: LlamaForCausalLM in float32, on an HF folder or on a GGUF file (`gguf_file=`).

Loading is quiet (verify and eval print their own tables) and strict: a missing, unexpected or
mismatched key, or a parameter left on the meta device, is an error naming the folder.
"""

from __future__ import annotations

import contextlib
import inspect
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from mythos_convert.engines.base import Engine, Ids, greedy_continue
from mythos_convert.errors import MythosError


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load report, progress bars and length warnings."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # v5 prints a load report on stdout
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()


def load_hf_model(folder: Path):
    """LlamaForCausalLM in float32; any missing/unexpected/mismatched key or meta tensor is an error."""
    from transformers import LlamaForCausalLM

    with quiet_transformers():
        model, loading = LlamaForCausalLM.from_pretrained(folder, output_loading_info=True, dtype=torch.float32)
    for kind in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
        found = list(loading.get(kind) or [])
        if found:
            raise MythosError(
                f"transformers reports {kind.replace('_', ' ')} loading {folder}: {found[:4]}; "
                "re-export the folder with `mythos-convert hf`"
            )
    on_meta = [name for name, p in model.named_parameters() if p.device.type == "meta"]
    if on_meta:
        raise MythosError(
            f"transformers left parameters on the meta device loading {folder}: {on_meta[:4]}; "
            "re-export the folder with `mythos-convert hf`"
        )
    return model.eval()


def transformers_from_gguf(gguf_path: Path):
    """LlamaForCausalLM loaded from a GGUF file (transformers dequantizes it to float32)."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            model = AutoModelForCausalLM.from_pretrained(
                gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
            )
    finally:
        hf_logging.set_verbosity(verbosity)
    return model.eval()


def hf_logits(model, ids: Ids) -> torch.Tensor:
    """Full-sequence logits [T, V] (float32) of token ids, no cache."""
    with torch.no_grad():
        return model(torch.as_tensor(ids)[None]).logits[0].float()


def hf_forward(model, ids: list[int], cache: Any = None) -> tuple[torch.Tensor, Any]:
    """transformers' logits [T, V] of `ids` (on top of `cache` when given) and the KV cache it leaves."""
    # transformers >= 5.2x names the cache `cache`, older versions `past_key_values`
    name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    with torch.no_grad():
        out = model(torch.tensor([ids]), use_cache=True, **({name: cache} if cache is not None else {}))
    return out.logits[0], out["cache"] if "cache" in out else out["past_key_values"]


def hf_engine_of(model, target: str, dtype: str) -> Engine:
    """An `Engine` around a loaded LlamaForCausalLM; greedy recomputes the sequence each step."""
    return Engine(
        target,
        "hf",
        "transformers",
        dtype,
        model.config.vocab_size,
        lambda ids: hf_logits(model, ids),
        lambda ids, n: greedy_continue(lambda seq: hf_logits(model, seq), ids, n),
        model=model,
    )


def hf_engine(target: str, folder: Path, dtype: str) -> Engine:
    """transformers' LlamaForCausalLM on the folder, float32."""
    return hf_engine_of(load_hf_model(folder), target, dtype)
