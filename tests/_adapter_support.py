"""Helpers shared by the LangChain / LlamaIndex adapter tests (not a test module itself).

The embedder is the slow part on a small CPU machine, so every corpus text is embedded once per process and
reused by both frameworks' end-to-end tests. The framework embedding wrappers come from the examples, so the
tests exercise the very classes the examples ship.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import numpy as np

from zerank_integrations.base import rank_scores, validate_documents, validate_query
from zerank_integrations.retrieval import Document, load_documents

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = REPO_ROOT / "examples"

E2E_DOCS = 200  # MED documents indexed by the end-to-end tests (k=50 candidates out of these)


def load_example(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` once per process, under a name that cannot clash with anything."""
    module_name = f"zerank_example_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


class MemoEmbedder:
    """The real offline MiniLM embedder, with each distinct text embedded only once per process."""

    def __init__(self) -> None:
        from zerank_integrations.retrieval.embeddings import SentenceTransformerEmbedder

        self.inner = SentenceTransformerEmbedder()
        self.model_name = self.inner.model_name
        self._cache: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        with self._lock:
            missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
            if missing:
                self._cache.update(zip(missing, self.inner.encode(missing), strict=True))
            return np.stack([self._cache[t] for t in texts])


_EMBEDDER: MemoEmbedder | None = None


def shared_embedder() -> MemoEmbedder:
    global _EMBEDDER
    if _EMBEDDER is None:
        _EMBEDDER = MemoEmbedder()
    return _EMBEDDER


def med_passages(datasets_dir: Path, limit: int = E2E_DOCS) -> list[Document]:
    """The first ``limit`` MED documents (``.id``, ``.content``), read by the package's BEIR reader."""
    return load_documents(datasets_dir / "med")[:limit]


class FixedScorer:
    """A tiny real ``Reranker`` with chosen scores (text -> probability): exact ties and call counting.

    The checkpoint cannot produce bit-identical scores on demand, so tie handling is checked with this.
    """

    def __init__(self, scores: dict[str, float], name: str = "fixed-scores") -> None:
        self.scores = scores
        self.name = name
        self.calls = 0
        self.api_key = "sk-secret-do-not-print"

    @property
    def model_name(self) -> str:
        return self.name

    def score(self, query: str, documents: Sequence[str], *, raw: bool = False) -> list[float]:
        validate_query(query)
        self.calls += 1
        return [self.scores[d] for d in validate_documents(documents)]

    def rank(self, query: str, documents: Sequence[str], top_n: int | None = None) -> list[tuple[int, float]]:
        return rank_scores(self.score(query, documents), top_n)

    async def ascore(self, query: str, documents: Sequence[str], *, raw: bool = False) -> list[float]:
        return self.score(query, documents, raw=raw)

    async def arank(self, query: str, documents: Sequence[str], top_n: int | None = None) -> list[tuple[int, float]]:
        return self.rank(query, documents, top_n)
