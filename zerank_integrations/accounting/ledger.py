"""``TokenLedger``: how many prompt tokens (and dollars) reranking saved, per call and in total.

What is counted: the text the LLM would receive. ``tokens_in`` is the token count of all candidate documents
(after ``formatter``) joined with ``separator``; ``tokens_kept`` is the same for the documents kept after
reranking; ``tokens_saved = tokens_in - tokens_kept``. Counting treats text that looks like a special token
(``<|endoftext|>``) as ordinary text, as it is when sent to an LLM API.

With ``prompt=`` (the application's prompt template, :mod:`~zerank_integrations.accounting.prompts`), each
record also counts the **whole input** both ways - question, instructions and chat formatting included
(``input_tokens_in`` / ``input_tokens_kept``) - so the summary gives the share of the input bill saved, the
figure an LLM server's ``usage.prompt_tokens`` can be reconciled with (:mod:`~zerank_integrations.accounting.bill`).
Every record and the summary say whether the counts are ``exact`` (the LLM's own tokenizer) or an
``approximation`` (a stand-in tokenizer).
"""

from __future__ import annotations

import csv
import io
import json
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from os import PathLike
from pathlib import Path
from typing import Any

from zerank_integrations.accounting.counters import TokenCounter, resolve_counter
from zerank_integrations.accounting.encodings import CL100K_PAT, O200K_PAT
from zerank_integrations.accounting.prices import PRICES_AS_OF, lookup_price
from zerank_integrations.accounting.prompts import PromptShape, prompt_shape
from zerank_integrations.base import as_list, rounded_percent

Formatter = Callable[[Any], str]

DEFAULT_SEPARATOR = "\n\n"
DEFAULT_CACHE_SIZE = 4096

# Pre-tokenizer regexes for which a cut right after a separator ending in "\n" is provably a chunk boundary
# (see _Counter); other encodings always count the joined text directly.
_CUT_SAFE_PATTERNS = frozenset({CL100K_PAT, O200K_PAT})


@dataclass(frozen=True, slots=True)
class TokenSavings:
    """One rerank call: ``candidates`` documents went in, ``kept`` came out, and what that saved."""

    query: str
    candidates: int
    kept: int
    tokens_in: int
    tokens_kept: int
    tokens_saved: int
    percent_saved: float
    cost_saved_usd: float | None
    timestamp: float
    """Seconds since the epoch (``time.time()``) when the call was recorded."""
    exact: bool | None = None
    """Whether the counts come from the LLM's own tokenizer (``False``: a stand-in, an approximation)."""
    input_tokens_in: int | None = None
    """The whole LLM input (prompt template, question, chat formatting) with every candidate (needs ``prompt=``)."""
    input_tokens_kept: int | None = None
    """The whole LLM input with the kept documents: what the LLM should bill for this call (needs ``prompt=``)."""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


RECORD_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(TokenSavings))


class _Counter:
    """Exact token counts of ``separator.join(texts)``, cheap when the same texts come back.

    Rerank results are a subset of the candidates, and pipelines see the same chunks again and again, so
    per-text counts are cached (LRU, ``cache_size`` entries). Summing per-text counts is only exact where
    the pre-tokenizer regex cannot match across a text boundary. For cl100k_base and o200k_base a match that
    ends in "\\n" can only continue into the next text if that text starts with whitespace, or (o200k) with
    "/"; no match can start with "\\n" and then continue into letters, digits or other symbols. So with a
    separator ending in "\\n", ``count(A + sep + B + ...) == count(A + sep) + count(B + ...)`` whenever B
    starts with anything else. Texts after a cut that is not provably clean (starting with whitespace or
    "/", or empty) are counted together with the text before them; other separators and encodings always
    count the joined string directly. Both paths are checked against direct counts in the tests.
    """

    def __init__(self, counter: TokenCounter, separator: str, cache_size: int) -> None:
        self._count = counter.count
        self._sep = separator
        self._size = cache_size
        self._fast = (
            cache_size > 0 and separator.endswith("\n") and getattr(counter, "pattern", None) in _CUT_SAFE_PATTERNS
        )
        self._cache: OrderedDict[tuple[tuple[str, ...], bool], int] = OrderedDict()
        self._lock = threading.Lock()

    def count_joined(self, texts: Sequence[str]) -> int:
        if not texts:
            return 0
        if not self._fast:
            return self._count(self._sep.join(texts))
        # Split at every provably clean cut; runs between clean cuts are counted (and cached) as one piece.
        total = 0
        start = 0
        n = len(texts)
        for i in range(1, n + 1):
            if i == n or _clean_cut_before(texts[i]):
                total += self._piece(tuple(texts[start:i]), i != n)
                start = i
        return total

    def _piece(self, run: tuple[str, ...], with_separator: bool) -> int:
        key = (run, with_separator)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        text = self._sep.join(run)
        count = self._count(text + self._sep if with_separator else text)
        with self._lock:
            self._cache[key] = count
            if len(self._cache) > self._size:
                self._cache.popitem(last=False)
        return count


