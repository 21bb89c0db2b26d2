"""First-stage retrieval on Chroma: corpus readers, an offline embedder, and a collection wrapper.

Nothing here imports torch at module level; sentence-transformers loads on the first embedding.
"""

from __future__ import annotations

from zerank_integrations.retrieval.chroma import (
    CHROMA_PATH_ENV,
    CHROMA_URL_ENV,
    DEFAULT_COLLECTION,
    ChromaStore,
    Hit,
    IngestReport,
    connect,
    default_chroma_path,
)
from zerank_integrations.retrieval.corpus import (
    BeirCollection,
    Document,
    load_beir,
    load_documents,
    read_corpus_jsonl,
    read_qrels_tsv,
    read_queries_jsonl,
    read_text_folder,
)
from zerank_integrations.retrieval.embeddings import (
    DEFAULT_EMBEDDING_MODEL,
    SentenceTransformerEmbedder,
    canonical_model_name,
)
from zerank_integrations.retrieval.errors import (
    ChromaConnectionError,
    CollectionNotFoundError,
    CorpusError,
    EmbedderMismatchError,
    EmbeddingModelError,
    RetrievalError,
)

__all__ = [
    "CHROMA_PATH_ENV",
    "CHROMA_URL_ENV",
    "DEFAULT_COLLECTION",
    "DEFAULT_EMBEDDING_MODEL",
    "BeirCollection",
    "ChromaConnectionError",
    "ChromaStore",
    "CollectionNotFoundError",
    "CorpusError",
    "Document",
    "EmbedderMismatchError",
    "EmbeddingModelError",
    "Hit",
    "IngestReport",
    "RetrievalError",
    "SentenceTransformerEmbedder",
    "canonical_model_name",
    "connect",
    "default_chroma_path",
    "load_beir",
    "load_documents",
    "read_corpus_jsonl",
    "read_qrels_tsv",
    "read_queries_jsonl",
    "read_text_folder",
]
