"""First-stage retrieval: the ``Retriever`` interface, corpus readers, chunking, an offline embedder, Chroma.

Nothing here imports torch or chromadb at module level: sentence-transformers loads on the first embedding,
chromadb when a :class:`ChromaStore` is opened.
"""

from __future__ import annotations

from zerank_integrations.retrieval.base import Hit, Retriever, describe_retriever, documents_in_order
from zerank_integrations.retrieval.chroma import (
    CHROMA_PATH_ENV,
    CHROMA_URL_ENV,
    DEFAULT_COLLECTION,
    ChromaStore,
    IngestReport,
    connect,
    default_chroma_path,
    validate_collection_name,
)
from zerank_integrations.retrieval.chunking import DEFAULT_CHUNK_SIZE, Chunk, ChunkingPolicy, chunk_documents
from zerank_integrations.retrieval.corpus import (
    BeirCollection,
    Document,
    SkippedFiles,
    load_beir,
    load_documents,
    packaged_med,
    read_corpus_jsonl,
    read_documents,
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
    CollectionNameError,
    CollectionNotFoundError,
    CorpusError,
    EmbedderMismatchError,
    EmbeddingModelError,
    EvaluationSetupError,
    RetrievalError,
)

__all__ = [
    "CHROMA_PATH_ENV",
    "CHROMA_URL_ENV",
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_COLLECTION",
    "DEFAULT_EMBEDDING_MODEL",
    "BeirCollection",
    "ChromaConnectionError",
    "ChromaStore",
    "Chunk",
    "ChunkingPolicy",
    "CollectionNameError",
    "CollectionNotFoundError",
    "CorpusError",
    "Document",
    "EmbedderMismatchError",
    "EmbeddingModelError",
    "EvaluationSetupError",
    "Hit",
    "IngestReport",
    "RetrievalError",
    "Retriever",
    "SentenceTransformerEmbedder",
    "SkippedFiles",
    "canonical_model_name",
    "chunk_documents",
    "connect",
    "default_chroma_path",
    "describe_retriever",
    "documents_in_order",
    "load_beir",
    "load_documents",
    "packaged_med",
    "read_corpus_jsonl",
    "read_documents",
    "read_qrels_tsv",
    "read_queries_jsonl",
    "read_text_folder",
    "validate_collection_name",
]
