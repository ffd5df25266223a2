"""A Python port of the tokenizer of Ollama's Go engine for `llama` GGUFs, read from a GGUF with gguf-py.

Ollama ran Llama GGUFs in its own Go engine only when started with OLLAMA_NEW_ENGINE=1 (llm/server.go:
`envconfig.NewEngine() || f.KV().OllamaEngineRequired()`, and "llama" is never in fs/ggml/ggml.go's
OllamaEngineRequired list), from 0.5.12 until 0.30.0 replaced every engine with llama-server (#16031).
Without that variable those releases ran the file in their vendored llama.cpp. The Go engine chose
its split regex three ways over time, each ported here as `era_*` (github.com/ollama/ollama):

- 0.5.12 to 0.11.x, ported from v0.11.11 (92b96d54efd6b49322b7cf046f9a0dc16b00cd0a):
  model/models/llama/model.go `New` reads `tokenizer.ggml.pretokenizer` (a regex), default Llama-3's;
  model/bytepairencoding.go (split: matches only, regexp2.None; merges loop; byte map) and
  model/vocabulary.go (special tokens: CONTROL and USER_DEFINED; BOS/EOS added by `addSpecials`).
- 0.12.0 to 0.12.1, v0.12.0 (564b558c9, #12308): Llama-3's regex for every `gpt2` vocabulary, no key read.
- 0.12.2 to 0.24.x, ported from f63eea3d273816ffc27fbeb0662ab44d236abc45 (the parent of #16031):
  model/models/llama/model.go switches on `tokenizer.ggml.pre` ("default" -> GPT-2's regex, the
  default in tokenizer/bytepairencoding.go; "qwen2", "refact", "tekken"; anything else -> Llama-3's),
  and the split also yields the text between matches (regexp2.RE2).

Go's regexp2 is .NET-flavoured (lookahead, \\p{L}); the `regex` module runs the same patterns. The
merge queue is github.com/emirpasic/gods/v2 trees/binaryheap (ordered by merge rank only), ported
as `GodsHeap` so equal-rank pairs pop in the order Ollama pops them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import gguf
import regex

LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
DEFAULT_BPE_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
NAMED_REGEXES = {  # f63eea3d27 model/models/llama/model.go, `switch c.String("tokenizer.ggml.pre")`
    "default": [],
    "qwen2": [
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
        r"|\s*[\r\n]+|\s+(?!\S)|\s+"
    ],
    "refact": [r"\p{N}", r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"],
}
TOKEN_TYPE_CONTROL, TOKEN_TYPE_USER_DEFINED = 3, 4


def read_keys(path: Path) -> dict:
    """The GGUF's key/value section, as gguf-py reads it."""
    return {name: f.contents() for name, f in gguf.GGUFReader(path).fields.items() if not name.startswith("GGUF.")}


def era_0_5_12(keys: dict) -> list[str]:
    """v0.11.11: `c.String("tokenizer.ggml.pretokenizer", <Llama-3 regex>)`."""
    return [keys.get("tokenizer.ggml.pretokenizer") or LLAMA3_REGEX]


def era_0_12_0(keys: dict) -> list[str]:
    """v0.12.0: the Llama-3 regex, whatever the file says."""
    return [LLAMA3_REGEX]


def era_0_12_2(keys: dict) -> list[str]:
    """f63eea3d27: a name from `tokenizer.ggml.pre`; unknown names get Llama-3's regex."""
    return NAMED_REGEXES.get(keys.get("tokenizer.ggml.pre", ""), [LLAMA3_REGEX]) or [DEFAULT_BPE_REGEX]


class GodsHeap:
    """gods/v2 binaryheap with Ollama's comparator `cmp.Compare(i.rank, j.rank)`: Push = bubbleUp, Pop = swap+bubbleDown."""

    def __init__(self) -> None:
        self.items: list[Pair] = []

    def push(self, item: Pair) -> None:
        items, index = self.items, len(self.items)
        items.append(item)
        while index > 0:
            parent = (index - 1) >> 1
            if items[parent].rank <= items[index].rank:
                break
            items[index], items[parent] = items[parent], items[index]
            index = parent

    def pop(self) -> Pair:
        items = self.items
        top, last = items[0], len(items) - 1
        items[0], items[last] = items[last], items[0]
        items.pop()
        index, size = 0, len(items)
        while (left := index * 2 + 1) < size:
            smaller, right = left, index * 2 + 2
            if right < size and items[left].rank > items[right].rank:
                smaller = right
            if items[index].rank > items[smaller].rank:
                items[index], items[smaller] = items[smaller], items[index]
            else:
                break
            index = smaller
        return top


@dataclass
class Pair:
    a: int
    b: int
    rank: int
    value: str


