"""A searched file's recipe (GGUF tensor name -> type), as llama.cpp's own tools take it and as GGUF metadata.

llama-quantize takes per-tensor types with `--tensor-type PATTERN=TYPE` (`parse_tensor_type` in
`tools/quantize/quantize.cpp`): PATTERN is lowercased and used as a regular expression with
`std::regex_search` (`llama_tensor_get_type` in `src/llama-quant.cpp`), TYPE is matched to
`ggml_type_name` ignoring case. A search match is a substring match, so a plain name is not
exact: `output.weight` also matches `blk.0.attn_output.weight`, and which pattern wins has
changed between versions (the last match once, the first match, with `break`, now). Each
pattern written here is therefore the anchored, escaped name (`^blk\\.0\\.attn_q\\.weight$`):
it matches its one tensor, in any order, in either version. llama.cpp applies the row-size
fallback (`tensor_type_fallback`) after an override, so a recipe already holds the fallback
types and llama.cpp changes nothing. The same arguments, one per line, are a
`--tensor-type-file`.

In the file the recipe is `mythos.quantize.tensor_types`: an array of strings `NAME=TYPE`,
in file order, TYPE as gguf-py spells it (`Q4_K`, `F16`). An array of short strings is what
`gguf-dump` and the Hub's viewer show readably, and each entry is one `--tensor-type` away.
"""

from __future__ import annotations

import re
import shlex

import gguf

from mythos_convert.errors import MythosError

Q = gguf.GGMLQuantizationType
KEY_RECIPE = "mythos.quantize.tensor_types"
KEY_TARGET = "mythos.quantize.target"  # the budget the recipe was chosen for: `bpw4.50`, `size95MB`
_NAME = re.compile(r"^[a-z0-9_.]+$")


def to_pattern(name: str) -> str:
    """The anchored regular expression that matches exactly one GGUF tensor name."""
    return "^" + re.escape(name) + "$"


def from_pattern(pattern: str) -> str:
    """The tensor name an anchored pattern of `to_pattern` matches (a plain name passes through)."""
    body = pattern.removeprefix("^").removesuffix("$")
    return re.sub(r"\\(.)", r"\1", body)


def type_of(text: str) -> gguf.GGMLQuantizationType:
    """A ggml type name in any case (`q4_k`, `Q4_K`), as llama-quantize's `parse_ggml_type` reads it."""
    for qtype in Q:
        if qtype.name.lower() == text.strip().lower():
            return qtype
    raise MythosError(f"unknown tensor type {text!r}: use a ggml type name such as Q4_K, Q6_K, Q8_0 or F16")


def tensor_type_args(recipe: dict[str, gguf.GGMLQuantizationType]) -> list[str]:
    """`--tensor-type PATTERN=type` pairs, one per tensor, in recipe order (argv items)."""
    args: list[str] = []
    for name, qtype in recipe.items():
        args += ["--tensor-type", f"{to_pattern(name)}={qtype.name.lower()}"]
    return args


def command_line(
    recipe: dict[str, gguf.GGMLQuantizationType],
    src: str = "model-F32.gguf",
    dst: str = "out.gguf",
    imatrix: str | None = None,
) -> str:
    """The llama-quantize command that writes the same types (shell-quoted: the patterns hold `\\` and `$`).

    The base type Q8_0 only makes llama.cpp quantize at all (`ggml_is_quantized(default_type)`);
    every matrix is overridden, norms stay F32. From an F32 file (`gguf --outtype f32`) llama.cpp
    writes the same bytes; from F16 it quantizes the F16-rounded weights.
    """
    weighted = ["--imatrix", imatrix] if imatrix else []
    return shlex.join(["llama-quantize", *weighted, *tensor_type_args(recipe), src, dst, "Q8_0"])


def parse_tensor_types(text: str) -> dict[str, gguf.GGMLQuantizationType]:
    """Read the overrides back from a llama-quantize command line (the item after each
    `--tensor-type`) or from a `--tensor-type-file` (every item).

    Raises:
        MythosError: an item without `=`, an unknown type, or a pattern that is not one tensor's name.
    """
    items = shlex.split(text)
    if "--tensor-type" in items:
        items = [items[i + 1] for i, item in enumerate(items[:-1]) if item == "--tensor-type"]
    out: dict[str, gguf.GGMLQuantizationType] = {}
    for item in items:
        pattern, sep, type_name = item.partition("=")
        name = from_pattern(pattern.lower())
        if not sep or not _NAME.match(name):
            raise MythosError(
                f"{item!r} is not one tensor's PATTERN=TYPE: write {to_pattern('blk.0.attn_q.weight')}=q4_k"
            )
        out[name] = type_of(type_name)
    return out


def metadata_value(recipe: dict[str, gguf.GGMLQuantizationType]) -> list[str]:
    """The value stored under KEY_RECIPE: `NAME=TYPE` strings in file order."""
    return [f"{name}={qtype.name}" for name, qtype in recipe.items()]


def parse_metadata(value: list[str]) -> dict[str, gguf.GGMLQuantizationType]:
    """KEY_RECIPE's value read back into a recipe."""
    out: dict[str, gguf.GGMLQuantizationType] = {}
    for entry in value:
        name, sep, type_name = entry.partition("=")
        if not sep:
            raise MythosError(f"{KEY_RECIPE} entry {entry!r} is not NAME=TYPE: the file's recipe is damaged")
        out[name] = type_of(type_name)
    return out


def entry_bytes(name: str, qtype: gguf.GGMLQuantizationType) -> int:
    """Bytes one recipe entry takes in the GGUF key/value section (a u64 length, then the text)."""
    return 8 + len(name) + 1 + len(qtype.name)


def key_bytes() -> int:
    """Bytes of KEY_RECIPE itself: key length and text, value type, item type, item count."""
    return 8 + len(KEY_RECIPE) + 4 + 4 + 8
