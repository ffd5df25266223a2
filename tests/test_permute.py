"""The one q/k permutation: q rows per query head, k rows per key/value head, on labelled rows."""

from __future__ import annotations

import numpy as np
from helpers import tiny_config

from mythos_convert.formats.permute import TRANSFORMS, head_count, unpermute

CFG = tiny_config(512)  # 4 query heads, 2 key/value heads, head_dim 16


def test_q_uses_the_query_heads_and_k_the_key_value_heads():
    assert (head_count("permute_q", CFG), head_count("permute_k", CFG)) == (4, 2)


def test_k_rows_interleave_within_each_key_value_head():
    k = np.arange(2 * 16, dtype=np.float32)[:, None]  # row r holds r: 2 heads of 16 rows
    rows = TRANSFORMS["permute_k"](k, CFG)[:, 0].astype(int).tolist()
    # head 0: rotation pairs (j, j + 8) become consecutive rows; head 1 the same from 16
    assert rows[:4] == [0, 8, 1, 9] and rows[16:20] == [16, 24, 17, 25]


def test_each_transform_is_undone_on_the_way_back():
    rng = np.random.default_rng(0)
    for transform, rows in (("permute_q", 4 * 16), ("permute_k", 2 * 16)):
        w = rng.standard_normal((rows, 64)).astype(np.float32)
        assert np.array_equal(unpermute(TRANSFORMS[transform](w, CFG), transform, CFG), w)
