"""A small, dated table of LLM list prices for *input* (prompt) tokens, in USD per million tokens.

Prices change; that is why the table carries a date (``PRICES_AS_OF``, reported in every summary) and why
every ledger accepts ``price_per_million_input=`` to override it. Figures are the standard (non-batch,
non-cached) rate for prompts up to 200k tokens, collected from the providers' public price lists.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

PRICES_AS_OF = "2026-06"
"""Month of the price lists the table was collected from (reported as ``prices_as_of``)."""

PRICE_SOURCES: dict[str, str] = {
    "openai": "https://platform.openai.com/docs/pricing",
    "anthropic": "https://docs.anthropic.com/en/docs/about-claude/pricing",
    "google": "https://ai.google.dev/gemini-api/docs/pricing",
}


@dataclass(frozen=True)
class ModelPrice:
    """One row of the table: what one million prompt tokens cost on ``model``."""

    model: str
    provider: str
    input_usd_per_million: float
    note: str = ""


def _rows(provider: str, rows: dict[str, float], notes: dict[str, str] | None = None) -> list[ModelPrice]:
    notes = notes or {}
    return [ModelPrice(m, provider, p, notes.get(m, "")) for m, p in rows.items()]


_TABLE: dict[str, ModelPrice] = {
    row.model: row
    for row in [
        *_rows(
            "openai",
            {
                "gpt-5.5": 5.00,
                "gpt-5.4": 2.50,
                "gpt-5.4-mini": 0.75,
                "gpt-5.4-nano": 0.20,
                "gpt-5.1": 1.25,
                "gpt-5": 1.25,
                "gpt-5-mini": 0.25,
                "gpt-5-nano": 0.05,
                "gpt-4.1": 2.00,
                "gpt-4.1-mini": 0.40,
                "gpt-4.1-nano": 0.10,
                "gpt-4o": 2.50,
                "gpt-4o-2024-05-13": 5.00,
                "gpt-4o-mini": 0.15,
                "o1": 15.00,
                "o3": 2.00,
                "o3-mini": 1.10,
                "o4-mini": 1.10,
                "gpt-4-turbo": 10.00,
                "gpt-4": 30.00,
                "gpt-3.5-turbo": 0.50,
            },
            {"gpt-4o-2024-05-13": "first gpt-4o snapshot, priced above the current alias"},
        ),
        *_rows(
            "anthropic",
            {
                "claude-opus-4-7": 5.00,
                "claude-opus-4-6": 5.00,
                "claude-opus-4-5": 5.00,
                "claude-opus-4-1": 15.00,
                "claude-opus-4-0": 15.00,
                "claude-opus-4": 15.00,
                "claude-sonnet-4-6": 3.00,
                "claude-sonnet-4-5": 3.00,
                "claude-sonnet-4-0": 3.00,
                "claude-sonnet-4": 3.00,
                "claude-3-7-sonnet": 3.00,
                "claude-haiku-4-5": 1.00,
                "claude-3-5-haiku": 0.80,
                "claude-3-haiku": 0.25,
            },
        ),
        *_rows(
            "google",
            {
                "gemini-3.1-pro": 2.00,
                "gemini-3-pro": 2.00,
                "gemini-3-flash": 0.50,
                "gemini-3.1-flash-lite": 0.25,
                "gemini-2.5-pro": 1.25,
                "gemini-2.5-flash": 0.30,
                "gemini-2.5-flash-lite": 0.10,
                "gemini-2.0-flash": 0.10,
            },
            {
                "gemini-3.1-pro": "prompts <= 200k tokens (twice that above)",
                "gemini-3-pro": "prompts <= 200k tokens (twice that above)",
                "gemini-2.5-pro": "prompts <= 200k tokens (twice that above)",
            },
        ),
    ]
}

# Dated snapshot names resolve to their alias: gpt-4o-2024-08-06 -> gpt-4o, claude-haiku-4-5-20251001 -> ...
_SNAPSHOT_SUFFIX = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{8})$")
_PREVIEW_SUFFIX = re.compile(r"-(?:preview|latest)(?:-\d{2}-\d{4}|-\d{2}-\d{2})?$")


def price_table() -> dict[str, ModelPrice]:
    """The built-in table (a copy), keyed by model name; dated by ``PRICES_AS_OF``."""
    return dict(_TABLE)


def price_table_rows() -> list[dict[str, object]]:
    """The table as plain dicts (for docs and reports), with the date on every row."""
    return [asdict(row) | {"as_of": PRICES_AS_OF} for row in _TABLE.values()]


def lookup_price(model: str) -> ModelPrice | None:
    """Price row for ``model``: exact name first, then the alias of a dated or preview snapshot name.

    No fuzzy prefix matching: ``gpt-4o-mini`` must never be priced as ``gpt-4o``.
    """
    if model in _TABLE:
        return _TABLE[model]
    for pattern in (_SNAPSHOT_SUFFIX, _PREVIEW_SUFFIX):
        base = pattern.sub("", model)
        if base != model and base in _TABLE:
            return _TABLE[base]
    return None
