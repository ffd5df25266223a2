"""Run an exported Mythos GGUF with llama.cpp's engine through llama-cpp-python and generate.

    pip install llama-cpp-python==0.3.36
    python examples/run_with_llama_cpp.py out/mythos-tiny-Q8_0.gguf "Once upon a time"

On CPUs with Intel AMX, llama.cpp's AMX matrix path crashes on q8_0/q4_0 weights (llama.cpp issue
20824); this script loads the model with the extra buffer types off, which avoids that path.
"""

from __future__ import annotations

import argparse
import unicodedata

import llama_cpp
from llama_cpp import Llama


def _without_extra_buffer_types():
    """Model params with llama.cpp's extra (AMX repack) buffer types disabled."""
    default = llama_cpp.llama_cpp.llama_model_default_params

    def patched():
        params = default()
        params.use_extra_bufts = False
        return params

    return default, patched


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("gguf", help="a .gguf file written by `mythos-convert gguf`")
    parser.add_argument("prompt", nargs="?", default="The meaning of")
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    default, patched = _without_extra_buffer_types()
    llama_cpp.llama_cpp.llama_model_default_params = patched
    try:
        llm = Llama(model_path=args.gguf, n_ctx=512, n_threads=2, seed=args.seed, verbose=False)
    finally:
        llama_cpp.llama_cpp.llama_model_default_params = default
    # llama.cpp does not normalise text; the training pipeline NFKC-normalised it.
    prompt = unicodedata.normalize("NFKC", args.prompt)
    out = llm(
        prompt, max_tokens=args.max_new_tokens, temperature=args.temperature, top_k=1 if args.temperature == 0 else 40
    )
    print(prompt + out["choices"][0]["text"])


if __name__ == "__main__":
    main()
