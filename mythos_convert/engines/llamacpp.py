"""The llama.cpp engine: a GGUF file through llama-cpp-python, logits at every position.

Settings, each measured (tests and eval's figures depend on them):
- KV cache in F32 (`type_k`/`type_v` 0): an F32 file then computes float32 throughout.
- never AMX: llama.cpp's AMX matmul crashes (llama.cpp issue 20824); weights stay in the plain
  CPU buffer (`llama_buffers.no_extra_buffers`), or, on request, CPU_REPACK without AMX
  (`llama_buffers.repacked_weights`). Verify's gates were measured plain.
- flash attention off unless asked (llama-cpp-python's default; llama.cpp's own tools turn it on
  on CPU, eval does too).
- half the cores, at most 8, at load (llama-cpp-python's default, capped); eval then sets as many
  threads as torch uses, so the engines' tokens/s compare.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mythos_convert.engines.base import Engine, Ids, greedy_continue, incremental
from mythos_convert.engines.llama_buffers import can_repack, no_extra_buffers, repacked_weights
from mythos_convert.errors import MythosError

# File types eval runs on llama.cpp's repacked weights. Measured on mythos-172m, Intel Xeon (Sapphire
# Rapids), 2 threads, flash attention, tokens/s plain -> repacked (best of 4 windows): Q4_0 473 -> 671;
# Q4_K_M 887 -> 711, Q4_K_S 868 -> 741, Q2_K 803 -> 724; F32, F16, BF16, Q8_0, Q4_1, Q5_0, Q5_1,
# Q3_K_M, Q5_K_M, Q6_K within noise (Q8_0 and F16 bit-identical: nothing of theirs is repacked on this
# CPU). Repacked Q4_0 logits differ from plain ones by up to 0.06 (another activation rounding); its
# mean KL divergence from float32 moved in the 4th digit. Unmeasured on an AVX2-only CPU, where the
# list might be longer.
REPACKED_TYPES = frozenset({"Q4_0"})


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """llama.cpp prints context warnings on fd 2 even with verbose=False; hide them while loading."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def load_llama(path: str | Path, n_ctx: int, f32_kv: bool = True, flash_attn: bool = False, repack: bool = False):
    """A llama-cpp-python model returning logits at every position (logits_all); flash attention off
    unless asked. Weights stay in llama.cpp's plain CPU buffer unless `repack` (then CPU_REPACK takes
    what it can, never AMX: `llama_buffers.repacked_weights`)."""
    try:
        from llama_cpp import Llama
    except ImportError as exc:
        raise MythosError(
            "GGUF verification needs llama-cpp-python: pip install 'llama-cpp-python==0.3.36' "
            "(or mythos-convert[llama-cpp]), or pass --no-verify"
        ) from exc
    kwargs: dict[str, Any] = {"type_k": 0, "type_v": 0} if f32_kv else {}  # 0 = GGML_TYPE_F32
    with repacked_weights() if repack else no_extra_buffers(), _quiet_stderr():
        try:
            return Llama(
                model_path=str(path),
                n_ctx=n_ctx,
                n_batch=n_ctx,
                n_ubatch=n_ctx,
                logits_all=True,
                flash_attn=flash_attn,
                n_threads=max(1, min(8, (os.cpu_count() or 2) // 2)),  # llama-cpp-python's default, capped
                verbose=False,
                **kwargs,
            )
        except ValueError as exc:
            raise MythosError(
                f"llama.cpp could not load {path} ({exc}): the file is not a valid model; "
                "re-export it with `mythos-convert gguf`"
            ) from exc


def llama_logits(llm, ids: Ids) -> torch.Tensor:
    """Logits [T, V] for `ids` evaluated from an empty cache."""
    ids = ids.tolist() if isinstance(ids, np.ndarray) else list(ids)
    llm.reset()
    llm.eval(ids)
    return torch.from_numpy(np.array(llm.scores[: len(ids)], dtype=np.float32))


def llama_greedy_fn(llm):
    """A `greedy_continue` step function on llama.cpp's KV cache: one `eval` of one token per step."""

    def prefill(ids: list[int]) -> torch.Tensor:
        return llama_logits(llm, ids)[-1]

    def step(token: int, start: int) -> torch.Tensor:
        llm.eval([token])
        return torch.from_numpy(np.array(llm.scores[start], dtype=np.float32))

    return incremental(prefill, step)


def llama_engine_of(llm, target: str, label: str, vocab: int, name: str = "llama.cpp") -> Engine:
    """An `Engine` around a loaded llama-cpp-python model (closed by `Engine.close`)."""
    return Engine(
        target,
        "gguf",
        name,
        label,
        vocab,
        lambda ids: llama_logits(llm, ids),
        lambda ids, n: greedy_continue(llama_greedy_fn(llm), ids, n),
        lambda: llm.close(),
        model=llm,
    )


def gguf_engine(target: str, path: Path, label: str, vocab: int, ctx: int, *, flash_attn: bool, repack: bool) -> Engine:
    """llama.cpp on a GGUF file of type `label`, as eval runs it: all logits of a window from an empty
    cache, as many threads as torch; `repack`: the types of `REPACKED_TYPES` on llama.cpp's repacked
    weights where it has them (else the plain buffer)."""
    repack = repack and label in REPACKED_TYPES and can_repack()  # what the load below does
    llm = load_llama(path, ctx, f32_kv=True, flash_attn=flash_attn, repack=repack)
    import llama_cpp  # present: load_llama has just imported it (or raised)

    threads = torch.get_num_threads()
    llama_cpp.llama_set_n_threads(llm._ctx.ctx, threads, threads)  # load_llama uses half the cores
    name = ", ".join(["llama.cpp"] + ["flash attention"] * flash_attn + ["repacked weights"] * repack)
    return llama_engine_of(llm, target, label, vocab, name)


def require_llama_cpp() -> None:
    """A clear error before any work when a GGUF target cannot be run."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError as exc:
        raise MythosError(
            "evaluating a GGUF file needs llama-cpp-python: pip install 'mythos-convert[llama-cpp]', "
            "or leave the .gguf targets out"
        ) from exc
