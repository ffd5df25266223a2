"""The three engines eval runs, each reduced to one call: a window of token ids -> float32 logits [T, V].

- native: the Mythos model in torch, float32 (on a checkpoint, or on an HF folder's weights);
  it is also the reference distribution KL divergence is measured against.
- transformers: `LlamaForCausalLM` loaded from the HF folder in float32 (weights as stored, upcast).
- llama.cpp: the GGUF file through llama-cpp-python with logits at every position, loaded by
  `verify.gguf.load_llama` (F32 KV cache, never AMX: the crash workaround), with flash
  attention as llama.cpp's own tools run it on CPU (off on request, as verify runs it), with as
  many threads as torch uses, so the engines' tokens/s compare. Q4_0 files run on llama.cpp's
  repacked weights (CPU_REPACK, what llama.cpp uses by default on a CPU without AMX); every other
  type in its plain buffer, as verify runs them (`REPACKED_TYPES` says why).

Each engine's forward time is summed separately (`seconds`), so tokens/s per engine excludes the
cross-entropy and KL arithmetic, which is the same for all of them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mythos_convert.engines.llama_buffers import can_repack
from mythos_convert.errors import MythosError
from mythos_convert.evaluate.record import GGUFHeader
from mythos_convert.formats.checkpoint import NativeCheckpoint, load_model
from mythos_convert.source import open_hf
from mythos_convert.verify.gguf import llama_logits, load_llama
from mythos_convert.verify.hf import load_hf_model


@dataclass
class Engine:
    """One loaded model: its logits function, and how long it has spent computing logits."""

    target: str  # the name results are reported and recorded under
    kind: str  # "native", "hf" or "gguf"
    engine: str  # "native (torch)", "transformers", "llama.cpp"
    dtype: str  # F16, Q4_K_M, float32, ...
    vocab: int  # logits per position
    run: Callable[[np.ndarray], torch.Tensor]
    close: Callable[[], None]
    seconds: float = 0.0
    tokens: int = 0

    def logits(self, window: np.ndarray) -> torch.Tensor:
        """Logits [T, V] (float32) for one window, timed."""
        started = time.perf_counter()
        out = self.run(window)
        self.seconds += time.perf_counter() - started
        self.tokens += int(window.size)
        return out

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else float("nan")


def _torch_fn(model, hf: bool) -> Callable[[np.ndarray], torch.Tensor]:
    def run(window: np.ndarray) -> torch.Tensor:
        with torch.no_grad():
            out = model(torch.from_numpy(window)[None])
        return (out.logits if hf else out)[0].float()

    return run


def native_engine(target: str, ckpt: NativeCheckpoint, dtype: str = "float32") -> Engine:
    """The native model in float32 on a checkpoint's weights (its own tensors: no random init, no copy)."""
    model = load_model(ckpt, torch.float32)
    vocab = ckpt.config.vocab_size
    return Engine(target, "native", "native (torch)", dtype, vocab, _torch_fn(model, hf=False), lambda: None)


def native_from_hf(folder: Path) -> Engine:
    """The native model in float32 on an HF folder's weights (read through the name table)."""
    src = open_hf(folder)
    assert src.hf is not None
    return native_engine(f"{folder.name}/ (native)", src.as_checkpoint(), src.hf.stored_dtype())


def hf_engine(target: str, folder: Path, dtype: str) -> Engine:
    """transformers' LlamaForCausalLM on the folder, float32."""
    model = load_hf_model(folder)
    vocab = model.config.vocab_size
    return Engine(target, "hf", "transformers", dtype, vocab, _torch_fn(model, hf=True), lambda: None)


# File types eval runs on llama.cpp's repacked weights. Measured on mythos-172m, Intel Xeon (Sapphire
# Rapids), 2 threads, flash attention, tokens/s plain -> repacked (best of 4 windows): Q4_0 473 -> 671;
# Q4_K_M 887 -> 711, Q4_K_S 868 -> 741, Q2_K 803 -> 724; F32, F16, BF16, Q8_0, Q4_1, Q5_0, Q5_1,
# Q3_K_M, Q5_K_M, Q6_K within noise (Q8_0 and F16 bit-identical: nothing of theirs is repacked on this
# CPU). Repacked Q4_0 logits differ from plain ones by up to 0.06 (another activation rounding); its
# mean KL divergence from float32 moved in the 4th digit. Unmeasured on an AVX2-only CPU, where the
# list might be longer.
REPACKED_TYPES = frozenset({"Q4_0"})


def gguf_engine(target: str, path: Path, header: GGUFHeader, ctx: int, *, flash_attn: bool, repack: bool) -> Engine:
    """llama.cpp on a GGUF file, all logits of a window from an empty cache; `repack`: the types of
    `REPACKED_TYPES` on llama.cpp's repacked weights where it has them (else the plain buffer)."""
    import llama_cpp  # present: load_llama has just imported it (or raised)

    repack = repack and header.label in REPACKED_TYPES and can_repack()  # what the load below does
    llm = load_llama(path, ctx, f32_kv=True, flash_attn=flash_attn, repack=repack)
    threads = torch.get_num_threads()
    llama_cpp.llama_set_n_threads(llm._ctx.ctx, threads, threads)  # load_llama uses half the cores

    def run(window: np.ndarray) -> torch.Tensor:
        return llama_logits(llm, window.tolist())

    engine = ", ".join(["llama.cpp"] + ["flash attention"] * flash_attn + ["repacked weights"] * repack)
    return Engine(target, "gguf", engine, header.label, len(header.tokens), run, llm.close)


def require_llama_cpp() -> None:
    """A clear error before any work when a GGUF target cannot be run."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError as exc:
        raise MythosError(
            "evaluating a GGUF file needs llama-cpp-python: pip install 'mythos-convert[llama-cpp]', "
            "or leave the .gguf targets out"
        ) from exc
