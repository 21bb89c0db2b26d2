"""``ZerankBillHandler``: a LangChain callback handler that reconciles reranking's savings with the LLM's bill.

Pass it in ``config={"callbacks": [handler]}`` of a chain whose retriever reranks with
:class:`zerank_integrations.langchain.ZerankRerank` (with a ledger that knows the prompt). Each rerank call's
``zerank_token_savings`` event and the ``usage_metadata`` (or OpenAI ``token_usage``) of the chat model call
it feeds are paired through the run tree; :attr:`bill` then holds billed, predicted and counterfactual input
tokens per call.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.outputs import LLMResult

from zerank_integrations.accounting.bill import Bill, usage_input_tokens
from zerank_integrations.billing.pairing import CallPairing
from zerank_integrations.langchain import SAVINGS_EVENT

__all__ = ["ZerankBillHandler", "reported_input_tokens"]


class ZerankBillHandler(BaseCallbackHandler):
    """Pairs every LLM call's reported input tokens with the rerank call that fed it; thread-safe.

    ``handler.bill.summary()``: calls, billed input with reranking, the counterfactual without it, the saving,
    the ledger's prediction and the mismatches (none where the ledger counts with the LLM's own tokenizer).
    """

    def __init__(self, ledger: Any, bill: Bill | None = None) -> None:
        super().__init__()
        self.pairing = CallPairing(ledger, bill)

    @property
    def bill(self) -> Bill:
        return self.pairing.bill

    # -- the run tree -------------------------------------------------------------------------------------
    def on_chain_start(
        self, serialized: Any, inputs: Any, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        self.pairing.start(run_id, parent_run_id)

    def on_retriever_start(
        self, serialized: Any, query: str, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        self.pairing.start(run_id, parent_run_id)

    def on_chat_model_start(
        self, serialized: Any, messages: Any, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        self.pairing.start(run_id, parent_run_id)

    def on_llm_start(
        self, serialized: Any, prompts: Any, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        self.pairing.start(run_id, parent_run_id)

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self.pairing.end(run_id)

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self.pairing.end(run_id)

    def on_retriever_end(self, documents: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self.pairing.end(run_id)

    def on_retriever_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self.pairing.end(run_id)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self.pairing.end(run_id)

    # -- what is paired -----------------------------------------------------------------------------------
    def on_custom_event(self, name: str, data: Any, *, run_id: UUID, **kwargs: Any) -> None:
        if name == SAVINGS_EVENT:
            self.pairing.savings(run_id, data)

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        self.pairing.llm_call(run_id, reported_input_tokens(response))
        self.pairing.end(run_id)


def reported_input_tokens(response: LLMResult) -> int | None:
    """Input tokens the LLM reported: the message's ``usage_metadata``, else ``llm_output["token_usage"]``."""
    total = 0
    found = False
    for generations in response.generations:
        for generation in generations[:1]:  # n>1 choices share one prompt
            message = getattr(generation, "message", None)
            tokens = usage_input_tokens(getattr(message, "usage_metadata", None))
            if tokens is not None:
                total += tokens
                found = True
    if found:
        return total
    return usage_input_tokens((response.llm_output or {}).get("token_usage"))
