"""zerank reranking as a LangChain document compressor (e.g. inside ``ContextualCompressionRetriever``).

An adapter only: it turns ``Document`` objects into strings for the shared scorer and the kept ones back
into new ``Document`` objects. Scoring, validation and selection live in :mod:`zerank_integrations.selection`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

from langchain_core.callbacks import Callbacks
from langchain_core.documents import BaseDocumentCompressor, Document

from zerank_integrations.selection import RerankSettings

__all__ = ["ZerankRerank"]

RELEVANCE_SCORE_KEY = "relevance_score"


class ZerankRerank(RerankSettings, BaseDocumentCompressor):
    """Rerank retrieved documents with zerank; keeps the ``top_n`` best, best first.

    ``ZerankRerank(model="zeroentropy/zerank-2", top_n=5, score_threshold=None)`` loads (or reuses) the model;
    ``ZerankRerank(scorer=existing_scorer)`` calls any :class:`~zerank_integrations.base.Reranker`.
    Each returned document is a new ``Document`` whose metadata (a copy) holds ``relevance_score``, the
    probability in [0, 1]; the caller's documents are never modified.
    """

    def compress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
    ) -> Sequence[Document]:
        docs = list(documents)
        return _rebuild(docs, self.rerank_texts(query, _texts(docs)))

    async def acompress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
    ) -> Sequence[Document]:
        """Natively async: the model runs in the scorer's worker thread, never on the event loop."""
        docs = list(documents)
        return _rebuild(docs, await self.arerank_texts(query, _texts(docs)))


def _texts(documents: list[Document]) -> list[str]:
    texts = []
    for index, doc in enumerate(documents):
        text = getattr(doc, "page_content", None)
        if not isinstance(text, str):
            raise TypeError(
                f"document at index {index} is {type(doc).__name__}, expected a langchain Document "
                "with a str page_content"
            )
        texts.append(text)
    return texts


def _rebuild(documents: list[Document], ranked: list[tuple[int, float]]) -> list[Document]:
    """New documents in ranked order; metadata deep-copied so nothing downstream reaches the caller's."""
    return [
        documents[index].model_copy(
            update={"metadata": {**copy.deepcopy(documents[index].metadata), RELEVANCE_SCORE_KEY: score}}
        )
        for index, score in ranked
    ]
