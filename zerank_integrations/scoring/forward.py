"""The forward passes: transformer body, then one dot product with the "Yes" row.

A causal LM head would compute logits for all ~152k vocabulary entries at every position; zerank needs one
number per pair. So the body runs without KV cache (``use_cache=False``) on right-padded rows — padding at
the end never influences real tokens under causal attention, so no attention mask is needed and SDPA can use
its causal fast path — and the hidden state at each row's last real token is projected on the "Yes" row.

With a shared query prefix, the prefix's keys/values are computed once and broadcast to every row of the
batch; only the document tokens are run, which pays when queries are long.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from zerank_integrations.scoring.loading import LoadedModel


def _padded(rows: Sequence[Sequence[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(row) for row in rows], dtype=torch.long)
    ids = torch.full((len(rows), int(lengths.max())), pad_id, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
    return ids.to(device, non_blocking=True), lengths.to(device, non_blocking=True)


def _project(loaded: LoadedModel, hidden: torch.Tensor, lengths: torch.Tensor) -> list[float]:
    last = hidden[torch.arange(hidden.shape[0], device=hidden.device), lengths - 1]
    logits = last.float() @ loaded.yes_row.to(last.device) + loaded.yes_bias
    return logits.cpu().tolist()


@torch.inference_mode()
def yes_logits_full(loaded: LoadedModel, rows: Sequence[Sequence[int]]) -> list[float]:
    """ "Yes" logits of complete prompts, one per row."""
    ids, lengths = _padded(rows, loaded.pad_token_id, loaded.device)
    with loaded.lock:
        hidden = loaded.body(input_ids=ids, use_cache=False).last_hidden_state
        return _project(loaded, hidden, lengths)


@torch.inference_mode()
def encode_prefix(loaded: LoadedModel, prefix: Sequence[int]) -> object:
    """Keys/values of a shared prefix (batch of one), to be reused by :func:`yes_logits_after_prefix`."""
    ids = torch.tensor([list(prefix)], dtype=torch.long, device=loaded.device)
    with loaded.lock:
        return loaded.body(input_ids=ids, use_cache=True).past_key_values


@torch.inference_mode()
def yes_logits_after_prefix(loaded: LoadedModel, prefix_cache: object, rows: Sequence[Sequence[int]]) -> list[float]:
    """ "Yes" logits of prompts ``prefix + row``, computing only the rows' tokens."""
    ids, lengths = _padded(rows, loaded.pad_token_id, loaded.device)
    cache = copy.deepcopy(prefix_cache)  # the forward appends to it; the prefix stays reusable
    cache.batch_repeat_interleave(len(rows))  # type: ignore[attr-defined]
    with loaded.lock:
        hidden = loaded.body(input_ids=ids, past_key_values=cache, use_cache=True).last_hidden_state
        return _project(loaded, hidden, lengths)
