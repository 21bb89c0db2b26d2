"""The scoring core: everything that touches torch lives in this package.

``prompts`` turns pairs into token ids, ``batching`` plans forward passes, ``loading`` brings a checkpoint onto
a device once per process, ``forward`` runs the body and the "Yes" projection, ``scorer`` ties them together.
"""

from zerank_integrations.scoring.loading import ModelLoadError, clear_model_cache, loaded_models
from zerank_integrations.scoring.scorer import (
    DEFAULT_MODEL,
    ScoringStats,
    ZerankScorer,
    logit_to_probability,
)

__all__ = [
    "DEFAULT_MODEL",
    "ModelLoadError",
    "ScoringStats",
    "ZerankScorer",
    "clear_model_cache",
    "loaded_models",
    "logit_to_probability",
]
