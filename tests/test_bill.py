"""What reranking saves on the LLM bill, reconciled with a real LLM server's ``usage``.

Offline: tiktoken chat counting against OpenAI's documented rule, whole-prompt counting, exactness flags and
the errors. Against ``transformers serve`` on loopback (a random-weight Qwen3 chat model with the real Qwen3
tokenizer, started once per session): a LangChain chain and a LlamaIndex query engine over Chroma with
ZerankRerank, where every billed ``prompt_tokens`` must equal the ledger's prediction, and ``eval --llm-url``.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import tiktoken
from _adapter_support import load_example, med_passages, shared_embedder
from _llm_server import LLMServer, llm_server  # noqa: F401 - the session's LLM server fixture
from _processes import free_port

from zerank_integrations import ZerankScorer
from zerank_integrations.accounting import (
    BILL_KEYS,
    OPENAI_CHAT_RULE,
    PromptShape,
    TokenizerUnavailableError,
    TokenLedger,
    resolve_counter,
)
from zerank_integrations.accounting.encodings import get_encoding
from zerank_integrations.cli import DEMO_COLLECTION
from zerank_integrations.cli.main import main

QUESTIONS = 2  # MED questions per framework here: one sync, one async (all 30: benchmarks/bench_bill.py)
TOP_K = 50
TOP_N = 5

# -- offline: counting rules -----------------------------------------------------------------------------

MESSAGES = [
    {"role": "system", "content": "You are a helpful, pattern-following assistant that translates jargon."},
    {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
    {"role": "system", "name": "example_assistant", "content": "Things working well together will increase revenue."},
    {"role": "user", "content": "This late pivot means we don't have time to boil the ocean <|endoftext|> 🌊."},
]


def cookbook_count(messages: list[dict[str, str]], encoding: tiktoken.Encoding) -> int:
    """OpenAI cookbook "How to count tokens with tiktoken" (gpt-3.5-turbo-0613 onwards, gpt-4, gpt-4o):
    3 tokens per message, every value's tokens, 1 per name, 3 priming the reply."""
    total = 3
    for message in messages:
        total += 3
        for key, value in message.items():
            total += len(encoding.encode(value, disallowed_special=()))
            if key == "name":
                total += 1
    return total


@pytest.mark.parametrize(("llm", "encoding"), [("gpt-4", "cl100k_base"), ("gpt-4o", "o200k_base")])
def test_tiktoken_chat_count_is_openais_documented_rule(llm: str, encoding: str) -> None:
    counter = resolve_counter(llm)
    assert counter.name == encoding and counter.exact
    assert OPENAI_CHAT_RULE == {"tokens_per_message": 3, "tokens_per_name": 1, "reply_priming": 3}
    expected = cookbook_count(MESSAGES, get_encoding(encoding))
    assert counter.count_messages(MESSAGES) == expected
    # the overhead is what the rule says: 4 messages x 3 + 2 names + 3 priming on top of the values' tokens
    values = sum(counter.count(v) for m in MESSAGES for v in m.values())
    assert expected == values + 4 * 3 + 2 + 3


def test_whole_input_is_counted_both_ways_with_the_question_and_the_template() -> None:
    prompt = PromptShape.from_format_string("Context:\n{context}\n\nQuestion: {question}", system="Be brief.")
    ledger = TokenLedger(llm="gpt-4o", prompt=prompt)
    candidates = ["Aspirin inhibits platelets.", "Heparin is an anticoagulant.", "Unrelated text about cars."]
    record = ledger.record("what thins blood?", candidates, candidates[:1])
    encoding = get_encoding("o200k_base")

    def expected(docs: list[str]) -> int:
        user = "Context:\n" + "\n\n".join(docs) + "\n\nQuestion: what thins blood?"
        return cookbook_count([{"role": "system", "content": "Be brief."}, {"role": "user", "content": user}], encoding)

    assert record.input_tokens_in == expected(candidates) and record.input_tokens_kept == expected(candidates[:1])
    assert record.exact is True
    summary = ledger.summary()
    assert summary["input_tokens_saved"] == record.input_tokens_in - record.input_tokens_kept == record.tokens_saved
    assert summary["percent_of_input_saved"] == round(100 * summary["input_tokens_saved"] / record.input_tokens_in, 2)
    assert summary["percent_of_input_saved"] < summary["percent_saved"]  # the question and template stay
    assert summary["counting"] == "exact" and summary["prompt"] == "format string"


