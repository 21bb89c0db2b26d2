"""Reranker families as data: one module per published recipe, read by the scoring core.

No torch here: the server, remote scorers and the vLLM helper read a family's calibration and overrides
without loading a model. Adding a family means one new module (a :class:`RerankerFamily`) listed below.
"""

from __future__ import annotations

from zerank_integrations.families.base import (
    ClassifierLogit,
    KnownModel,
    LogitDifference,
    PromptFormat,
    RerankerFamily,
    ScoreHead,
    TokenLogit,
)
from zerank_integrations.families.checkpoint import (
    ChatSettings,
    CheckpointFacts,
    CheckpointReadError,
    LogitScoreHead,
)
from zerank_integrations.families.cross_encoder import CROSS_ENCODER
from zerank_integrations.families.detection import (
    FamilyDetectionError,
    detect_family,
    family_for_hub_id,
    hub_id_from_path,
)
from zerank_integrations.families.mxbai_rerank import MXBAI_RERANK_V2
from zerank_integrations.families.qwen3_reranker import QWEN3_RERANKER
from zerank_integrations.families.zerank import ZERANK

FAMILIES: dict[str, RerankerFamily] = {
    family.name: family for family in (ZERANK, QWEN3_RERANKER, MXBAI_RERANK_V2, CROSS_ENCODER)
}
FAMILY_NAMES: tuple[str, ...] = tuple(FAMILIES)


def get_family(name: str | RerankerFamily) -> RerankerFamily:
    """The family called ``name`` (a ``RerankerFamily`` passes through)."""
    if isinstance(name, RerankerFamily):
        return name
    if not isinstance(name, str):
        raise TypeError(f"family must be a family name, got {type(name).__name__}")
    family = FAMILIES.get(name.strip().lower())
    if family is None:
        raise ValueError(f"unknown reranker family {name!r}; choose one of {', '.join(FAMILY_NAMES)}")
    return family


__all__ = [
    "FAMILIES",
    "FAMILY_NAMES",
    "ChatSettings",
    "CheckpointFacts",
    "CheckpointReadError",
    "ClassifierLogit",
    "FamilyDetectionError",
    "KnownModel",
    "LogitDifference",
    "LogitScoreHead",
    "PromptFormat",
    "RerankerFamily",
    "ScoreHead",
    "TokenLogit",
    "detect_family",
    "family_for_hub_id",
    "get_family",
    "hub_id_from_path",
]
