"""The Modelfile we write uses only what Ollama's Modelfile parser accepts, with values of the types it parses.

Ported from github.com/ollama/ollama at fb30760996871fa9460115c753afd2c60d4ab0f7 (after #16031, the
llama-server releases): parser/parser.go `isValidCommand` (the commands) and `unquote` (one pair of
`"` or `\"\"\"` stripped, nothing unescaped), and api/types.go `Options`/`Runner` with `FormatParams`
(a PARAMETER must name one of their json fields and parse as its Go type).
"""

from __future__ import annotations

import re

from helpers import make_reference_tokenizer

from mythos_convert.data.tokenizer import load_tokenizer, special_tokens
from mythos_convert.export.modelfile import modelfile_text

COMMANDS = {"from", "license", "template", "system", "adapter", "draft", "renderer", "parser", "parameter"}
COMMANDS |= {"message", "requires"}
FLOAT, INT, STRINGS = float, int, str
OPTIONS = {  # json tag -> Go kind, api/types.go Options + Runner (bool pointers omitted: never written)
    "num_keep": INT, "seed": INT, "num_predict": INT, "top_k": INT, "top_p": FLOAT, "min_p": FLOAT,
    "typical_p": FLOAT, "repeat_last_n": INT, "temperature": FLOAT, "repeat_penalty": FLOAT,
    "presence_penalty": FLOAT, "frequency_penalty": FLOAT, "stop": STRINGS, "num_ctx": INT, "num_batch": INT,
    "num_gpu": INT, "num_thread": INT, "draft_num_predict": INT,
}  # fmt: skip


def unquote(s: str) -> str:
    if s.startswith('"""'):
        assert len(s) >= 6 and s.endswith('"""'), s
        return s[3:-3]
    if s.startswith('"'):
        assert len(s) >= 2 and s.endswith('"'), s
        return s[1:-1]
    return s


def parse(text: str) -> list[tuple[str, str, str]]:
    """(command, parameter name or '', value) per command; comments and blank lines skipped."""
    out = []
    for match in re.finditer(r'^(\w+)\s+("""[\s\S]*?"""|.*)$', text, re.M):
        command, rest = match.group(1).lower(), match.group(2)  # `#` lines never match \w+
        if command == "parameter":
            name, value = rest.split(None, 1)
            out.append((command, name, unquote(value.strip())))
        else:
            out.append((command, "", unquote(rest.strip())))
    return out


def test_modelfile_commands_and_parameters_parse_in_ollama(tmp_path):
    tok = load_tokenizer(make_reference_tokenizer(tmp_path / "tokenizer.json"))
    generation = {"temperature": 0.7, "top_p": 0.95, "top_k": 40, "repetition_penalty": 1.1}
    text = modelfile_text("m-Q4_K_M.gguf", tok, generation, 128)
    commands = parse(text)
    assert {c for c, _, _ in commands} == {"from", "template", "parameter"}
    assert all(c in COMMANDS for c, _, _ in commands)
    params = {}
    for command, name, value in commands:
        if command == "parameter":
            assert name in OPTIONS, f"Ollama refuses PARAMETER {name}: unknown parameter"
            params[name] = OPTIONS[name](value)
    assert params == {
        "temperature": 0.7, "top_p": 0.95, "top_k": 40, "repeat_penalty": 1.1,
        "stop": special_tokens(tok).token("eos"), "num_ctx": 128,
    }  # fmt: skip
    assert ("from", "", "./m-Q4_K_M.gguf") in commands
    assert ("template", "", "{{ .Prompt }}") in commands