def test_a_stand_in_tokenizer_is_flagged_as_an_approximation() -> None:
    ledger = TokenLedger(llm="claude-sonnet-4-5", encoding="o200k_base")
    record = ledger.record("q", ["a b c", "d e f"], ["a b c"])
    assert record.exact is False and ledger.summary()["counting"] == "approximation"
    assert not TokenLedger(llm="gpt-4", encoding="o200k_base").exact  # gpt-4 counts with cl100k_base
    assert TokenLedger(llm="gpt-4o-mini").exact


def test_open_models_count_with_their_own_tokenizer(qwen3_tokenizer_dir: Path) -> None:
    from transformers import AutoTokenizer

    ledger = TokenLedger(tokenizer=qwen3_tokenizer_dir, prompt="{context}\n\n{question}")
    reference = AutoTokenizer.from_pretrained(qwen3_tokenizer_dir)
    texts = ["Aspirin inhibits platelets.", " leading space", "émoji 🌊 <|im_end|> text"]
    assert ledger.count_tokens(texts) == len(reference("\n\n".join(texts), add_special_tokens=False)["input_ids"])
    messages = ledger.render("why?", texts)
    assert messages == [{"role": "user", "content": "\n\n".join(texts) + "\n\nwhy?"}]
    ids = reference.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
    assert ledger.count_input("why?", texts) == len(ids["input_ids"])
    assert ledger.exact and ledger.encoding == str(qwen3_tokenizer_dir.resolve())


def test_a_tokenizer_that_cannot_load_offline_is_one_clear_error() -> None:
    with pytest.raises(TokenizerUnavailableError, match=r"cannot load the tokenizer 'Qwen/Qwen3-8B' offline"):
        TokenLedger(llm="qwen3:8b")  # an Ollama tag maps to its tokenizer's hub id; not in the cache here
    with pytest.raises(ValueError, match="tiktoken does not know the tokenizer of LLM 'claude-sonnet-4-5'"):
        TokenLedger(llm="claude-sonnet-4-5")


def test_a_template_without_the_documents_variable_is_refused() -> None:
    from langchain_core.prompts import ChatPromptTemplate
    from llama_index.core.prompts import PromptTemplate

    with pytest.raises(ValueError, match=r"no variable 'context' for the documents \(its variables: \['question'\]"):
        TokenLedger(llm="gpt-4o", prompt="Question: {question}")
    chat = ChatPromptTemplate.from_messages([("system", "Docs: {docs}"), ("human", "{question}")])
    with pytest.raises(ValueError, match=r"ChatPromptTemplate has no variable 'context'.*\['docs', 'question'\]"):
        TokenLedger(llm="gpt-4o", prompt=chat)
    assert TokenLedger(llm="gpt-4o", prompt=PromptShape.from_langchain(chat, documents_variable="docs")).prompt
    with pytest.raises(ValueError, match="no variable 'context_str'"):
        TokenLedger(llm="gpt-4o", prompt=PromptTemplate("Answer {query_str}"))


# -- against a real LLM server ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def med_questions(datasets_dir: Path) -> list[str]:
    from zerank_integrations.retrieval import read_queries_jsonl

    return list(read_queries_jsonl(datasets_dir / "med" / "queries.jsonl").values())[:QUESTIONS]


def _assert_reconciled(bill: Any, ledger: TokenLedger, checks: list[tuple[int, int]]) -> None:
    """Every billed call equals the ledger's prediction; the counterfactual checks equal theirs."""
    calls = bill.calls
    assert len(calls) == QUESTIONS and bill.unpaired_llm_calls == 0
    for call in calls:
        assert call.billed_input_tokens == call.predicted_input_tokens
        assert call.predicted_all_candidates > call.predicted_input_tokens
    for billed_all, predicted_all in checks:
        assert billed_all == predicted_all
    summary = bill.summary()
    assert tuple(summary) == BILL_KEYS
    assert summary["mismatches"] == 0 and summary["exact"] is True
    billed = sum(c.billed_input_tokens for c in calls)
    everything = sum(c.predicted_all_candidates for c in calls)  # billed == predicted, so billed + removed
    assert summary["input_tokens_reranked"] == billed == summary["predicted_input_tokens_reranked"]
    assert summary["input_tokens_all_candidates"] == everything
    assert summary["input_tokens_saved"] == everything - billed
    assert summary["input_tokens_saved"] == ledger.summary()["input_tokens_saved"]


