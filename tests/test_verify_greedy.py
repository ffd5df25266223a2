"""Greedy comparisons fail on a difference at any step, the last one included (HF and GGUF).

Stand-in engines whose next token is a known rule (`NEXT`), so each test decides exactly which step
differs; the real engines' greedy runs are covered end to end by test_verify_tampered.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mythos_convert.verify.gguf as gguf_verify
from mythos_convert.engines.base import greedy_continue
from mythos_convert.engines.llamacpp import llama_engine_of, llama_greedy_fn, llama_logits
from mythos_convert.verify.hf import _greedy_difference
from mythos_convert.verify.inputs import greedy_prompts

VOCAB = 11


def NEXT(token: int) -> int:
    return (3 * token + 2) % VOCAB


def one_hot_rows(ids: list[int], differ_at: int | None = None) -> torch.Tensor:
    """Logits [T, V] whose row t picks NEXT(ids[t]); row `differ_at` (0-based) picks the token after that."""
    rows = torch.zeros(len(ids), VOCAB)
    for t, token in enumerate(ids):
        rows[t, (NEXT(token) + (1 if t == differ_at else 0)) % VOCAB] = 2.0
    return rows


def native_tokens(prompt: list[int], n: int = 32) -> list[int]:
    out, last = [], prompt[-1]
    for _ in range(n):
        last = NEXT(last)
        out.append(last)
    return out


class Output(dict):
    @property
    def logits(self) -> torch.Tensor:
        return self["logits"]


class TeacherForcedHF:
    """transformers' calling convention (`cache=`); row `differ_at` of the continuation is off by one id."""

    def __init__(self, differ_at: int | None) -> None:
        self.differ_at = differ_at

    def forward(self, input_ids: torch.Tensor, use_cache: bool = True, cache=None) -> Output:
        logits = one_hot_rows(input_ids[0].tolist(), self.differ_at)
        return Output(logits=logits[None], cache=cache)

    __call__ = forward


PROMPT = [1, 4, 9]


@pytest.mark.parametrize(("differ_at", "step"), [(None, None), (0, 2), (15, 17), (30, 32)])
def test_hf_greedy_difference_at_any_step_is_named(differ_at, step):
    native = native_tokens(PROMPT)
    prompt_logits = one_hot_rows(PROMPT)
    got = _greedy_difference(TeacherForcedHF(differ_at), prompt_logits, None, native)
    if step is None:
        assert got is None
        return
    assert got is not None
    want = native[step - 1]
    assert got.startswith(
        f"transformers' greedy token {step} of 32 (position {3 + step} of the sequence) is id "
        f"{(want + 1) % VOCAB}, the native model's is id {want} (transformers' logits 2 and 0)"
    ), got


def test_hf_greedy_difference_at_the_prompts_last_row():
    native = native_tokens(PROMPT)
    prompt_logits = one_hot_rows(PROMPT, differ_at=2)
    got = _greedy_difference(TeacherForcedHF(None), prompt_logits, None, native)
    assert got is not None and got.startswith("transformers' greedy token 1 of 32 (position 4 ")
    assert _greedy_difference(TeacherForcedHF(0), prompt_logits, None, []) is None
    assert _greedy_difference(TeacherForcedHF(None), one_hot_rows(PROMPT), None, native[:1]) is None


class FakeLlama:
    """llama-cpp-python's `Llama` as verify uses it: reset, eval (appends to the cache), scores per position."""

    def __init__(self, differ_at_position: int | None = None) -> None:
        self.differ_at = differ_at_position
        self.ids: list[int] = []
        self.scores = np.zeros((128, VOCAB), dtype=np.float32)
        self.evals: list[list[int]] = []

    def reset(self) -> None:
        self.ids = []

    def eval(self, tokens: list[int]) -> None:
        self.evals.append(list(tokens))
        for token in tokens:
            position = len(self.ids)
            self.ids.append(token)
            row = np.zeros(VOCAB, dtype=np.float32)
            row[(NEXT(token) + (1 if position == self.differ_at else 0)) % VOCAB] = 2.0
            self.scores[position] = row


class RuleReference:
    """A `NativeReference` whose greedy tokens follow the rule (the native decoder itself is tested
    against the reference implementation below)."""

    def __init__(self, seqs: list[list[int]]) -> None:
        self.seqs = seqs
        self.greedy = {i: native_tokens(seqs[i]) for i in greedy_prompts(seqs)}


SEQS = [[1, 2], [5, 6, 7, 8, 9], [3, 3, 3], [4]]


@pytest.mark.parametrize(
    ("seq", "position", "equal"),
    [
        (None, None, True),
        (0, 1, False),  # the first prompt's last row picks greedy token 1
        (0, 32, False),  # token k comes from position len + k - 2: the first prompt's last greedy token
        (0, 33, True),  # past the last greedy token: never computed
        (1, 35, False),  # the longest prompt's last greedy token
        (2, 1, True),  # a prompt neither first nor longest is not decoded
    ],
)
def test_gguf_greedy_parity_checks_every_step_of_both_prompts(seq, position, equal):
    """A llama.cpp whose argmax is off at one position of one prompt fails greedy parity exactly there."""

    class PerPrompt(FakeLlama):
        def reset(self) -> None:
            super().reset()

        def eval(self, tokens: list[int]) -> None:
            if not self.ids:  # a prefill: which prompt is this?
                self.differ_at = position if seq is not None and tokens == SEQS[seq] else None
            super().eval(tokens)

    engine = llama_engine_of(PerPrompt(), "x.gguf", "F32", VOCAB)
    assert gguf_verify._greedy_parity(RuleReference(SEQS), engine) is equal


def test_gguf_greedy_runs_one_cached_step_per_token():
    llm = FakeLlama()
    tokens = greedy_continue(llama_greedy_fn(llm), [5, 6], n=4)
    assert tokens == native_tokens([5, 6], 4)
    assert llm.evals == [[5, 6], [tokens[0]], [tokens[1]], [tokens[2]]]
    assert llm.ids == [5, 6, *tokens[:3]]


def test_gguf_llama_logits_start_from_an_empty_cache():
    llm = FakeLlama()
    llm.eval([7, 7, 7])
    logits = llama_logits(llm, [1, 2])
    assert logits.shape == (2, VOCAB) and logits.dtype == torch.float32
    assert logits.argmax(-1).tolist() == [NEXT(1), NEXT(2)] and llm.ids == [1, 2]


def test_native_greedy_decodes_the_reference_implementations_tokens(reference):
    """verify's native decoder (prefill, then one cached step per token) on the reference's own
    checkpoint gives the greedy tokens the reference implementation wrote, and as many as verify compares."""
    from helpers import REFERENCE, REFERENCE_LOGITS_ATOL

    from mythos_convert.engines.native import native_greedy
    from mythos_convert.formats.checkpoint import load_checkpoint, load_model

    model = load_model(load_checkpoint(REFERENCE / "ref_small.pt")).eval()
    for ids, last, greedy in zip(reference["ids"], reference["logits_last"], reference["greedy"], strict=True):
        logits, tokens = native_greedy(model, list(ids), 32)
        assert logits.shape == (len(ids), 512)
        assert (logits[-1] - torch.tensor(last)).abs().max().item() <= REFERENCE_LOGITS_ATOL
        assert len(tokens) == 32 and tokens[:20] == greedy[len(ids) :]
        # the cache is cleared: a second run from scratch gives the same tokens
        assert native_greedy(model, list(ids), 32)[1] == tokens
