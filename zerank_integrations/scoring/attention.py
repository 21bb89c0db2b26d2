"""The attention the causal families run: SDPA, plus two things transformers' own kernels cannot do.

Registered with transformers' ``AttentionInterface`` as ``"zerank"``; a model loaded with it behaves exactly
like ``"sdpa"`` unless the forward pass is given one of these keyword arguments (transformers passes model
keywords through to every attention call):

- ``zerank_prefix=PrefixKV``: **copy-free prefix reuse**. The rows are the continuations of one shared prefix
  whose keys/values were computed once. Attention over ``[prefix, own tokens]`` is split in two: all rows'
  queries against the single copy of the prefix (no mask: every continuation token sees the whole prefix,
  so the rows are folded into the query length of one batch-of-one call), and each row against its own
  tokens (causal). The two partial softmaxes are merged exactly through their log-sum-exps. The prefix is
  never repeated per row or concatenated with the rows' keys.
- ``zerank_packed=PackedRows``: **padding-free rows**. The batch is one sequence of concatenated rows;
  attention stays within each row (varlen). On CUDA with the ``flash-attn`` package this is its varlen
  kernel; elsewhere a per-row reference (used by the tests, never chosen automatically off CUDA).

Both need the log-sum-exp of each partial attention: torch's fused kernels return it (the CPU flash kernel,
CUDA flash / memory-efficient kernels); other devices fall back to plain math.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from typing import Any

import torch

ATTENTION_NAME = "zerank"


@dataclass(frozen=True)
class PrefixKV:
    """A shared prefix's keys and values per layer, each ``(1, kv_heads, length, head_dim)``: one copy."""

    keys: tuple[torch.Tensor, ...]
    values: tuple[torch.Tensor, ...]

    def __len__(self) -> int:
        return int(self.keys[0].shape[2]) if self.keys else 0


@dataclass(frozen=True)
class PackedRows:
    """Where each row starts in a packed sequence: ``starts`` = [0, end of row 0, ..., total] (int32)."""

    starts: torch.Tensor
    longest: int

    @classmethod
    def of(cls, lengths: list[int], device: torch.device) -> PackedRows:
        starts = torch.zeros(len(lengths) + 1, dtype=torch.int32)
        starts[1:] = torch.cumsum(torch.tensor(lengths, dtype=torch.int32), 0)
        return cls(starts.to(device), max(lengths))

    def bounds(self) -> list[tuple[int, int]]:
        cuts = self.starts.tolist()
        return list(itertools.pairwise(cuts))


def flash_attn_varlen() -> Any | None:
    """``flash_attn.flash_attn_varlen_func`` when the flash-attn package is installed, else ``None``."""
    return _flash_attn_varlen()


@functools.cache
def _flash_attn_varlen() -> Any | None:
    try:
        from flash_attn import flash_attn_varlen_func  # type: ignore[import-not-found]
    except Exception:  # not installed, or built for another torch/CUDA: SDPA it is
        return None
    return flash_attn_varlen_func


def register() -> str:
    """Make ``"zerank"`` a valid ``attn_implementation`` (idempotent); returns the name."""
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION_NAME, zerank_attention)
    return ATTENTION_NAME


def zerank_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' attention-interface signature: q ``(B, H, L, d)``, k/v ``(B, kv_heads, L, d)``, output
    ``(B, L, H, d)``. Without the zerank keywords it is transformers' SDPA attention, unchanged."""
    prefix: PrefixKV | None = kwargs.pop("zerank_prefix", None)
    packed: PackedRows | None = kwargs.pop("zerank_packed", None)
    if prefix is None and packed is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    if attention_mask is not None or kwargs.get("sliding_window") is not None:
        raise ValueError("prefix reuse and packed rows need plain causal attention (no mask, no sliding window)")
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    groups = query.shape[1] // key.shape[1]
    if packed is not None:
        out, lse = _packed_self_attention(query, key, value, packed, groups, scale)
    else:
        out, lse = attend(query, _repeat_heads(key, groups), _repeat_heads(value, groups), causal=True, scale=scale)
    if prefix is not None:
        layer = module.layer_idx  # type: ignore[attr-defined]
        out_prefix, lse_prefix = _prefix_attention(query, prefix.keys[layer], prefix.values[layer], scale)
        out = merge(out, lse, out_prefix, lse_prefix)
    return out.to(query.dtype).transpose(1, 2).contiguous(), None


