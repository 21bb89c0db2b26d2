"""Token-savings accounting: how many prompt tokens and dollars reranking saves, and what the LLM billed.

Counts come from the LLM's own tokenizer where there is one (tiktoken for OpenAI models, the Hugging Face
tokenizer of an open model, loaded offline); a stand-in is flagged as an approximation.

No torch and no LLM framework is imported here, so adapters can record every call cheaply.
"""

from __future__ import annotations

from zerank_integrations.accounting.bill import BILL_KEYS, Bill, BilledCall, usage_input_tokens
from zerank_integrations.accounting.counters import (
    OPEN_MODEL_TOKENIZERS,
    OPENAI_CHAT_RULE,
    HFTokenizerCounter,
    TiktokenCounter,
    TokenCounter,
    TokenizerUnavailableError,
    resolve_counter,
)
from zerank_integrations.accounting.encodings import (
    NETWORK_TIMEOUT_S,
    encoding_name_for_llm,
    encoding_source,
    get_encoding,
)
from zerank_integrations.accounting.ledger import RECORD_FIELDS, TokenLedger, TokenSavings
from zerank_integrations.accounting.prices import (
    PRICE_SOURCES,
    PRICES_AS_OF,
    ModelPrice,
    lookup_price,
    price_table,
    price_table_rows,
)
from zerank_integrations.accounting.prompts import DEFAULT_RAG_PROMPT, DEFAULT_RAG_SYSTEM, PromptShape, prompt_shape

__all__ = [
    "BILL_KEYS",
    "DEFAULT_RAG_PROMPT",
    "DEFAULT_RAG_SYSTEM",
    "NETWORK_TIMEOUT_S",
    "OPENAI_CHAT_RULE",
    "OPEN_MODEL_TOKENIZERS",
    "PRICES_AS_OF",
    "PRICE_SOURCES",
    "RECORD_FIELDS",
    "Bill",
    "BilledCall",
    "HFTokenizerCounter",
    "ModelPrice",
    "PromptShape",
    "TiktokenCounter",
    "TokenCounter",
    "TokenLedger",
    "TokenSavings",
    "TokenizerUnavailableError",
    "encoding_name_for_llm",
    "encoding_source",
    "get_encoding",
    "lookup_price",
    "price_table",
    "price_table_rows",
    "prompt_shape",
    "resolve_counter",
    "usage_input_tokens",
]
