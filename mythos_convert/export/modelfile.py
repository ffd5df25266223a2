"""An Ollama `Modelfile` beside a GGUF file: FROM, the sampling parameters, the stop token, a plain template.

Mythos is a base model: it continues text, so the template passes the prompt through unchanged
(Ollama's default template would wrap it in a chat format the model never saw). The sampling
parameters come from the folder's generation_config.json; the stop token is the tokenizer's own
end-of-text token, never a hard-coded string.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from mythos_convert.data.tokenizer import special_tokens
from mythos_convert.support.atomic import atomic_file, check_output_file

MODELFILE = "Modelfile"
# generation_config.json key -> Ollama PARAMETER name
PARAMETERS = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "repetition_penalty": "repeat_penalty"}
DEFAULT_SAMPLING = {"temperature": 0.8, "top_p": 0.9}  # the hf export's defaults, for checkpoints


def modelfile_text(gguf_name: str, tokenizer: Tokenizer, generation: dict[str, Any], context_length: int) -> str:
    """The Modelfile for `gguf_name` (a file in the same folder)."""
    sampling = {**DEFAULT_SAMPLING, **{k: v for k, v in generation.items() if k in PARAMETERS and v is not None}}
    lines = [
        "# Ollama Modelfile written by mythos-convert. Create the model with:",
        "#   ollama create mythos -f Modelfile",
        f"FROM ./{gguf_name}",
        "",
        "# A base model: the prompt is passed through as plain text (no chat template).",
        'TEMPLATE """{{ .Prompt }}"""',
        "",
    ]
    lines += [f"PARAMETER {PARAMETERS[key]} {value}" for key, value in sampling.items()]
    eos = special_tokens(tokenizer).token("eos")
    if eos is not None:
        lines.append(f"PARAMETER stop {json.dumps(eos)}")
    lines.append(f"PARAMETER num_ctx {context_length}")
    return "\n".join(lines) + "\n"


def write_modelfile(
    gguf_path: Path, tokenizer: Tokenizer, generation: dict[str, Any], context_length: int, *, force: bool = False
) -> Path:
    """Write `Modelfile` beside `gguf_path` (refused if it exists, unless force)."""
    path = check_output_file(Path(gguf_path).parent / MODELFILE, force)
    with atomic_file(path, force=force) as tmp:
        tmp.write_text(modelfile_text(Path(gguf_path).name, tokenizer, generation, context_length))
    return path
