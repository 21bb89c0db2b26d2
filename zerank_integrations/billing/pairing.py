"""Pair each LLM call with the rerank call that fed it, through the framework's run (span) tree.

Both frameworks report events with the id of the run (LangChain) or span (LlamaIndex) they happen in, and
every run knows its parent. A rerank call's savings and the LLM call it feeds share a root (one chain
``invoke``, one query engine ``query``), so each LLM call takes the oldest unpaired savings under its root.
Concurrent queries have different roots and never mix. A run is forgotten when it ends (events only ever
come from open runs), so memory stays bounded over a long-lived process.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Hashable, Mapping
from typing import Any

from zerank_integrations.accounting.bill import Bill, BilledCall

logger = logging.getLogger(__name__)


class CallPairing:
    """Run tree + pending savings per root; fills ``bill`` with one :class:`BilledCall` per paired LLM call."""

    def __init__(self, ledger: Any, bill: Bill | None = None) -> None:
        if getattr(ledger, "prompt", None) is None:
            raise ValueError(
                "reconciling with the LLM's bill needs the ledger to know the prompt: "
                "TokenLedger(..., prompt=your_prompt_template)"
            )
        self.ledger = ledger
        self.bill = bill if bill is not None else Bill.for_ledger(ledger)
        self._parents: dict[Hashable, Hashable | None] = {}
        self._pending: dict[Hashable, deque[Mapping[str, Any]]] = {}
        self._lock = threading.Lock()
        self.calls_without_usage = 0
        """LLM calls whose response carried no usage: they cannot be billed and are left out (logged)."""

    def start(self, run_id: Hashable, parent_id: Hashable | None) -> None:
        with self._lock:
            self._parents[run_id] = parent_id

    def end(self, run_id: Hashable) -> None:
        with self._lock:
            parent = self._parents.pop(run_id, None)
            if parent is None:
                self._pending.pop(run_id, None)  # a root ended: savings no LLM call took are dropped

    def _root(self, run_id: Hashable | None) -> Hashable | None:
        seen = 0
        while run_id is not None and self._parents.get(run_id) is not None and seen < 10_000:
            run_id = self._parents[run_id]
            seen += 1
        return run_id

    def savings(self, run_id: Hashable | None, savings: Mapping[str, Any]) -> None:
        """A rerank call's ``TokenSavings`` (as a dict) reported inside run ``run_id``."""
        with self._lock:
            self._pending.setdefault(self._root(run_id), deque()).append(savings)

    def llm_call(self, run_id: Hashable | None, billed_input_tokens: int | None) -> BilledCall | None:
        """An LLM call ended inside ``run_id``, billing ``billed_input_tokens``; returns the billed call if paired."""
        if billed_input_tokens is None:
            with self._lock:
                self.calls_without_usage += 1
            logger.warning(
                "the LLM reported no input-token usage for a call: it is left out of the bill (enable usage "
                "reporting on the server/client, e.g. stream_usage=True for streamed calls)"
            )
            return None
        with self._lock:
            queue = self._pending.get(self._root(run_id))
            savings = queue.popleft() if queue else None
        if savings is None:
            self.bill.add_unpaired(billed_input_tokens)
            return None
        return self.bill.add(
            BilledCall(
                query=savings.get("query"),
                billed_input_tokens=billed_input_tokens,
                predicted_input_tokens=savings.get("input_tokens_kept"),
                predicted_all_candidates=savings.get("input_tokens_in"),
            )
        )