def _clean_cut_before(text: str) -> bool:
    """True when no cl100k/o200k pre-token can span from a separator ending in "\\n" into ``text``."""
    return bool(text) and not text[0].isspace() and text[0] != "/"


class TokenLedger:
    """Records what each rerank call removed from the LLM prompt; thread-safe, totals exact.

    >>> ledger = TokenLedger(llm="gpt-4o")                 # encoding from tiktoken's model table
    >>> saving = ledger.record("q", ["a long passage", "another one"], ["a long passage"])
    >>> ledger.summary()["tokens_saved"] == saving.tokens_saved
    True

    ``llm`` picks the tokenizer (tiktoken's model table for OpenAI models; the Hugging Face tokenizer of an open
    model: a hub id, a local folder or a well-known name such as ``qwen3:8b``, loaded offline) and the price
    (from the dated table in ``prices``); ``encoding`` (a tiktoken encoding: a stand-in, flagged as an
    approximation, for LLMs such as Claude or Gemini) or ``tokenizer`` (a Hugging Face tokenizer: hub id,
    folder or object, or any ``TokenCounter``) overrides the former, ``price_per_million_input`` the latter.
    ``prompt`` is the application's prompt template (format string, LangChain or LlamaIndex template, or a
    ``PromptShape``): with it the whole LLM input is counted too.
    ``formatter`` turns each document into the text the prompt contains (default: the document itself,
    which must then be a ``str``); ``separator`` is what the prompt puts between documents.
    ``max_records`` bounds the per-call history kept in memory (totals always cover every call);
    ``cache_size`` bounds the per-text token-count cache (0 turns it off).
    """

    def __init__(
        self,
        llm: str | None = None,
        *,
        encoding: str | None = None,
        tokenizer: Any = None,
        prompt: Any = None,
        price_per_million_input: float | None = None,
        formatter: Formatter | None = None,
        separator: str = DEFAULT_SEPARATOR,
        max_records: int | None = None,
        cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> None:
        if llm is not None and (not isinstance(llm, str) or not llm.strip()):
            raise ValueError(f"llm must be a non-empty model name, got {llm!r}")
        if encoding is not None and (not isinstance(encoding, str) or not encoding.strip()):
            raise ValueError(f"encoding must be a non-empty tiktoken encoding name, got {encoding!r}")
        if llm is None and encoding is None and tokenizer is None:
            raise ValueError(
                "TokenLedger needs llm= (e.g. 'gpt-4o'), encoding= (e.g. 'o200k_base') or tokenizer= "
                "(e.g. 'Qwen/Qwen3-8B' or a local folder)"
            )
        if not isinstance(separator, str):
            raise TypeError(f"separator must be a string, got {type(separator).__name__}")
        if formatter is not None and not callable(formatter):
            raise TypeError(f"formatter must be a callable document -> str, got {type(formatter).__name__}")
        if max_records is not None and (isinstance(max_records, bool) or not isinstance(max_records, int)):
            raise TypeError(f"max_records must be an int or None, got {max_records!r}")
        if max_records is not None and max_records < 0:
            raise ValueError(f"max_records must be >= 0, got {max_records}")
        if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 0:
            raise ValueError(f"cache_size must be an int >= 0, got {cache_size!r}")

        self._llm = llm
        self._token_counter = resolve_counter(llm, encoding=encoding, tokenizer=tokenizer)
        self._encoding_name = self._token_counter.name
        self._prompt = prompt_shape(prompt) if prompt is not None else None
        self._price, self._price_source = self._resolve_price(llm, price_per_million_input)
        self._formatter = formatter
        self._separator = separator
        self._counter = _Counter(self._token_counter, separator, cache_size)

        self._lock = threading.RLock()
        self._records: deque[TokenSavings] = deque(maxlen=max_records)
        self._calls = self._candidates = self._kept = self._tokens_in = self._tokens_kept = 0
        self._input_in = self._input_kept = 0

    @staticmethod
    def _resolve_price(llm: str | None, override: float | None) -> tuple[float | None, str | None]:
        if override is not None:
            if isinstance(override, bool) or not isinstance(override, (int, float)):
                raise TypeError(f"price_per_million_input must be a number, got {override!r}")
            if not math.isfinite(override) or override < 0:
                raise ValueError(f"price_per_million_input must be finite and >= 0, got {override!r}")
            return float(override), "override"
        row = lookup_price(llm) if llm is not None else None
        return (row.input_usd_per_million, "table") if row else (None, None)

    # -- properties --------------------------------------------------------------------------------
    @property
    def llm(self) -> str | None:
        return self._llm

    @property
    def encoding(self) -> str:
        """Name of what counts are made with: a tiktoken encoding, or a Hugging Face tokenizer's id or folder."""
        return self._encoding_name

    @property
    def counter(self) -> TokenCounter:
        """The token counter (``count`` text, ``count_messages`` a chat request)."""
        return self._token_counter

    @property
    def exact(self) -> bool:
        """Whether counts come from the LLM's own tokenizer; ``False``: a stand-in, figures are approximations."""
        return self._token_counter.exact

    @property
    def prompt(self) -> PromptShape | None:
        """The application's prompt the whole input is counted with (``None``: documents only)."""
        return self._prompt

    @property
    def separator(self) -> str:
        return self._separator

    @property
    def formatter(self) -> Formatter | None:
        """What turns a document into prompt text (``None``: documents are the text)."""
        return self._formatter

    @property
    def price_per_million_input(self) -> float | None:
        """USD per million input tokens used for ``cost_saved_usd``; ``None`` when no price is known."""
        return self._price

    @property
    def records(self) -> list[TokenSavings]:
        """Every recorded call (the last ``max_records`` if bounded), in recording order; a copy."""
        with self._lock:
            return list(self._records)

    # -- recording ---------------------------------------------------------------------------------
    def count_tokens(self, documents: Iterable[Any]) -> int:
        """Tokens of ``documents`` as the prompt would hold them (formatted, joined with the separator).

        This is what a ``max_prompt_tokens`` budget is measured with, so kept documents and their recorded
        ``tokens_kept`` always agree.
        """
        return self._counter.count_joined(self._texts(documents, "documents"))

    def record(self, query: str, candidates: Iterable[Any], kept: Iterable[Any]) -> TokenSavings:
        """Account for one rerank call: ``candidates`` went into the reranker, ``kept`` go to the LLM."""
        if not isinstance(query, str):
            raise TypeError(f"query must be a string, got {type(query).__name__}")
        candidate_texts = self._texts(candidates, "candidates")
        kept_texts = self._texts(kept, "kept")
        tokens_in = self._counter.count_joined(candidate_texts)
        tokens_kept = self._counter.count_joined(kept_texts)
        input_in = input_kept = None
        if self._prompt is not None:
            input_in = self._count_input(query, candidate_texts)
            input_kept = self._count_input(query, kept_texts)
        saved = tokens_in - tokens_kept
        cost = saved * self._price / 1_000_000 if self._price is not None else None
        with self._lock:
            entry = TokenSavings(
                query=query,
                candidates=len(candidate_texts),
                kept=len(kept_texts),
                tokens_in=tokens_in,
                tokens_kept=tokens_kept,
                tokens_saved=saved,
                percent_saved=rounded_percent(saved, tokens_in),
                cost_saved_usd=cost,
                timestamp=time.time(),
                exact=self.exact,
                input_tokens_in=input_in,
                input_tokens_kept=input_kept,
            )
            self._records.append(entry)
            self._calls += 1
            self._candidates += entry.candidates
            self._kept += entry.kept
            self._tokens_in += tokens_in
            self._tokens_kept += tokens_kept
            if input_in is not None and input_kept is not None:
                self._input_in += input_in
                self._input_kept += input_kept
        return entry

    def render(self, query: str, documents: Iterable[Any]) -> list[dict[str, str]]:
        """The chat messages the application sends for ``query`` with ``documents`` (needs ``prompt=``)."""
        return self._require_prompt().render(query, self._separator.join(self._texts(documents, "documents")))

    def count_input(self, query: str, documents: Iterable[Any]) -> int:
        """Tokens of the whole LLM input for ``query`` with ``documents``: what the LLM bills (needs ``prompt=``)."""
        return self._count_input(query, self._texts(documents, "documents"))

    def _count_input(self, query: str, texts: list[str]) -> int:
        messages = self._require_prompt().render(query, self._separator.join(texts))
        return self._token_counter.count_messages(messages)

    def _require_prompt(self) -> PromptShape:
        if self._prompt is None:
            raise ValueError(
                "counting the whole LLM input needs the application's prompt: TokenLedger(..., prompt=template)"
            )
        return self._prompt

    def _texts(self, documents: Iterable[Any], which: str) -> list[str]:
        docs = as_list(documents, f"{which} must be a sequence of documents")
        formatter = self._formatter
        if formatter is None:
            for index, doc in enumerate(docs):
                if not isinstance(doc, str):
                    raise TypeError(
                        f"{which}[{index}] is {type(doc).__name__}, expected str; pass formatter= to turn "
                        "documents into the text the prompt holds"
                    )
            return docs
        texts = []
        for index, doc in enumerate(docs):
            text = formatter(doc)
            if not isinstance(text, str):
                raise TypeError(f"formatter returned {type(text).__name__} for {which}[{index}], expected str")
            texts.append(text)
        return texts

    # -- reporting ---------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """Totals over every call since creation (or ``reset``); percent and cost from the token totals."""
        with self._lock:
            saved = self._tokens_in - self._tokens_kept
            whole = self._prompt is not None
            input_saved = self._input_in - self._input_kept
            return {
                "calls": self._calls,
                "candidates": self._candidates,
                "kept": self._kept,
                "tokens_in": self._tokens_in,
                "tokens_kept": self._tokens_kept,
                "tokens_saved": saved,
                "percent_saved": rounded_percent(saved, self._tokens_in),
                "cost_saved_usd": saved * self._price / 1_000_000 if self._price is not None else None,
                "llm": self._llm,
                "encoding": self._encoding_name,
                "tokenizer": self._encoding_name,
                "counting": "exact" if self.exact else "approximation",
                "prompt": self._prompt.description if whole else None,  # type: ignore[union-attr]
                "input_tokens_in": self._input_in if whole else None,
                "input_tokens_kept": self._input_kept if whole else None,
                "input_tokens_saved": input_saved if whole else None,
                "percent_of_input_saved": rounded_percent(input_saved, self._input_in) if whole else None,
                "input_cost_saved_usd": input_saved * self._price / 1_000_000
                if whole and self._price is not None
                else None,
                "price_per_million_input": self._price,
                "price_source": self._price_source,
                "prices_as_of": PRICES_AS_OF if self._price_source == "table" else None,
            }

    def reset(self) -> None:
        """Forget every record and total (the token-count cache stays: counts do not change)."""
        with self._lock:
            self._records.clear()
            self._calls = self._candidates = self._kept = self._tokens_in = self._tokens_kept = 0
            self._input_in = self._input_kept = 0

    def to_json(self, path: str | PathLike[str] | None = None, *, indent: int | None = 2) -> str:
        """``{"summary": ..., "records": [...]}`` as JSON text; also written to ``path`` if given."""
        with self._lock:
            payload = {"summary": self.summary(), "records": [r.to_dict() for r in self._records]}
        text = json.dumps(payload, indent=indent, ensure_ascii=False)
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    def to_csv(self, path: str | PathLike[str] | None = None) -> str:
        """One row per recorded call (columns: ``RECORD_FIELDS``); also written to ``path`` if given."""
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(RECORD_FIELDS)
        for entry in self.records:
            writer.writerow(["" if value is None else value for value in entry.to_dict().values()])
        text = buffer.getvalue()
        if path is not None:
            with open(path, "w", encoding="utf-8", newline="") as handle:
                handle.write(text)
        return text

    def __repr__(self) -> str:
        s = self.summary()
        return (
            f"TokenLedger(llm={self._llm!r}, encoding={self._encoding_name!r}, calls={s['calls']}, "
            f"tokens_saved={s['tokens_saved']}, percent_saved={s['percent_saved']:.1f})"
        )