@dataclass
class OllamaBPE:
    """model.BytePairEncoding + model.Vocabulary for one GGUF, under one era's regex choice."""

    regexes: list[str]
    values: list[str]
    types: list[int]
    merges: list[str]
    bos: int
    add_bos: bool
    keep_gaps: bool  # the multi-regex split (0.12.2+) also yields the text between matches
    _ids: dict[str, int] = field(init=False)
    _ranks: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        self._ids = {}
        for i, value in enumerate(self.values):
            self._ids[value] = i  # Go's map assignment: a later duplicate wins
        self._ranks = {m: i for i, m in enumerate(self.merges)}
        self._compiled = [regex.compile(p) for p in self.regexes]

    @classmethod
    def from_gguf(cls, path: Path, era: Callable[[dict], list[str]]) -> OllamaBPE:
        keys = read_keys(path)
        if keys.get("tokenizer.ggml.model") != "gpt2":
            raise ValueError("the Go engine runs a BytePairEncoding only for tokenizer.ggml.model 'gpt2'")
        return cls(
            regexes=era(keys),
            values=list(keys["tokenizer.ggml.tokens"]),
            types=[int(t) for t in keys["tokenizer.ggml.token_type"]],
            merges=list(keys["tokenizer.ggml.merges"]),
            bos=int(keys.get("tokenizer.ggml.bos_token_id", 0)),
            add_bos=bool(keys.get("tokenizer.ggml.add_bos_token", True)),
            keep_gaps=era is era_0_12_2,
        )

    def special_vocabulary(self) -> list[str]:
        kinds = (TOKEN_TYPE_CONTROL, TOKEN_TYPE_USER_DEFINED)
        return [v for v, t in zip(self.values, self.types, strict=True) if t in kinds]

    def split(self, text: str) -> Iterator[str]:
        parts = [text]
        for pattern in self._compiled:
            out: list[str] = []
            for part in parts:
                offset = 0
                for m in pattern.finditer(part):
                    if self.keep_gaps and m.start() != offset:
                        out.append(part[offset : m.start()])
                    out.append(m.group())
                    offset = m.end()
                if self.keep_gaps and offset < len(part):
                    out.append(part[offset:])
            parts = out
        return iter(parts)

    def encode(self, text: str, add_special: bool) -> list[int]:
        fragments: list[tuple[str, list[int]]] = [(text, [])]
        for special in self.special_vocabulary():
            token_id = self._ids.get(special, -1)
            i = 0
            while i < len(fragments):
                value, ids = fragments[i]
                if ids or (at := value.find(special)) < 0:
                    i += 1
                    continue
                middle = [(value[:at], [])] if at > 0 else []
                middle.append((special, [token_id]))
                if rest := value[at + len(special) :]:
                    middle.append((rest, []))
                fragments[i : i + 1] = middle
                i += 1
        out: list[int] = []
        for value, ids in fragments:
            if ids:
                out += ids
                continue
            for piece in self.split(value):
                out += self._bpe(piece)
        if add_special and out and self.add_bos:
            out = [self.bos, *out]
        return out

    def _bpe(self, piece: str) -> list[int]:
        text = "".join(chr(_byte_rune(b)) for b in piece.encode("utf-8"))
        if (whole := self._ids.get(text, -1)) >= 0:
            return [whole]
        runes = [[c] for c in text]
        prev = list(range(-1, len(text) - 1))
        nxt = list(range(1, len(text) + 1))

        def pairwise(a: int, b: int) -> Pair | None:
            if a < 0 or b >= len(text):
                return None
            left, right = "".join(runes[a]), "".join(runes[b])
            rank = self._ranks.get(left + " " + right, -1)
            return None if rank < 0 else Pair(a, b, rank, left + right)

        heap = GodsHeap()
        for i in range(len(text) - 1):
            if p := pairwise(i, i + 1):
                heap.push(p)
        while heap.items:
            p = heap.pop()
            left, right = runes[p.a], runes[p.b]
            if not left or not right or "".join(left) + "".join(right) != p.value:
                continue
            if self._ids.get(p.value, -1) < 0:
                continue
            runes[p.a], runes[p.b] = left + right, []
            nxt[p.a] = nxt[p.b]
            if nxt[p.b] < len(text):
                prev[nxt[p.b]] = p.a
            if q := pairwise(prev[p.a], p.a):
                heap.push(q)
            if q := pairwise(p.a, nxt[p.a]):
                heap.push(q)
        return [self._ids[s] for r in runes if r and (s := "".join(r)) in self._ids]


def _byte_rune(b: int) -> int:
    """bytepairencoding.go's byte -> rune map (GPT-2's bytes_to_unicode)."""
    if b == 0x00AD:
        return 0x0143
    if b <= 0x0020:
        return b + 0x0100
    if 0x007F <= b <= 0x00A0:
        return b + 0x00A2
    return b