def test_langchain_chain_bill_matches_the_servers_usage(
    llm_server: LLMServer,  # noqa: F811
    scorer: ZerankScorer,
    datasets_dir: Path,
    med_questions: list[str],
    tmp_path: Path,
) -> None:
    from langchain_classic.retrievers import ContextualCompressionRetriever
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_core.runnables import RunnablePassthrough
    from langchain_openai import ChatOpenAI

    from zerank_integrations.billing.langchain import ZerankBillHandler
    from zerank_integrations.langchain import SentenceTransformerEmbeddings, ZerankRerank

    store = load_example("langchain_rag").build_store(
        med_passages(datasets_dir), str(tmp_path / "chroma"), SentenceTransformerEmbeddings(embedder=shared_embedder())
    )
    prompt = ChatPromptTemplate.from_messages(
        [("system", "Answer from these documents only:\n\n{context}"), ("human", "Question: {question}")]
    )
    ledger = TokenLedger(tokenizer=llm_server.folder, prompt=prompt)
    retriever = ContextualCompressionRetriever(
        base_compressor=ZerankRerank(scorer=scorer, top_n=TOP_N, ledger=ledger),
        base_retriever=store.as_retriever(search_kwargs={"k": TOP_K}),
    )
    llm = ChatOpenAI(base_url=llm_server.base_url, model=llm_server.model, api_key="unused", max_tokens=1)

    def join(docs: list[Any]) -> str:
        return "\n\n".join(d.page_content for d in docs)

    chain = {"context": retriever | join, "question": RunnablePassthrough()} | prompt | llm | StrOutputParser()
    handler = ZerankBillHandler(ledger)
    chain.batch(med_questions[:-1], config={"callbacks": [handler]})  # concurrent runs: pairing by run tree
    asyncio.run(chain.ainvoke(med_questions[-1], config={"callbacks": [handler]}))  # and the async path

    # the counterfactual, sent once as a check: every candidate in the same prompt
    query = med_questions[0]
    candidates = store.as_retriever(search_kwargs={"k": TOP_K}).invoke(query)
    reply = llm.invoke(prompt.format_messages(context=join(candidates), question=query))
    record = next(r for r in ledger.records if r.query == query)
    assert record.candidates == TOP_K
    _assert_reconciled(handler.bill, ledger, [(reply.usage_metadata["input_tokens"], record.input_tokens_in)])

    # a streamed call without usage is left out of the bill, counted and never guessed
    streaming = ChatOpenAI(
        base_url=llm_server.base_url, model=llm_server.model, api_key="unused", max_tokens=1, streaming=True
    )
    silent = ZerankBillHandler(ledger)
    ({"context": retriever | join, "question": RunnablePassthrough()} | prompt | streaming).invoke(
        query, config={"callbacks": [silent]}
    )
    assert silent.pairing.calls_without_usage == 1 and silent.bill.summary()["calls"] == 0


def test_llama_index_query_engine_bill_matches_the_servers_usage(
    llm_server: LLMServer,  # noqa: F811
    scorer: ZerankScorer,
    datasets_dir: Path,
    med_questions: list[str],
    tmp_path: Path,
) -> None:
    from llama_index.core.llms import ChatMessage
    from llama_index.llms.openai_like import OpenAILike

    from zerank_integrations.billing.llama_index import ZerankBillEventHandler
    from zerank_integrations.llama_index import SentenceTransformerEmbedding, ZerankRerank

    index = load_example("llama_index_query_engine").build_index(
        med_passages(datasets_dir), str(tmp_path / "chroma"), SentenceTransformerEmbedding(embedder=shared_embedder())
    )
    llm = OpenAILike(
        model=llm_server.model,
        api_base=llm_server.base_url,
        api_key="unused",
        is_chat_model=True,
        context_window=32_768,
        max_tokens=1,
    )
    # the prompt the engine really uses: its synthesizer's text_qa_template, in the form chosen for this LLM
    template = index.as_query_engine(llm=llm).get_prompts()["response_synthesizer:text_qa_template"]
    ledger = TokenLedger(tokenizer=llm_server.folder, prompt=PromptShape.from_llama_index(template, llm=llm))
    engine = index.as_query_engine(
        similarity_top_k=TOP_K, llm=llm, node_postprocessors=[ZerankRerank(scorer=scorer, top_n=TOP_N, ledger=ledger)]
    )
    handler = ZerankBillEventHandler(ledger).attach()
    try:
        for question in med_questions[:-1]:
            engine.query(question)
        asyncio.run(engine.aquery(med_questions[-1]))
    finally:
        handler.detach()

    query = med_questions[0]
    candidates = [n.node.get_content() for n in index.as_retriever(similarity_top_k=TOP_K).retrieve(query)]
    messages = [ChatMessage(role=m["role"], content=m["content"]) for m in ledger.render(query, candidates)]
    billed_all = llm.chat(messages).raw.usage.prompt_tokens
    record = next(r for r in ledger.records if r.query == query)
    _assert_reconciled(handler.bill, ledger, [(billed_all, record.input_tokens_in)])


