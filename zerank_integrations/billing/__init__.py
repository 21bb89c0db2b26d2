"""Reconcile what reranking saved with what the LLM billed.

* :mod:`zerank_integrations.billing.langchain` - ``ZerankBillHandler``, a LangChain callback handler;
* :mod:`zerank_integrations.billing.llama_index` - ``ZerankBillEventHandler``, a LlamaIndex instrumentation
  handler;
* :mod:`zerank_integrations.billing.openai_compatible` - send prompts to any OpenAI-compatible ``/v1``
  server (vLLM, Ollama, TGI, ``transformers serve``, OpenAI) and bill them (``eval``/``demo --llm-url``).

Each pairs an LLM call's reported input tokens with the rerank call that fed it (:class:`CallPairing`) and
fills an :class:`~zerank_integrations.accounting.bill.Bill`. Framework modules import their framework; this
package's root does not.
"""

from __future__ import annotations

from zerank_integrations.billing.pairing import CallPairing

__all__ = ["CallPairing"]
