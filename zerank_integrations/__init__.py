"""Drop-in zerank-2 reranking for RAG: one scoring core, thin LangChain / LlamaIndex adapters.

``import zerank_integrations`` stays light: torch and tiktoken load only when the names that need them are
first used, and no framework (LangChain, LlamaIndex, Chroma) is imported here at all.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from zerank_integrations.import_noise import install_import_noise_filter

__version__ = "0.1.0"

install_import_noise_filter()  # torchao's CPU-wheel kernel notices, when transformers imports it

if TYPE_CHECKING:
    from zerank_integrations.accounting import TokenLedger, TokenSavings
    from zerank_integrations.scoring import ScoringStats, ZerankScorer
    from zerank_integrations.serving.client import RemoteScorer

_LAZY = {
    "ZerankScorer": "zerank_integrations.scoring",
    "ScoringStats": "zerank_integrations.scoring",
    "TokenLedger": "zerank_integrations.accounting",
    "TokenSavings": "zerank_integrations.accounting",
    "RemoteScorer": "zerank_integrations.serving.client",
}

__all__ = ["RemoteScorer", "ScoringStats", "TokenLedger", "TokenSavings", "ZerankScorer", "__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'zerank_integrations' has no attribute {name!r}")
