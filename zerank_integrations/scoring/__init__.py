"""The scoring core: everything that touches torch lives in this package.

``prompts`` turns (query, document, instruction) into token ids for a family, ``batching`` plans forward
passes, ``loading`` brings a checkpoint onto a device once per process, ``forward`` runs the body and the
family's head, ``cache`` remembers scores, ``scorer`` ties them together.
"""

from zerank_integrations.base import DEFAULT_MODEL
from zerank_integrations.scoring.loading import ModelLoadError, clear_model_cache, loaded_models
from zerank_integrations.scoring.scorer import DocumentScore, ScoringStats, ZerankScorer

__all__ = [
    "DEFAULT_MODEL",
    "DocumentScore",
    "ModelLoadError",
    "ScoringStats",
    "ZerankScorer",
    "clear_model_cache",
    "loaded_models",
]
