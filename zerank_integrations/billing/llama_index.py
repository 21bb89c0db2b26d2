"""``ZerankBillEventHandler``: LlamaIndex instrumentation that reconciles reranking's savings with the LLM's bill.

``handler = ZerankBillEventHandler(ledger).attach()`` registers an event handler and a span handler on
LlamaIndex's root dispatcher. Each :class:`~zerank_integrations.llama_index.TokenSavingsEvent` (emitted by
``ZerankRerank`` with a ledger) and the usage of the LLM call it feeds (``LLMChatEndEvent`` /
``LLMCompletionEndEvent``: the OpenAI-style ``usage`` of the raw response) are paired through the span tree of
one query; :attr:`bill` then holds billed, predicted and counterfactual input tokens per call.
``handler.detach()`` unregisters it.
"""

from __future__ import annotations

import inspect
from typing import Any

from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.llm import LLMChatEndEvent, LLMCompletionEndEvent
from llama_index.core.instrumentation.span import BaseSpan
from llama_index.core.instrumentation.span_handlers import BaseSpanHandler

from zerank_integrations.accounting.bill import Bill, usage_input_tokens
from zerank_integrations.billing.pairing import CallPairing
from zerank_integrations.llama_index import TokenSavingsEvent

__all__ = ["ZerankBillEventHandler", "reported_input_tokens"]


class _SpanTree(BaseSpanHandler[BaseSpan]):
    """Feeds span parents to the pairing; keeps no spans of its own."""

    _pairing: Any = PrivateAttr(default=None)

    def __init__(self, pairing: CallPairing) -> None:
        super().__init__()
        self._pairing = pairing

    @classmethod
    def class_name(cls) -> str:
        return "ZerankBillSpanTree"

    def span_enter(
        self,
        id_: str,
        bound_args: inspect.BoundArguments,
        instance: Any = None,
        parent_id: str | None = None,
        tags: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._pairing.start(id_, parent_id)

    def span_exit(self, id_: str, bound_args: inspect.BoundArguments, instance: Any = None, **kwargs: Any) -> None:
        self._pairing.end(id_)

    def span_drop(self, id_: str, bound_args: inspect.BoundArguments, instance: Any = None, **kwargs: Any) -> None:
        self._pairing.end(id_)

    def new_span(self, *args: Any, **kwargs: Any) -> None:
        return None

    def prepare_to_exit_span(self, *args: Any, **kwargs: Any) -> None:
        return None

    def prepare_to_drop_span(self, *args: Any, **kwargs: Any) -> None:
        return None


class ZerankBillEventHandler(BaseEventHandler):
    """Pairs every LLM call's reported input tokens with the rerank call that fed it; thread- and asyncio-safe."""

    pairing: Any = None
    span_tree: Any = None

    def __init__(self, ledger: Any, bill: Bill | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pairing = CallPairing(ledger, bill)
        self.span_tree = _SpanTree(self.pairing)

    @classmethod
    def class_name(cls) -> str:
        return "ZerankBillEventHandler"

    @property
    def bill(self) -> Bill:
        return self.pairing.bill

    def attach(self, dispatcher: Any = None) -> ZerankBillEventHandler:
        """Register on ``dispatcher`` (default: LlamaIndex's root dispatcher, which sees every module's events)."""
        target = dispatcher if dispatcher is not None else get_dispatcher()
        target.add_span_handler(self.span_tree)
        target.add_event_handler(self)
        return self

    def detach(self, dispatcher: Any = None) -> None:
        target = dispatcher if dispatcher is not None else get_dispatcher()
        target.event_handlers = [h for h in target.event_handlers if h is not self]
        target.span_handlers = [h for h in target.span_handlers if h is not self.span_tree]

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        if isinstance(event, TokenSavingsEvent):
            self.pairing.savings(event.span_id, event.savings.to_dict())
        elif isinstance(event, (LLMChatEndEvent, LLMCompletionEndEvent)) and event.response is not None:
            self.pairing.llm_call(event.span_id, reported_input_tokens(event.response))


def reported_input_tokens(response: Any) -> int | None:
    """Input tokens of a LlamaIndex ``ChatResponse``/``CompletionResponse``: the raw response's ``usage``."""
    raw = getattr(response, "raw", None)
    if raw is not None:
        usage = raw.get("usage") if isinstance(raw, dict) else getattr(raw, "usage", None)
        return usage_input_tokens(usage)
    return usage_input_tokens(getattr(response, "additional_kwargs", None))
