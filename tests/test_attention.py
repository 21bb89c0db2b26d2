"""The "zerank" attention: copy-free prefix reuse and padding-free (packed) rows, against plain attention.

Scores with prefix reuse are checked against the references in test_scoring.py / test_families.py; here
the pieces: the exact merge of two partial attentions, the math fallback against torch's fused kernel, and
the packed-rows path (flash-attn's varlen kernel on a GPU; its per-row reference here) against padded rows.
"""

from __future__ import annotations

import dataclasses
import random
import threading
from pathlib import Path

import pytest
import torch

from zerank_integrations import ZerankScorer
from zerank_integrations.scoring.attention import PackedRows, _math_attention, attend, merge
from zerank_integrations.scoring.prompts import Piece


def _plain_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, causal_from: int) -> torch.Tensor:
    """softmax(q kᵀ / √d) v written out; query i sees keys up to ``causal_from + i``."""
    scores = query.double() @ key.double().transpose(-1, -2) / query.shape[-1] ** 0.5
    rows, cols = scores.shape[-2:]
    visible = torch.arange(cols)[None, :] <= torch.arange(rows)[:, None] + causal_from
    return torch.softmax(scores.masked_fill(~visible, float("-inf")), dim=-1) @ value.double()


def test_merging_two_partial_attentions_is_exact() -> None:
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(2, 4, 7, 16, generator=generator) * 3  # large logits: the merge must stay stable
    prefix_k, prefix_v = torch.randn(2, 4, 11, 16, generator=generator), torch.randn(2, 4, 11, 16, generator=generator)
    own_k, own_v = torch.randn(2, 4, 7, 16, generator=generator), torch.randn(2, 4, 7, 16, generator=generator)
    scale = 16**-0.5
    out_prefix, lse_prefix = attend(query, prefix_k, prefix_v, causal=False, scale=scale)
    out_own, lse_own = attend(query, own_k, own_v, causal=True, scale=scale)
    merged = merge(out_own, lse_own, out_prefix, lse_prefix)
    expected = _plain_attention(query, torch.cat([prefix_k, own_k], 2), torch.cat([prefix_v, own_v], 2), 11)
    assert torch.allclose(merged.double(), expected, atol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_math_fallback_equals_the_fused_kernel(causal: bool) -> None:
    generator = torch.Generator().manual_seed(1)
    query, key, value = (torch.randn(3, 2, 9, 8, generator=generator) for _ in range(3))
    fused_out, fused_lse = attend(query, key, value, causal=causal, scale=0.3)
    math_out, math_lse = _math_attention(query, key, value, causal=causal, scale=0.3)
    assert torch.allclose(fused_out, math_out, atol=1e-5) and torch.allclose(fused_lse, math_lse, atol=1e-5)


def test_packed_rows_know_their_bounds() -> None:
    packed = PackedRows.of([3, 1, 4], torch.device("cpu"))
    assert packed.starts.tolist() == [0, 3, 4, 8] and packed.starts.dtype == torch.int32
    assert packed.bounds() == [(0, 3), (3, 4), (4, 8)] and packed.longest == 4


def test_packed_rows_score_like_padded_rows(checkpoint_dir: Path) -> None:
    """Padding-free rows (as on a GPU with flash-attn) give the padded path's scores, with and without a prefix."""
    forward = ZerankScorer(str(checkpoint_dir)).loaded_model.forward
    assert forward.supports_prefix_reuse and not forward.packed  # CPU: padded SDPA rows
    packed = dataclasses.replace(forward, packed=True, lock=threading.Lock())
    rng = random.Random(5)
    rows = [Piece(tuple(rng.randrange(200, 150_000) for _ in range(rng.randint(1, 90)))) for _ in range(9)]
    assert packed.full(rows) == pytest.approx(forward.full(rows), abs=1e-4)
    prefix = Piece(tuple(rng.randrange(200, 150_000) for _ in range(60)))
    encoded = forward.encode_prefix(prefix)
    assert len(encoded) == 60 and encoded.keys[0].shape[0] == 1  # one copy, whatever the number of rows
    whole = forward.full([prefix + row for row in rows])
    assert forward.after_prefix(encoded, rows) == pytest.approx(whole, abs=1e-4)
    assert packed.after_prefix(encoded, rows) == pytest.approx(whole, abs=1e-4)


def test_prefix_reuse_keeps_no_per_row_copy(checkpoint_dir: Path) -> None:
    """The prefix's keys/values are the same tensors before and after scoring many rows: never repeated or
    appended to (the former path deep-copied them and repeated them for every row)."""
    forward = ZerankScorer(str(checkpoint_dir)).loaded_model.forward
    prefix = Piece(tuple(range(1000, 1200)))
    encoded = forward.encode_prefix(prefix)
    snapshot = [key.clone() for key in encoded.keys]
    pointers = [key.data_ptr() for key in encoded.keys]
    forward.after_prefix(encoded, [Piece((5, 6, 7))] * 32)
    assert [key.data_ptr() for key in encoded.keys] == pointers
    assert all(torch.equal(key, before) for key, before in zip(encoded.keys, snapshot, strict=True))
    assert all(key.shape == (1, key.shape[1], 200, key.shape[3]) for key in encoded.keys)
