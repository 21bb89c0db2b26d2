"""Find a collection that already holds a corpus, so ``eval`` does not embed the same texts twice.

``demo`` ingests MED into ``zerank-demo-med``; ``eval --beir .../med`` would otherwise embed the identical
corpus again into ``beir-med``. A collection is reused only when it holds exactly the chunks an ingest would
write (ids, texts and metadata, so the same chunking) with the same embedding model: then its vectors are the
ones a new ingest would compute, and the metrics are the same.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zerank_integrations.retrieval import BeirCollection, ChunkingPolicy


def identical_collection(
    args: argparse.Namespace, collection: BeirCollection, chunking: ChunkingPolicy, default_name: str
) -> str | None:
    """The name of another collection holding exactly ``collection``'s corpus, or ``None``.

    ``None`` as well when ``default_name`` exists (it is used as before) or when nothing matches.
    """
    from zerank_integrations.retrieval import (
        ChromaStore,
        canonical_model_name,
        chunk_documents,
        connect,
        default_chroma_path,
    )
    from zerank_integrations.retrieval.chroma import EMBEDDING_MODEL_KEY

    if args.chroma_url is None and not (args.chroma_path or default_chroma_path()).exists():
        return None  # no database yet: nothing to reuse (and none is created just to look)
    client = connect(path=args.chroma_path, url=args.chroma_url)
    listed = {c.name: c for c in client.list_collections()}
    if default_name in listed:
        return None
    model = canonical_model_name(args.embedding_model)
    candidates = []
    for name in sorted(listed):
        try:
            handle = client.get_collection(name)
        except Exception:  # not ours to judge: skip what cannot be opened
            continue
        if (handle.metadata or {}).get(EMBEDDING_MODEL_KEY) == model:
            candidates.append((name, handle))
    if not candidates:
        return None
    store = ChromaStore.open(candidates[0][0], client=client)  # its embedder's tokenizer counts the chunks
    policy = chunking.fit(store.embedder.max_tokens)
    expected = [
        c for per_doc in chunk_documents(collection.corpus, policy, store.embedder.token_spans) for c in per_doc
    ]
    wanted: dict[str, tuple[str, Any]] = {c.id: (c.text, c.metadata) for c in expected}
    for name, handle in candidates:
        if handle.count() != len(wanted):
            continue
        stored = handle.get(include=["documents", "metadatas"])
        held = dict(
            zip(stored["ids"], zip(stored["documents"] or [], stored["metadatas"] or [], strict=False), strict=False)
        )
        if held == wanted:
            return name
    return None
