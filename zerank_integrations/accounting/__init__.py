"""Token-savings accounting: how many prompt tokens and dollars reranking saves (tiktoken only, offline).

No torch and no LLM framework is imported here, so adapters can record every call cheaply.
"""

from __future__ import annotations

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

__all__ = [
    "NETWORK_TIMEOUT_S",
    "PRICES_AS_OF",
    "PRICE_SOURCES",
    "RECORD_FIELDS",
    "ModelPrice",
    "TokenLedger",
    "TokenSavings",
    "encoding_name_for_llm",
    "encoding_source",
    "get_encoding",
    "lookup_price",
    "price_table",
    "price_table_rows",
]
