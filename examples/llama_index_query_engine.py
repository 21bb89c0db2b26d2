"""LlamaIndex query engine with zerank reranking: Chroma (top 50) -> ZerankRerank (top 5) -> LLM.

    python examples/llama_index_query_engine.py --model zeroentropy/zerank-2-reranker [--query "..."] [--data FOLDER]

Runs offline: the corpus is the MED collection, embeddings come from the bundled all-MiniLM-L6-v2, the
vector store is an embedded Chroma in a temporary folder, and the LLM is LlamaIndex's ``MockLLM`` (swap in
e.g. ``OpenAI(model="gpt-4o")``). Prints the reranked source nodes and the tokens the reranker kept out of
the prompt.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import chromadb
from llama_index.core import StorageContext, VectorStoreIndex
from llama_index.core.embeddings import BaseEmbedding
from llama_index.core.llms import MockLLM
from llama_index.core.schema import TextNode
from llama_index.vector_stores.chroma import ChromaVectorStore

if str(Path(__file__).resolve().parent) not in sys.path:  # the shared helpers sit next to this script
    sys.path.insert(0, str(Path(__file__).resolve().parent))
import example_support

from zerank_integrations import TokenLedger
from zerank_integrations.llama_index import SentenceTransformerEmbedding, ZerankRerank
from zerank_integrations.retrieval import Document as CorpusDocument


def build_index(passages: Sequence[CorpusDocument], folder: str, embed_model: BaseEmbedding) -> VectorStoreIndex:
    """Embedded Chroma under ``folder``; node ids are the corpus ids so results are easy to read."""
    collection = chromadb.PersistentClient(path=folder).get_or_create_collection(
        "med", metadata={"hnsw:space": "cosine"}
    )
    storage = StorageContext.from_defaults(vector_store=ChromaVectorStore(chroma_collection=collection))
    nodes = [TextNode(id_=p.id, text=p.content) for p in passages]
    return VectorStoreIndex(nodes, storage_context=storage, embed_model=embed_model)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    example_support.add_common_arguments(parser)
    args = parser.parse_args(argv)

    data = example_support.find_dataset(args.data)
    query = args.query or example_support.default_query(data)
    passages = example_support.load_passages(data, args.limit)
    ledger = TokenLedger(llm=args.llm)
    reranker = ZerankRerank(**example_support.reranker_settings(args), ledger=ledger)

    with tempfile.TemporaryDirectory(prefix="zerank-li-", ignore_cleanup_errors=True) as folder:
        index = build_index(passages, folder, SentenceTransformerEmbedding())
        engine = index.as_query_engine(
            similarity_top_k=args.k, node_postprocessors=[reranker], llm=MockLLM(max_tokens=16)
        )
        response = engine.query(query)

    print(f"query: {query}")
    print(f"reranker: {reranker!r}; {len(passages)} documents indexed, k={args.k}")
    example_support.warn_if_random_weights(reranker.reranker)
    example_support.print_ranked(
        [(n.node.node_id, n.score or 0.0, n.node.get_content()) for n in response.source_nodes]
    )
    print(f"answer: {response.response}")
    example_support.print_savings(ledger.summary())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
