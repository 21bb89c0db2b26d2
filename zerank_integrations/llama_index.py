"""zerank reranking as a LlamaIndex node postprocessor (``node_postprocessors=[ZerankRerank(...)]``).

An adapter only: it turns ``NodeWithScore`` objects into strings for the shared scorer and the kept ones
back into new ``NodeWithScore`` objects, emitting the same instrumentation and callback events as
LlamaIndex's own rerankers. Scoring, validation and selection live in :mod:`zerank_integrations.selection`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from llama_index.core.bridge.pydantic import Field
from llama_index.core.callbacks import CBEventType, EventPayload
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle

from zerank_integrations.selection import RerankSettings

__all__ = ["ZerankRerank"]

dispatcher = get_dispatcher(__name__)

RETRIEVAL_SCORE_KEY = "retrieval_score"


class ZerankRerank(RerankSettings, BaseNodePostprocessor):
    """Rerank retrieved nodes with zerank; keeps the ``top_n`` best, best first, ``score`` = probability.

    ``ZerankRerank(model="zeroentropy/zerank-2", top_n=5, score_threshold=None)`` loads (or reuses) the model;
    ``ZerankRerank(scorer=existing_scorer)`` calls any :class:`~zerank_integrations.base.Reranker`.
    Returned nodes are copies: the caller's nodes and their metadata are never modified.
    """

    keep_retrieval_score: bool = Field(
        default=False,
        description=f"Keep the retriever's score in node.metadata[{RETRIEVAL_SCORE_KEY!r}].",
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
            reranked = self._rebuild(candidates, self.rerank_texts(query, texts, prompt_texts=prompt))
            event.on_end(payload={EventPayload.NODES: reranked})
        dispatcher.event(ReRankEndEvent(nodes=reranked))
        return reranked

    @dispatcher.span  # the mixin only wraps the abstract sync hook; give the async one its span too
    async def _apostprocess_nodes(
        self,
        nodes: list[NodeWithScore],
        query_bundle: QueryBundle | None = None,
    ) -> list[NodeWithScore]:
        """Natively async: the model runs in the scorer's worker thread, never on the event loop."""
        query, candidates, texts, prompt = self._prepare(nodes, query_bundle)
        with self._reranking_event(candidates, query_bundle, query) as event:
            reranked = self._rebuild(candidates, await self.arerank_texts(query, texts, prompt_texts=prompt))
            event.on_end(payload={EventPayload.NODES: reranked})
        dispatcher.event(ReRankEndEvent(nodes=reranked))
        return reranked

    def _prepare(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None
    ) -> tuple[str, list[NodeWithScore], list[str], list[str] | None]:
        """Query, nodes, the texts to score and (with a ledger) the texts the LLM will get (LLM metadata mode)."""
        if query_bundle is None:
            raise ValueError(
                "ZerankRerank needs the query: call postprocess_nodes(nodes, query_bundle=...) or "
                "postprocess_nodes(nodes, query_str=...); no query bundle was given"
            )
        candidates = list(nodes)
        texts = []
        for index, item in enumerate(candidates):
            if not isinstance(item, NodeWithScore):
                raise TypeError(f"node at index {index} is {type(item).__name__}, expected NodeWithScore")
            texts.append(item.node.get_content(metadata_mode=self.metadata_mode))
        prompt = None
        if self.ledger is not None:  # response synthesizers send MetadataMode.LLM content, so count that
            prompt = [item.node.get_content(metadata_mode=MetadataMode.LLM) for item in candidates]
        return query_bundle.query_str, candidates, texts, prompt

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

    def _rebuild(self, nodes: list[NodeWithScore], ranked: list[tuple[int, float]]) -> list[NodeWithScore]:
        """New ``NodeWithScore`` objects around deep copies of the kept nodes (caller's stay untouched)."""
        result = []
        for index, score in ranked:
            original = nodes[index]
            node = original.node.model_copy(deep=True)
            if self.keep_retrieval_score:
                node.metadata[RETRIEVAL_SCORE_KEY] = original.score
            result.append(NodeWithScore(node=node, score=score))
        return result
