"""What reranking saved on a real LLM's bill: all 30 MED questions, three ways, against ``transformers serve``.

Starts ``transformers serve`` on 127.0.0.1 with a small random-weight Qwen3 chat model (real Qwen3 tokenizer and
chat template; answers are noise, ``usage.prompt_tokens`` is real), then

1. ``zerank-integrations eval --llm-url ... --llm-counterfactual`` on MED (the ``"bill"`` of eval.json);
2. a LangChain chain: Chroma (k=50) -> ContextualCompressionRetriever(ZerankRerank top 5) -> ChatPromptTemplate
   -> ChatOpenAI, billed through ``ZerankBillHandler``; each question's all-candidates prompt sent as a check;
3. a LlamaIndex query engine (ZerankRerank postprocessor, OpenAILike), billed through
   ``ZerankBillEventHandler``; the all-candidates prompts sent as a check too.

Every billed ``prompt_tokens`` must equal the ledger's prediction; exits 1 on any mismatch. The reranker is a
random-weight test checkpoint: which passages are kept is meaningless, the token accounting is not.

    python benchmarks/bench_bill.py [--questions 30] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ZERANK_SHARED_DIR", REPO.parent / "shared"))
TOP_K, TOP_N = 50, 5


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(folder: Path, log: Path) -> tuple[subprocess.Popen[bytes], str, float]:
    port = free_port()
    exe = shutil.which("transformers", path=str(Path(sys.executable).parent)) or "transformers"
    cmd = [exe, "serve", str(folder), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    started = time.monotonic()
    proc = subprocess.Popen([*cmd, "--log-level", "warning"], stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/v1"
    while True:
        try:
            with urllib.request.urlopen(f"{url}/models", timeout=2) as reply:
                if reply.status == 200:
                    return proc, url, time.monotonic() - started
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() - started > 300:
            proc.kill()
            raise SystemExit(f"transformers serve did not start: {log.read_text()[-2000:]}")
        time.sleep(0.25)


class MemoEmbedder:
    """The offline MiniLM embedder, each text embedded once (the two frameworks index the same corpus)."""

    def __init__(self) -> None:
        from zerank_integrations.retrieval.embeddings import SentenceTransformerEmbedder

        self.inner = SentenceTransformerEmbedder()
        self.model_name = self.inner.model_name
        self.cache: dict[str, np.ndarray] = {}

    def encode(self, texts: list[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if missing:
            self.cache.update(zip(missing, self.inner.encode(missing), strict=True))
        return np.stack([self.cache[t] for t in texts])


def check_rows(name: str, bill: Any, checks: list[tuple[int, int]]) -> dict[str, Any]:
    summary = bill.summary()
    check_mismatches = sum(1 for billed, predicted in checks if billed != predicted)
    return {
        "pipeline": name,
        **summary,
        "counterfactual_checks": len(checks),
        "counterfactual_mismatches": check_mismatches,
        "billed_all_candidates_checked": sum(b for b, _ in checks),
    }


def run_langchain(
    url: str,
    model: str,
    folder: Path,
    scorer: Any,
    corpus: list[Any],
    questions: list[str],
    tmp: Path,
    embedder: MemoEmbedder,
) -> dict[str, Any]:
    from langchain_chroma import Chroma
    from langchain_classic.retrievers import ContextualCompressionRetriever
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_core.runnables import RunnablePassthrough
    from langchain_openai import ChatOpenAI

    from zerank_integrations.accounting import TokenLedger
    from zerank_integrations.billing.langchain import ZerankBillHandler
    from zerank_integrations.langchain import SentenceTransformerEmbeddings, ZerankRerank

    store = Chroma(
        collection_name="med",
        embedding_function=SentenceTransformerEmbeddings(embedder=embedder),
        persist_directory=str(tmp / "lc"),
        collection_metadata={"hnsw:space": "cosine"},
    )
    store.add_texts([d.content for d in corpus], ids=[d.id for d in corpus])
    prompt = ChatPromptTemplate.from_messages(
        [("system", "Answer from these documents only:\n\n{context}"), ("human", "Question: {question}")]
    )
    ledger = TokenLedger(tokenizer=folder, prompt=prompt)
    base = store.as_retriever(search_kwargs={"k": TOP_K})
    retriever = ContextualCompressionRetriever(
        base_compressor=ZerankRerank(scorer=scorer, top_n=TOP_N, ledger=ledger), base_retriever=base
    )
    llm = ChatOpenAI(base_url=url, model=model, api_key="unused", max_tokens=1)

    def join(docs: list[Any]) -> str:
        return "\n\n".join(d.page_content for d in docs)

    chain = {"context": retriever | join, "question": RunnablePassthrough()} | prompt | llm
    handler = ZerankBillHandler(ledger)
    started = time.monotonic()
    chain.batch(questions, config={"callbacks": [handler], "max_concurrency": 4})
    elapsed = time.monotonic() - started
    checks = []
    for question in questions:
        reply = llm.invoke(prompt.format_messages(context=join(base.invoke(question)), question=question))
        record = next(r for r in ledger.records if r.query == question)
        checks.append((reply.usage_metadata["input_tokens"], record.input_tokens_in))
    return {**check_rows("LangChain chain (ChatOpenAI)", handler.bill, checks), "seconds": elapsed}


def run_llama_index(
    url: str,
    model: str,
    folder: Path,
    scorer: Any,
    corpus: list[Any],
    questions: list[str],
    tmp: Path,
    embedder: MemoEmbedder,
) -> dict[str, Any]:
    import chromadb
    from llama_index.core import StorageContext, VectorStoreIndex
    from llama_index.core.llms import ChatMessage
    from llama_index.core.schema import TextNode
    from llama_index.llms.openai_like import OpenAILike
    from llama_index.vector_stores.chroma import ChromaVectorStore

    from zerank_integrations.accounting import PromptShape, TokenLedger
    from zerank_integrations.billing.llama_index import ZerankBillEventHandler
    from zerank_integrations.llama_index import SentenceTransformerEmbedding, ZerankRerank

    collection = chromadb.PersistentClient(path=str(tmp / "li")).get_or_create_collection(
        "med", metadata={"hnsw:space": "cosine"}
    )
    storage = StorageContext.from_defaults(vector_store=ChromaVectorStore(chroma_collection=collection))
    index = VectorStoreIndex(
        [TextNode(id_=d.id, text=d.content) for d in corpus],
        storage_context=storage,
        embed_model=SentenceTransformerEmbedding(embedder=embedder),
    )
    llm = OpenAILike(
        model=model, api_base=url, api_key="unused", is_chat_model=True, context_window=32_768, max_tokens=1
    )
    template = index.as_query_engine(llm=llm).get_prompts()["response_synthesizer:text_qa_template"]
    ledger = TokenLedger(tokenizer=folder, prompt=PromptShape.from_llama_index(template, llm=llm))
    engine = index.as_query_engine(
        similarity_top_k=TOP_K, llm=llm, node_postprocessors=[ZerankRerank(scorer=scorer, top_n=TOP_N, ledger=ledger)]
    )
    handler = ZerankBillEventHandler(ledger).attach()
    started = time.monotonic()
    try:
        for question in questions:
            engine.query(question)
    finally:
        handler.detach()
    elapsed = time.monotonic() - started
    retriever = index.as_retriever(similarity_top_k=TOP_K)
    checks = []
    for question in questions:
        candidates = [n.node.get_content() for n in retriever.retrieve(question)]
        messages = [ChatMessage(role=m["role"], content=m["content"]) for m in ledger.render(question, candidates)]
        record = next(r for r in ledger.records if r.query == question)
        checks.append((llm.chat(messages).raw.usage.prompt_tokens, record.input_tokens_in))
    return {**check_rows("LlamaIndex query engine (OpenAILike)", handler.bill, checks), "seconds": elapsed}


def run_eval(url: str, model: str, checkpoint: Path, questions: int, tmp: Path) -> dict[str, Any]:
    from zerank_integrations.cli.main import main as cli

    out = tmp / "eval"
    args = ["eval", "--beir", str(SHARED / "datasets" / "med"), "--chroma-path", str(tmp / "cli")]
    args += ["--model", str(checkpoint), "--out", str(out), "--max-queries", str(questions), "--top-k", str(TOP_K)]
    args += ["--top-n", str(TOP_N), "--llm-url", url, "--llm-model", model, "--llm-counterfactual"]
    started = time.monotonic()
    if cli(args) != 0:
        raise SystemExit("eval failed")
    data = json.loads((out / "eval.json").read_text())
    return {"pipeline": "zerank-integrations eval --llm-counterfactual", **data["bill"],
            "seconds": time.monotonic() - started, "ledger": data["tokens"]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=30, help="MED questions (default: all 30)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from zerank_integrations import ZerankScorer
    from zerank_integrations.retrieval import load_beir, read_queries_jsonl
    from zerank_integrations.testing import build_chat_checkpoint, build_test_checkpoint, find_qwen3_tokenizer

    med = SHARED / "datasets" / "med"
    questions = list(read_queries_jsonl(med / "queries.jsonl").values())[: args.questions]
    corpus = list(load_beir(med).corpus)
    with tempfile.TemporaryDirectory(prefix="bench-bill-") as name:
        tmp = Path(name)
        tokenizer = find_qwen3_tokenizer(REPO)
        chat = build_chat_checkpoint(tmp / "chat", tokenizer)
        reranker = build_test_checkpoint(tmp / "reranker", tokenizer)
        proc, url, start_s = start_server(chat, tmp / "serve.log")
        try:
            model = str(chat)
            embedder = MemoEmbedder()
            scorer = ZerankScorer(str(reranker))
            rows = [
                run_eval(url, model, reranker, args.questions, tmp),
                run_langchain(url, model, chat, scorer, corpus, questions, tmp, embedder),
                run_llama_index(url, model, chat, scorer, corpus, questions, tmp, embedder),
            ]
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}; transformers serve started in {start_s:.1f} s")  # fmt: skip
    print(f"MED, {args.questions} questions, top {TOP_K} -> top {TOP_N}, LLM: random-weight Qwen3 chat "
          "(real Qwen3 tokenizer), max_tokens=1\n")  # fmt: skip
    print("| pipeline | calls | billed input, reranked | billed input, all 50 | saved | % of input | mismatches |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    failed = False
    for row in rows:
        mismatches = row["mismatches"] + row.get("counterfactual_mismatches", 0)
        failed |= mismatches != 0
        print(
            f"| {row['pipeline']} | {row['calls']} | {row['input_tokens_reranked']:,} | "
            f"{row['input_tokens_all_candidates']:,} | {row['input_tokens_saved']:,} | "
            f"{row['percent_of_input_saved']:.1f}% | {mismatches} |"
        )
    ledger = rows[0]["ledger"]
    print(
        f"\nledger (eval): document tokens saved {ledger['percent_saved']:.1f}% of the documents; whole input saved "
        f"{ledger['percent_of_input_saved']:.1f}% of the input bill"
    )
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