def merge(out_a: torch.Tensor, lse_a: torch.Tensor, out_b: torch.Tensor, lse_b: torch.Tensor) -> torch.Tensor:
    """Attention over the union of two key sets from the attention over each: ``out (B, H, L, d)``, ``lse
    (B, H, L)``. Exact: each part is weighted by its share of the total normaliser, ``sigmoid(lse_a - lse_b)``
    (computed in fp32; the outputs stay in their dtype, so half precision takes no fp32 copy of them)."""
    share = torch.sigmoid(lse_a.float() - lse_b.float()).unsqueeze(-1)
    return out_b + (out_a - out_b) * share.to(out_a.dtype)


def attend(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *, causal: bool, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q kᵀ · scale) v and its log-sum-exp per query; q/k/v ``(B, H, L, d)`` with the same heads."""
    if query.device.type == "cpu":
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            query, key, value, 0.0, causal, scale=scale
        )
        return out, lse
    if query.device.type == "cuda":
        if query.dtype in (torch.float16, torch.bfloat16):
            try:
                result = torch.ops.aten._scaled_dot_product_flash_attention(
                    query, key, value, 0.0, causal, False, scale=scale
                )
                return result[0], result[1]
            except RuntimeError:  # head size or GPU generation the flash kernel does not take
                pass
        result = torch.ops.aten._scaled_dot_product_efficient_attention(
            query, key, value, None, True, 0.0, causal, scale=scale
        )
        return result[0], result[1][..., : query.shape[2]]  # its log-sum-exp is padded to a multiple of 32
    return _math_attention(query, key, value, causal=causal, scale=scale)


def _math_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *, causal: bool, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    scores = (query.float() @ key.float().transpose(-1, -2)) * scale
    if causal:
        length = scores.shape[-1]
        hidden = torch.ones(length, length, dtype=torch.bool, device=scores.device).triu(1)
        scores = scores.masked_fill(hidden, float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)
    return (torch.exp(scores - lse.unsqueeze(-1)) @ value.float()).to(query.dtype), lse


def _prefix_attention(
    query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every row's queries against the one copy of the prefix: rows are folded into the query length.

    q ``(B, H, L, d)`` is regrouped as ``(1, kv_heads, groups * B * L, d)`` so that each key/value head of the
    prefix serves the query heads that share it (grouped-query attention) without repeating the prefix.
    """
    batch, heads, length, dim = query.shape
    kv_heads = keys.shape[1]
    groups = heads // kv_heads
    folded = query.reshape(batch, kv_heads, groups, length, dim).permute(1, 2, 0, 3, 4)
    out, lse = attend(folded.reshape(1, kv_heads, -1, dim), keys, values, causal=False, scale=scale)
    out = out.reshape(kv_heads, groups, batch, length, dim).permute(2, 0, 1, 3, 4).reshape(batch, heads, length, dim)
    lse = lse.reshape(kv_heads, groups, batch, length).permute(2, 0, 1, 3).reshape(batch, heads, length)
    return out, lse


def _packed_self_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, packed: PackedRows, groups: int, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal attention within each packed row; q ``(1, H, T, d)``, k/v ``(1, kv_heads, T, d)``."""
    varlen = flash_attn_varlen()
    if varlen is not None and query.is_cuda and query.dtype in (torch.float16, torch.bfloat16):
        out, lse, _ = varlen(
            query[0].transpose(0, 1).contiguous(),  # (T, H, d); flash-attn takes grouped kv heads as they are
            key[0].transpose(0, 1).contiguous(),
            value[0].transpose(0, 1).contiguous(),
            packed.starts,
            packed.starts,
            packed.longest,
            packed.longest,
            softmax_scale=scale,
            causal=True,
            return_attn_probs=True,
        )
        if lse.dim() == 3:  # flash-attn before 2.4: (rows, heads, longest), padded per row
            lse = torch.cat([lse[row, :, : end - start] for row, (start, end) in enumerate(packed.bounds())], dim=1)
        return out.transpose(0, 1).unsqueeze(0), lse[:, : query.shape[2]].unsqueeze(0)
    # Reference: one row at a time (CPU tests; a CUDA machine without flash-attn never packs).
    key, value = _repeat_heads(key, groups), _repeat_heads(value, groups)
    outs, lses = [], []
    for start, end in packed.bounds():
        out, lse = attend(
            query[:, :, start:end], key[:, :, start:end], value[:, :, start:end], causal=True, scale=scale
        )
        outs.append(out)
        lses.append(lse)
    return torch.cat(outs, dim=2), torch.cat(lses, dim=2)


def _repeat_heads(states: torch.Tensor, groups: int) -> torch.Tensor:
    """``(B, kv_heads, L, d)`` -> ``(B, kv_heads * groups, L, d)``: each kv head serves ``groups`` query heads."""
    if groups == 1:
        return states
    batch, kv_heads, length, dim = states.shape
    return states[:, :, None].expand(batch, kv_heads, groups, length, dim).reshape(batch, -1, length, dim)
