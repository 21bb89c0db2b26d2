"""The forward passes: one per head kind a family can declare.

``CausalHeadForward`` (zerank, Qwen3-Reranker, mxbai): a causal LM head would compute logits for all ~152k
vocabulary entries at every position; a reranker needs one number per pair. The transformer body runs
without KV cache on right-padded rows (padding at the end never influences real tokens under causal
attention, so no attention mask is needed and SDPA can use its causal fast path), and the hidden state at
each row's last real token is dotted with one precomputed row: the "Yes" row for a ``TokenLogit`` head,
``W[true] - W[false]`` for a ``LogitDifference`` head.

With a shared query prefix, the prefix's keys/values are computed once (:meth:`encode_prefix`) and the rows
that continue it run only their own tokens, at positions after the prefix; the ``"zerank"`` attention
(``scoring.attention``) attends to the single copy of the prefix without repeating it per row. With
``packed`` (CUDA + flash-attn), rows are concatenated without padding and attention stays within each row.

``ClassifierForward`` (cross-encoders): the ``*ForSequenceClassification`` model itself on right-padded rows
with an attention mask and token type ids; raw = the logit (one label) or logit[1] - logit[0] (two).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from zerank_integrations.scoring.attention import PackedRows, PrefixKV
from zerank_integrations.scoring.prompts import Piece


def _padded(rows: Sequence[Piece], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(row) for row in rows], dtype=torch.long)
    ids = torch.full((len(rows), int(lengths.max())), pad_id, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.as_tensor(row.ids, dtype=torch.long)
    return ids.to(device, non_blocking=True), lengths.to(device, non_blocking=True)


@dataclass
class CausalHeadForward:
    """Transformer body + one projection row: the fast path of every causal-LM family."""

    body: torch.nn.Module  # the transformer without its vocabulary head
    row: torch.Tensor  # float32 (hidden_size,): the head row, or the difference of two rows
    bias: float
    pad_id: int
    device: torch.device
    lock: threading.Lock = field(default_factory=threading.Lock)
    supports_prefix_reuse: bool = True  # the body runs the "zerank" attention (copy-free prefix reuse)
    packed: bool = False  # rows concatenated without padding (varlen attention) instead of right-padded

    @torch.inference_mode()
    def full(self, rows: Sequence[Piece]) -> list[float]:
        """Raw scores of complete prompts, one per row."""
        with self.lock:
            return self._scores(rows, None)

    @torch.inference_mode()
    def encode_prefix(self, prefix: Piece) -> PrefixKV:
        """Keys/values of a shared prefix (one copy per layer), to be reused by :meth:`after_prefix`."""
        ids = torch.tensor([list(prefix.ids)], dtype=torch.long, device=self.device)
        with self.lock:
            output = self.body(input_ids=ids, use_cache=True)
        cache = _output_cache(output)
        layers = cache.layers  # type: ignore[union-attr]
        # Contiguous once here, so that every fused attention kernel takes them as they are.
        return PrefixKV(
            tuple(layer.keys.contiguous() for layer in layers), tuple(layer.values.contiguous() for layer in layers)
        )

    @torch.inference_mode()
    def after_prefix(self, prefix: PrefixKV, rows: Sequence[Piece]) -> list[float]:
        """Raw scores of prompts ``prefix + row``, computing only the rows' tokens."""
        with self.lock:
            return self._scores(rows, prefix)

    def _scores(self, rows: Sequence[Piece], prefix: PrefixKV | None) -> list[float]:
        offset = len(prefix) if prefix is not None else 0
        extra: dict[str, Any] = {} if prefix is None else {"zerank_prefix": prefix}
        if self.packed:
            lengths = [len(row) for row in rows]
            ids = torch.tensor([[token for row in rows for token in row.ids]], dtype=torch.long)
            positions = torch.cat([torch.arange(n) for n in lengths]) + offset
            packed = PackedRows.of(lengths, self.device)
            hidden = self.body(
                input_ids=ids.to(self.device),
                position_ids=positions[None].to(self.device),
                use_cache=False,
                zerank_packed=packed,
                **extra,
            ).last_hidden_state[0]
            last = hidden[packed.starts[1:].long() - 1]
        else:
            ids, lengths_tensor = _padded(rows, self.pad_id, self.device)
            if prefix is not None:
                extra["position_ids"] = (torch.arange(ids.shape[1], device=self.device) + offset)[None]
            hidden = self.body(input_ids=ids, use_cache=False, **extra).last_hidden_state
            last = hidden[torch.arange(hidden.shape[0], device=hidden.device), lengths_tensor - 1]
        return (last.float() @ self.row + self.bias).cpu().tolist()


def _output_cache(output: Any) -> Any:
    """The key/value cache of a model output: ``cache`` in current transformers (reading the old name,
    ``past_key_values``, logs a deprecation warning about our call), ``past_key_values`` before the rename."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


@dataclass
class ClassifierForward:
    """A sequence-classification model on right-padded rows with an attention mask."""

    model: torch.nn.Module
    num_labels: int
    pad_id: int
    device: torch.device
    takes_token_types: bool
    lock: threading.Lock = field(default_factory=threading.Lock)

    supports_prefix_reuse = False  # bidirectional: a document changes how the query is read
    packed = False

    @torch.inference_mode()
    def full(self, rows: Sequence[Piece]) -> list[float]:
        ids, lengths = _padded(rows, self.pad_id, self.device)
        positions = torch.arange(ids.shape[1], device=ids.device)
        inputs = {"input_ids": ids, "attention_mask": (positions[None, :] < lengths[:, None]).long()}
        if self.takes_token_types and all(row.types is not None for row in rows):
            types = torch.zeros_like(ids)
            for i, row in enumerate(rows):
                types[i, : len(row)] = torch.as_tensor(row.types, dtype=torch.long)
            inputs["token_type_ids"] = types
        with self.lock:
            logits = self.model(**inputs).logits.float()
        raw = logits[:, 0] if self.num_labels == 1 else logits[:, 1] - logits[:, 0]
        return raw.cpu().tolist()

    def encode_prefix(self, prefix: Piece) -> PrefixKV:  # pragma: no cover - guarded by supports_prefix_reuse
        raise NotImplementedError("bidirectional classifiers cannot reuse a prefix")

    def after_prefix(self, prefix: PrefixKV, rows: Sequence[Piece]) -> list[float]:  # pragma: no cover
        raise NotImplementedError("bidirectional classifiers cannot reuse a prefix")


Forward = CausalHeadForward | ClassifierForward
