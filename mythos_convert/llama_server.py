"""`python -m mythos_convert.llama_server --model FILE.gguf ...`: llama-cpp-python's OpenAI server, AMX-safe.

It is `python -m llama_cpp.server` (same arguments, same app) with AMX taken out of llama.cpp's
extra buffer types (`llama_buffers.repacked_weights`). Why: on CPUs with AMX, llama.cpp moves
Q8_0/Q4_0/K-quant weights into its AMX buffer and that matmul crashes (llama.cpp issue 20824); the
stock server then dies with a segmentation fault on the first completion of a Q8_0 file (seen with
llama-cpp-python 0.3.36, and tested in tests/test_serve_llama_cpp.py). The server has no option for
it. Without AMX, llama.cpp's other extra buffer (CPU_REPACK) still takes what it repacks, as the
stock server does on a CPU without AMX: generation measured here 16% faster for Q4_0 and 14-21%
for Q4_K_M than in the plain buffer, Q8_0 and F16 unchanged. Where that cannot be had (no
CPU_REPACK, a ggml that does not answer), every weight goes in the plain buffer, as verify loads
them. On a CPU without AMX this is the stock server.
"""

from __future__ import annotations

import sys

from mythos_convert.errors import MythosError


def main() -> None:
    """Run llama-cpp-python's server (its own argument parser reads sys.argv), never on AMX."""
    try:
        from llama_cpp.server.__main__ import main as server_main
    except ImportError as exc:
        raise MythosError(
            "the llama.cpp server needs llama-cpp-python's server extra: pip install 'llama-cpp-python[server]==0.3.36'"
        ) from exc
    from mythos_convert.llama_buffers import repacked_weights

    with repacked_weights():  # for the server's whole life: it may load models after it starts
        server_main()


if __name__ == "__main__":
    try:
        main()
    except MythosError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
