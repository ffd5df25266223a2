"""llama.cpp scoring several windows per call, one sequence each, the way `llama-perplexity` batches them.

`llama-perplexity` puts n_batch / n_ctx windows (2048 / 512 = 4 by default) into one batch, each
its own sequence from position 0, so every weight matrix is multiplied by 2048 columns at once
instead of 512. Each window's logits are the same as when it is evaluated alone: the sequences
have separate KV caches (`kv_unified` off), attention never crosses them, and ggml's matrix
products sum each output in an order that does not depend on the other columns of the batch
(tested bit for bit against one window per call). It only runs faster.

Built on llama-cpp-python's low-level API because its `Llama` class allows one sequence only.
The model is loaded as `verify` loads it: extra buffer types off (the AMX workaround in
`verify/gguf.py`), an F32 KV cache (so an F32 file computes what float32 does), flash attention
as asked (llama-cpp-python's default is off; llama.cpp's own tools default to on where supported).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from mythos_convert.errors import MythosError
from mythos_convert.verify.gguf import quiet_stderr

BATCH_TOKENS = 2048  # llama-perplexity's default n_batch: windows per call = BATCH_TOKENS // ctx
BATCH_LOGIT_BYTES = 512 << 20  # ... fewer when a call's float32 logits would exceed this (large vocabularies)
GGML_TYPE_F32 = 0


def windows_per_batch(ctx: int, vocab: int) -> int:
    """How many windows of `ctx` tokens go into one llama.cpp batch."""
    by_tokens = max(1, BATCH_TOKENS // max(1, ctx))
    by_memory = max(1, BATCH_LOGIT_BYTES // max(1, ctx * vocab * 4))
    return min(by_tokens, by_memory)


class LlamaWindows:
    """One GGUF model in llama.cpp and a context that scores up to `n_seq` windows of `ctx` tokens at once."""

    def __init__(self, path: str | Path, ctx: int, n_seq: int, threads: int, flash_attn: bool = False) -> None:
        import llama_cpp as lib

        logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)  # what Llama(verbose=False) does
        self._lib, self.ctx = lib, ctx
        self.n_seq = max(1, min(n_seq, lib.llama_max_parallel_sequences()))  # llama.cpp's cap (256)
        self._model = self._context = self._batch = None
        lib.llama_backend_init()
        params = lib.llama_model_default_params()
        params.use_extra_bufts = False
        with quiet_stderr():
            self._model = lib.llama_model_load_from_file(str(path).encode("utf-8"), params)
        if not self._model:
            raise MythosError(
                f"llama.cpp could not load {path}: the file is not a valid model; re-export it with `mythos-convert gguf`"
            )
        self.vocab = lib.llama_vocab_n_tokens(lib.llama_model_get_vocab(self._model))
        cp = lib.llama_context_default_params()
        cp.n_ctx = cp.n_batch = cp.n_ubatch = ctx * self.n_seq
        cp.n_seq_max = self.n_seq
        cp.kv_unified = False  # one KV stream per window: attention over its own ctx cells only
        cp.n_threads = cp.n_threads_batch = threads
        cp.type_k = cp.type_v = GGML_TYPE_F32
        cp.flash_attn_type = lib.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash_attn else lib.LLAMA_FLASH_ATTN_TYPE_DISABLED
        cp.no_perf = True
        with quiet_stderr():
            self._context = lib.llama_init_from_model(self._model, cp)
        if not self._context:
            self.close()
            raise MythosError(
                f"llama.cpp could not make a context of {self.n_seq} x {ctx} tokens for {path}: "
                "pass a smaller --ctx, or free memory"
            )
        self._batch = lib.llama_batch_init(ctx * self.n_seq, 0, self.n_seq)

    def logits(self, windows: list[np.ndarray]) -> np.ndarray:
        """Logits [len(windows), ctx, vocab] (float32, a copy), each window from an empty cache."""
        lib, batch = self._lib, self._batch
        if not 0 < len(windows) <= self.n_seq or any(w.size != self.ctx for w in windows):
            raise ValueError(f"expected 1..{self.n_seq} windows of {self.ctx} tokens")
        lib.llama_memory_clear(lib.llama_get_memory(self._context), True)
        positions = np.arange(self.ctx, dtype=np.int32)
        tokens = np.ctypeslib.as_array(batch.token, shape=(self.ctx * self.n_seq,))
        pos = np.ctypeslib.as_array(batch.pos, shape=(self.ctx * self.n_seq,))
        n_seq_id = np.ctypeslib.as_array(batch.n_seq_id, shape=(self.ctx * self.n_seq,))
        wants = np.ctypeslib.as_array(batch.logits, shape=(self.ctx * self.n_seq,))
        for k, window in enumerate(windows):
            span = slice(k * self.ctx, (k + 1) * self.ctx)
            tokens[span] = window
            pos[span] = positions
            for i in range(span.start, span.stop):
                batch.seq_id[i][0] = k
        n = len(windows) * self.ctx
        n_seq_id[:n] = 1
        wants[:n] = 1
        batch.n_tokens = n
        status = lib.llama_decode(self._context, batch)
        if status != 0:
            raise MythosError(f"llama.cpp failed to evaluate a batch of {len(windows)} window(s) (status {status})")
        out = np.ctypeslib.as_array(lib.llama_get_logits(self._context), shape=(n, self.vocab))
        return out.reshape(len(windows), self.ctx, self.vocab).copy()

    def close(self) -> None:
        """Free the batch, the context and the model (safe to call twice)."""
        lib = self._lib
        if self._batch is not None:
            lib.llama_batch_free(self._batch)
            self._batch = None
        if self._context:
            lib.llama_free(self._context)
        self._context = None
        if self._model:
            lib.llama_model_free(self._model)
        self._model = None
