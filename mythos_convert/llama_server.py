"""`python -m mythos_convert.llama_server --model FILE.gguf ...`: llama-cpp-python's OpenAI server, AMX-safe.

It is `python -m llama_cpp.server` (same arguments, same app) with llama.cpp's extra buffer types
off, as `verify` loads models. Why: on CPUs with AMX, llama.cpp repacks Q8_0/Q4_0 weights for its
AMX matmul path and that path crashes (llama.cpp issue 20824); the stock server then dies with a
segmentation fault on the first completion of a Q8_0 file (seen with llama-cpp-python 0.3.36, and
tested in tests/test_serve_llama_cpp.py). The server has no option for it, so this wrapper sets
`use_extra_bufts=False` for every model it loads. F16/F32 files and CPUs without AMX do not need it.
"""

from __future__ import annotations

import sys

from mythos_convert.errors import MythosError


def main() -> None:
    """Run llama-cpp-python's server (its own argument parser reads sys.argv) with extra buffers off."""
    try:
        from llama_cpp.server.__main__ import main as server_main
    except ImportError as exc:
        raise MythosError(
            "the llama.cpp server needs llama-cpp-python's server extra: pip install 'llama-cpp-python[server]==0.3.36'"
        ) from exc
    from mythos_convert.llama_buffers import no_extra_buffers

    with no_extra_buffers():
        server_main()


if __name__ == "__main__":
    try:
        main()
    except MythosError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
