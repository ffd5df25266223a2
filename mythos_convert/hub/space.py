"""A demo Space for a published model: a Gradio `app.py` that loads it with transformers, pushed as a Space.

The app reads the model's own `generation_config.json` (what the model card states as its sampling
settings) for its default temperature and top-p, so the demo samples as the card says; temperature
0 is greedy decoding. `MYTHOS_MODEL` overrides the repo id, which is how the tests run the app
against a local export. The push reuses `hub`'s plan, private copy (what is checked for links, special files and
credentials is what is uploaded) and retries; only the repo type differs: `repo_type="space"`
with `space_sdk="gradio"`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from mythos_convert import __version__
from mythos_convert.errors import MythosError
from mythos_convert.names import HF_KEY

GRADIO_VERSION = "6.31.0"  # the Space's sdk_version: the Gradio the app is tested with
# what the Space installs beside Gradio: the ranges the export is tested to load in (4.46 .. 5.x)
REQUIREMENTS = ("transformers>=4.46,<6", "torch>=2.5,<3")
DEMO_SUFFIX = "-demo"

APP = '''"""Gradio demo of {model_id}: the model loaded with transformers, sampled as its card says.

Written by mythos-convert {version}. Set MYTHOS_MODEL to run it on another repo or a local folder.
"""

import os

import gradio as gr
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

MODEL = os.environ.get("MYTHOS_MODEL", {model_lit})
tokenizer = AutoTokenizer.from_pretrained(MODEL)  # adds <bos>, never <eos>: generation continues the text
model = AutoModelForCausalLM.from_pretrained(MODEL).eval()
card = model.generation_config  # generation_config.json: the card's sampling settings
TEMPERATURE = float(card.temperature or 1.0) if card.do_sample else 0.0
TOP_P = float(card.top_p or 1.0)
CONTEXT = int(model.config.{context_key})


def generate(prompt: str, max_new_tokens: float, temperature: float, top_p: float) -> str:
    """The continuation of `prompt`: greedy at temperature 0, else sampled with top-p."""
    ids = tokenizer(prompt, return_tensors="pt")
    room = CONTEXT - ids["input_ids"].shape[1]
    if room <= 0:
        raise gr.Error(f"the prompt is longer than the model's context ({{CONTEXT}} tokens): shorten it")
    options = {{"max_new_tokens": min(int(max_new_tokens), room), "do_sample": temperature > 0}}
    if temperature > 0:
        options.update(temperature=float(temperature), top_p=float(top_p))
    else:
        options.update(temperature=None, top_p=None)  # greedy: the card's sampling settings do not apply
    with torch.no_grad():
        out = model.generate(**ids, **options)
    return tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)


with gr.Blocks(title={title}) as demo:
    gr.Markdown(
        {header}
    )
    prompt = gr.Textbox(label="Prompt", lines=4, value={example}, elem_id="prompt")
    with gr.Row():
        max_new_tokens = gr.Slider(
            1, min(512, CONTEXT), value=min(64, CONTEXT), step=1, label="Max new tokens", elem_id="max_new_tokens"
        )
        temperature = gr.Slider(
            0.0, 2.0, value=TEMPERATURE, step=0.05, label="Temperature (0: greedy)", elem_id="temperature"
        )
        top_p = gr.Slider(0.05, 1.0, value=TOP_P, step=0.05, label="Top-p", elem_id="top_p")
    button = gr.Button("Generate", variant="primary", elem_id="generate")
    output = gr.Textbox(label="Continuation", lines=8, elem_id="output")
    button.click(generate, [prompt, max_new_tokens, temperature, top_p], output, api_name="generate")

if __name__ == "__main__":
    demo.launch()
'''

README = """---
title: {title}
emoji: 📜
colorFrom: indigo
colorTo: gray
sdk: gradio
sdk_version: {gradio}
app_file: app.py
pinned: false
license: apache-2.0
models:
  - {model_id}
short_description: Try {model_id} in the browser
---

# {title}

A demo of [{model_id}](https://huggingface.co/{model_id}): the model loaded with transformers
(`AutoModelForCausalLM`), generating with the sampling settings of its model card
(`generation_config.json`); temperature 0 is greedy decoding.

Run it locally: `pip install gradio=={gradio} {requirements}`, then `python app.py`
(`MYTHOS_MODEL=path/to/export python app.py` for a local folder). Written by mythos-convert {version}.
"""


@dataclass(frozen=True)
class SpaceFiles:
    """What `write_space` wrote: the folder and the model the app loads."""

    folder: Path
    model_id: str
    files: tuple[str, ...]


def default_model(space_repo: str, model: str | None) -> str:
    """The model the Space demonstrates: `model`, else the Space's id without its `-demo` suffix."""
    from mythos_convert.hub.push import is_repo_id

    if model is None:
        if not space_repo.endswith(DEMO_SUFFIX) or not is_repo_id(space_repo[: -len(DEMO_SUFFIX)]):
            raise MythosError(
                f"--repo {space_repo!r} does not end in {DEMO_SUFFIX}, so the model it demonstrates is not implied: "
                "pass --model OWNER/NAME"
            )
        model = space_repo[: -len(DEMO_SUFFIX)]
    if not is_repo_id(model):
        raise MythosError(f"--model {model!r} is not a Hub repo id: use OWNER/NAME, e.g. my-user/mythos-tiny")
    return model


def _literal(text: str) -> str:
    """A Python string literal in double quotes (JSON's escapes are Python's), as ruff format writes them."""
    return json.dumps(text, ensure_ascii=False)


def write_space(out: str | Path, model_id: str, *, force: bool = False, example: str = "The meaning of") -> SpaceFiles:
    """Write app.py, requirements.txt and README.md (the Space's card) into `out`, atomically.

    Raises:
        MythosError: a bad model id, or `out` exists and is not empty without `force`.
    """
    from mythos_convert.support.atomic import atomic_dir

    model_id = default_model(model_id + DEMO_SUFFIX, model_id)
    name = model_id.split("/", 1)[1]
    title = f"{name} demo"[:30]
    header = f"# {name}\n\nA demo of [{model_id}](https://huggingface.co/{model_id}), sampled as its model card says."
    texts = {
        "app.py": APP.format(
            model_id=model_id,
            model_lit=_literal(model_id),
            context_key=HF_KEY["max_seq_len"],
            version=__version__,
            title=_literal(title),
            header=_literal(header),
            example=_literal(example),
        ),
        "requirements.txt": "".join(f"{r}\n" for r in REQUIREMENTS),
        "README.md": README.format(
            title=title,
            model_id=model_id,
            gradio=GRADIO_VERSION,
            requirements=" ".join(f"'{r}'" for r in REQUIREMENTS),
            version=__version__,
        ),
    }
    with atomic_dir(out, force=force) as tmp:
        for rel, text in texts.items():
            (tmp / rel).write_text(text, encoding="utf-8")
    return SpaceFiles(Path(out), model_id, tuple(texts))


def push_space(plan, token: str | None = None, *, attempts: int | None = None, backoff: float | None = None):
    """Create the Space (Gradio SDK) if needed and upload the planned files in one commit.

    `plan` is `hub.plan_push`'s; `hub.push` uploads it from a private copy checked for credentials.
    Returns `hub.PushResult`. Raises MythosError as `hub.push` does (token, 401/403/404, network,
    a file changed during the upload).
    """
    from mythos_convert.hub.push import push

    return push(plan, token, attempts=attempts, backoff=backoff, repo_type="space")
