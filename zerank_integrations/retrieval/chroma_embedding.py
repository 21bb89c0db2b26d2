"""The offline embedder as a registered Chroma embedding function (imports chromadb: load only with Chroma).

Collections built by :class:`~zerank_integrations.retrieval.ChromaStore` record this function's name and
configuration, so chromadb used directly (``collection.query(query_texts=...)``) embeds queries with the
same model instead of downloading its own default.
"""

from __future__ import annotations

from typing import Any

from chromadb.api.types import Documents, EmbeddingFunction, Embeddings, Space
from chromadb.utils.embedding_functions import register_embedding_function

from zerank_integrations.retrieval.embeddings import SentenceTransformerEmbedder

__all__ = ["ChromaEmbeddingFunction"]


@register_embedding_function
class ChromaEmbeddingFunction(SentenceTransformerEmbedder, EmbeddingFunction[Documents]):
    """:class:`SentenceTransformerEmbedder` with Chroma's embedding-function interface."""

    def __call__(self, input: Documents) -> Embeddings:
        return list(self.encode(list(input)))

    @staticmethod
    def name() -> str:
        return "zerank_sentence_transformer"

    def default_space(self) -> Space:
        return "cosine"

    def supported_spaces(self) -> list[Space]:
        return ["cosine", "ip", "l2"]

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> ChromaEmbeddingFunction:
        return ChromaEmbeddingFunction(
            config.get("model_name"),
            device=config.get("device"),
            batch_size=int(config.get("batch_size") or 32),
            quantization=config.get("quantization"),
        )