def test_eval_bills_every_question_both_ways(
    capsys: pytest.CaptureFixture[str],
    llm_server: LLMServer,  # noqa: F811
    med_chroma: Path,
    datasets_dir: Path,
    checkpoint_dir: Path,
    tmp_path: Path,
) -> None:
    args = ["eval", "--beir", datasets_dir / "med", "--collection", DEMO_COLLECTION, "--chroma-path", med_chroma]
    args += ["--model", checkpoint_dir, "--out", tmp_path, "--max-queries", QUESTIONS, "--top-k", TOP_K]
    args += ["--llm-url", llm_server.base_url, "--llm-model", llm_server.model, "--llm-counterfactual"]
    assert main([str(a) for a in args]) == 0
    out = capsys.readouterr().out
    data = json.loads((tmp_path / "eval.json").read_text())
    bill = data["bill"]
    assert tuple(bill) == BILL_KEYS
    assert bill["calls"] == QUESTIONS and bill["mismatches"] == 0 and bill["exact"] is True
    assert (
        bill["input_tokens_reranked"] == bill["predicted_input_tokens_reranked"] == data["tokens"]["input_tokens_kept"]
    )
    assert bill["input_tokens_all_candidates"] == data["tokens"]["input_tokens_in"]
    assert bill["input_tokens_saved"] == bill["input_tokens_all_candidates"] - bill["input_tokens_reranked"] > 0
    assert bill["percent_of_input_saved"] == round(
        100 * bill["input_tokens_saved"] / bill["input_tokens_all_candidates"], 2
    )
    assert bill["llm"] == llm_server.model and bill["tokenizer"] == llm_server.model
    assert f"| LLM billed input, all top-{TOP_K} | {bill['input_tokens_all_candidates']:,} |" in out
    assert "| ledger's prediction / mismatches | " in out


def test_eval_survives_an_llm_that_is_down(
    capsys: pytest.CaptureFixture[str],
    llm_server: LLMServer,  # noqa: F811
    med_chroma: Path,
    datasets_dir: Path,
    checkpoint_dir: Path,
    tmp_path: Path,
) -> None:
    down = f"http://127.0.0.1:{free_port()}/v1"
    args = ["eval", "--beir", datasets_dir / "med", "--collection", DEMO_COLLECTION, "--chroma-path", med_chroma]
    args += ["--model", checkpoint_dir, "--out", tmp_path, "--max-queries", 1, "--top-k", 10]
    args += ["--llm-url", down, "--llm-model", llm_server.model]
    assert main([str(a) for a in args]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("LLM bill: ")]
    assert len(lines) == 1 and lines[0].startswith(f"LLM bill: LLM {llm_server.model!r} at {down} is unreachable (")
    assert lines[0].endswith("is the server running?")
    data = json.loads((tmp_path / "eval.json").read_text())
    assert data["bill"] is None and "is unreachable" in data["bill_error"]
    assert data["tokens"]["calls"] == 1 and set(data["retrieval"]) == {"ndcg@10", "recall@10", "recall@100", "mrr@10"}


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--llm-url", "http://127.0.0.1:9/v1"], "--llm-url needs --llm-model"),
        (["--llm-counterfactual"], "--llm-counterfactual needs --llm-url"),
        (["--llm-url", "127.0.0.1:9/v1", "--llm-model", "m"], "the LLM URL must be an http(s) URL"),
        (
            ["--llm-url", "http://127.0.0.1:9/v1", "--llm-model", "qwen3:8b"],
            "cannot load the tokenizer 'Qwen/Qwen3-8B'",
        ),
    ],
)
def test_llm_flags_are_checked_before_any_work(
    capsys: pytest.CaptureFixture[str], datasets_dir: Path, tmp_path: Path, flags: list[str], message: str
) -> None:
    code = main(["eval", "--beir", str(datasets_dir / "med"), "--out", str(tmp_path), *flags])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1 and lines[0].startswith("zerank-integrations: error: "), err
    assert message in lines[0]
    assert not list(tmp_path.iterdir())  # nothing was written
