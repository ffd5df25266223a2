"""How many torch threads the torch engines (native, transformers) run with."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

# Below this size matmuls are too small for threads to help, and on a busy machine OpenMP threads
# waiting on each other made a tiny model's verify 30x slower (68 s vs 1.9 s measured on 2 cores).
SINGLE_THREAD_PARAMS = 30_000_000


@contextlib.contextmanager
def torch_threads(n_params: int) -> Iterator[None]:
    """One torch thread for models under SINGLE_THREAD_PARAMS (threads only cost there), restored after."""
    before = torch.get_num_threads()
    if n_params < SINGLE_THREAD_PARAMS:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
