"""Load an exported Mythos folder with plain transformers (no custom code) and generate.

    python examples/load_with_transformers.py out/ "Once upon a time"

Sampling settings come from the folder's generation_config.json (the card's settings); the
exported tokenizer adds <bos> and no <eos>, so generate() continues the prompt.
"""

from __future__ import annotations

import argparse
import unicodedata

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="folder written by `mythos-convert hf`")
    parser.add_argument("prompt", nargs="?", default="The meaning of")
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--greedy", action="store_true", help="greedy decoding instead of the card's sampling")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(args.folder)
    model = AutoModelForCausalLM.from_pretrained(args.folder)
    # The training pipeline NFKC-normalised its text; do the same for prompts.
    inputs = tokenizer(unicodedata.normalize("NFKC", args.prompt), return_tensors="pt")
    extra = {"do_sample": False, "temperature": None, "top_p": None} if args.greedy else {}
    output = model.generate(**inputs, max_new_tokens=args.max_new_tokens, **extra)
    print(tokenizer.decode(output[0], skip_special_tokens=True))


if __name__ == "__main__":
    main()
