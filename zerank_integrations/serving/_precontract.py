"""TEMPORARY: the core contract's scorer API over the pre-contract ``ZerankScorer``.

Deleted when ``main`` ships ``score_pairs_details``/``truncate_texts``/``calibration`` (see /work/contract.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from zerank_integrations.base import LOGIT_TEMPERATURE, logit_to_probability


@dataclass(frozen=True)
class Calibration:
    temperature: float = LOGIT_TEMPERATURE

    def probability(self, raw: float) -> float:
        return logit_to_probability(raw * LOGIT_TEMPERATURE / self.temperature)

    def raw(self, probability: float) -> float:
        if probability <= 0:
            return -math.inf
        if probability >= 1:
            return math.inf
        return self.temperature * math.log(probability / (1 - probability))


@dataclass(frozen=True)
class DocumentScore:
    raw: float
    probability: float
    tokens: int
    truncated: bool
    windows: int = 1
    span: tuple[int, int] | None = None


class PrecontractScorer:
    """Wraps an old ``ZerankScorer``: raw logits only, no instruction, no token counts."""

    accepts_instruction = False
    random_weights = False
    family = "zerank"
    calibration = Calibration()

    def __init__(self, scorer: Any) -> None:
        self._scorer = scorer

    @property
    def model_name(self) -> str:
        return str(self._scorer.model_name)

    @property
    def stats(self) -> Any:
        return self._scorer.stats

    def score_pairs_details(self, pairs: Sequence[tuple[str, ...]]) -> list[DocumentScore]:
        if any(len(pair) > 2 for pair in pairs):
            raise ValueError("this scorer takes no instruction")
        raws = self._scorer.score_pairs([(q, d) for q, d, *_ in pairs], raw=True)
        return [DocumentScore(r, logit_to_probability(r), 0, False) for r in raws]

    def truncate_texts(self, texts: Sequence[str], max_tokens: int) -> list[str]:
        tokenizer = self._scorer.loaded_model.tokenizer
        out = []
        for text in texts:
            encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
            offsets = encoded["offset_mapping"]
            out.append(text if len(offsets) <= max_tokens else text[: offsets[max_tokens - 1][1]])
        return out
