"""Tokenizer files of an HF export, written by hand so every transformers version reads them alike.

- tokenizer.json: the native tokenizer with its post-processor rewritten to add `<bos>` only. The
  reference's `<bos> $A <eos>` is right for training documents and wrong for prompts: a prompt that
  ends in `<eos>` makes `generate` continue after an end of text. tokenizer.json decides this in
  transformers 4.x and 5.x alike (flags in tokenizer_config.json are ignored when it exists).
- tokenizer_config.json: `PreTrainedTokenizerFast`, which 4.x and 5.x both load (v5's own
  save_pretrained writes `TokenizersBackend`, which 4.x cannot load), with the real special tokens.
- special_tokens_map.json: for older tooling.
"""

from __future__ import annotations

import json
from typing import Any

from tokenizers import Tokenizer, processors

from mythos_convert.data.tokenizer import SpecialTokens, special_tokens

_ROLES = ("bos", "eos", "unk", "pad", "sep")


def bos_only_tokenizer(tokenizer: Tokenizer) -> Tokenizer:
    """A copy of `tokenizer` whose post-processor adds BOS (id from its own vocabulary) and nothing else.

    Without a BOS token the post-processor is removed: texts encode to their content ids only.
    """
    copy = Tokenizer.from_str(tokenizer.to_str())
    specials = special_tokens(copy)
    if specials.bos is None:
        copy.post_processor = None
        return copy
    bos, bos_id = specials.bos
    copy.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A",
        pair=f"{bos} $A {bos}:1 $B:1",
        special_tokens=[(bos, bos_id)],
    )
    return copy


def bos_only_tokenizer_json(tokenizer: Tokenizer) -> str:
    """tokenizer.json content of the BOS-only copy (what an export ships; not the training tokenizer's text)."""
    return json.dumps(json.loads(bos_only_tokenizer(tokenizer).to_str()), ensure_ascii=False, indent=2) + "\n"


def tokenizer_config_dict(specials: SpecialTokens, model_max_length: int) -> dict[str, Any]:
    """tokenizer_config.json for `PreTrainedTokenizerFast` with the tokenizer's real special tokens."""
    config: dict[str, Any] = {"tokenizer_class": "PreTrainedTokenizerFast"}
    for role in _ROLES:
        token = specials.token(role)
        if token is not None:
            config[f"{role}_token"] = token
    config.update(
        {
            "model_max_length": int(model_max_length),
            "clean_up_tokenization_spaces": False,
            "add_bos_token": specials.bos is not None,  # informative: tokenizer.json's post-processor decides
            "add_eos_token": False,
        }
    )
    return config


def special_tokens_map_dict(specials: SpecialTokens) -> dict[str, str]:
    return {f"{role}_token": specials.token(role) for role in _ROLES if specials.token(role) is not None}
