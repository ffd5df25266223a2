"""What verify feeds the engines and how it states its gates, against values written out here.

- `sequences`: the four English prompts tokenized without specials, `<bos>` first when the
  tokenizer has one (the random sequence too), the seeded random ids recomputed with torch here,
  every sequence cut to leave room for 32 greedy tokens in the context.
- `describe_tolerance`: the words verify.json and the table use for each kind of gate.
"""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers

from mythos_convert.data.tokenizer import load_tokenizer
from mythos_convert.verify.gates import Tolerance, describe_tolerance
from mythos_convert.verify.inputs import sequences

TEXTS = (
    "The capital of France is",
    "Once upon a time, in a small village at the edge of the forest, there lived an old woman who",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
    (
        "In the beginning the model knew nothing at all. It read a great many documents, one token at a "
        "time, and after every token it guessed the next one and was told how wrong the guess had been. "
        "Slowly the guesses improved, until the model could continue a sentence it had never seen before."
    ),
)


def _random_ids(vocab: int) -> list[int]:
    """48 ids from torch's generator seeded 1234, drawn here (not through the module under test)."""
    return torch.randint(0, vocab, (48,), generator=torch.Generator().manual_seed(1234)).tolist()


@pytest.mark.parametrize("max_len", [128, 60, 40])
def test_sequences_are_bos_then_the_prompts_and_the_random_ids_cut_for_32_greedy_tokens(ref_tokenizer_path, max_len):
    tok = load_tokenizer(ref_tokenizer_path)
    seqs = sequences(tok, 512, max_len)
    assert len(seqs) == 5
    bos = 1  # <unk> <bos> <eos> <pad> <sep> in id order
    for seq, text in zip(seqs[:4], TEXTS, strict=True):
        want = [bos, *tok.encode(text, add_special_tokens=False).ids][: max_len - 32]
        assert seq == want
    assert seqs[4] == [bos, *_random_ids(512)][: max_len - 32]
    assert all(len(s) <= max_len - 32 for s in seqs)
    assert max(len(s) for s in seqs) == max_len - 32  # the long prompt reaches the cut
    assert 2 not in {s[-1] for s in seqs[:4]}  # no <eos> appended by the post-processor


def test_sequences_without_a_bos_token_start_with_content():
    vocab = {w: i for i, w in enumerate(["[UNK]", "The", "capital", "of", "France", "is"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    seqs = sequences(tok, 300, 80)
    assert seqs[0] == [1, 2, 3, 4, 5]
    assert seqs[4] == _random_ids(300)
    assert len(seqs[4]) == 48 and max(seqs[4]) < 300


@pytest.mark.parametrize(
    "tol, text",
    [
        (None, "no gate for this type: logits must be finite"),
        (Tolerance(max_abs_diff=1e-5, min_argmax_agreement=1.0), "max<=1e-05, top-1>=1, greedy equal"),
        (
            Tolerance(max_abs_diff=0.05, mean_abs_diff=0.006, min_argmax_agreement=0.965, greedy_must_match=False),
            "max<=0.05, mean<=0.006, top-1>=0.965",
        ),
        (
            Tolerance(max_abs_diff=None, greedy_must_match=False, mean_kl=0.21, p99_kl=0.54),
            "mean KL<=0.21, p99 KL<=0.54",
        ),
        (Tolerance(max_abs_diff=0.123456), "max<=0.123, greedy equal"),
        (Tolerance(max_abs_diff=None, mean_abs_diff=0.0004321, greedy_must_match=False), "mean<=0.000432"),
        (Tolerance(max_abs_diff=None, greedy_must_match=False), ""),
    ],
)
def test_a_tolerance_is_stated_in_words(tol, text):
    assert describe_tolerance(tol) == text
