"""LangChain RAG with zerank reranking: Chroma (k=50) -> ZerankRerank (top 5) -> prompt -> chat model.

    python examples/langchain_rag.py --model zeroentropy/zerank-2-reranker [--query "..."] [--data FOLDER]

Runs offline: the corpus is the MED collection, embeddings come from the bundled all-MiniLM-L6-v2, the
vector store is an embedded Chroma in a temporary folder, and the chat model is langchain-core's fake one
(swap in e.g. ``ChatOpenAI(model="gpt-4o")``). Prints the reranked documents and the tokens the reranker
kept out of the prompt.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from langchain_chroma import Chroma
from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import Runnable, RunnableParallel, RunnablePassthrough

if str(Path(__file__).resolve().parent) not in sys.path:  # the shared helpers sit next to this script
    sys.path.insert(0, str(Path(__file__).resolve().parent))
import example_support

from zerank_integrations import TokenLedger
from zerank_integrations.langchain import SentenceTransformerEmbeddings, ZerankRerank
from zerank_integrations.retrieval import Document as CorpusDocument

PROMPT = ChatPromptTemplate.from_messages(
    [
        ("system", "Answer the question using only these documents:\n\n{context}"),
        ("human", "{question}"),
    ]
)


def format_docs(docs: Sequence[Document]) -> str:
    """The context block of the prompt: one numbered document per paragraph, in reranked order."""
    return "\n\n".join(f"[{i}] {doc.page_content}" for i, doc in enumerate(docs, start=1))


def build_store(passages: Sequence[CorpusDocument], folder: str, embeddings: Embeddings) -> Chroma:
    store = Chroma(
        collection_name="med",
        embedding_function=embeddings,
        persist_directory=folder,
        collection_metadata={"hnsw:space": "cosine"},
    )
    store.add_texts(
        [p.content for p in passages],
        metadatas=[{"doc_id": p.id} for p in passages],
        ids=[p.id for p in passages],
    )
    return store


def build_chain(retriever: BaseRetriever, llm: BaseChatModel) -> Runnable:
    """question -> {"docs": reranked documents, "answer": the model's reply}: an ordinary LCEL RAG chain."""
    answer = RunnablePassthrough.assign(context=lambda x: format_docs(x["docs"])) | PROMPT | llm | StrOutputParser()
    return RunnableParallel(docs=retriever, question=RunnablePassthrough()).assign(answer=answer)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    example_support.add_common_arguments(parser)
    args = parser.parse_args(argv)

    data = example_support.find_dataset(args.data)
    query = args.query or example_support.default_query(data)
    passages = example_support.load_passages(data, args.limit)
    ledger = TokenLedger(llm=args.llm)
    reranker = ZerankRerank(**example_support.reranker_settings(args), ledger=ledger)

    with tempfile.TemporaryDirectory(prefix="zerank-lc-", ignore_cleanup_errors=True) as folder:
        store = build_store(passages, folder, SentenceTransformerEmbeddings())
        retriever = ContextualCompressionRetriever(
            base_compressor=reranker,
            base_retriever=store.as_retriever(search_kwargs={"k": args.k}),
        )
        llm = FakeListChatModel(responses=["(a real chat model answers here from the documents above)"])
        result = build_chain(retriever, llm).invoke(query)

    print(f"query: {query}")
    print(f"reranker: {reranker!r}; {len(passages)} documents indexed, k={args.k}")
    example_support.warn_if_random_weights(reranker.reranker)
    example_support.print_ranked(
        [(d.metadata["doc_id"], d.metadata["relevance_score"], d.page_content) for d in result["docs"]]
    )
    print(f"answer: {result['answer']}")
    example_support.print_savings(ledger.summary())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
