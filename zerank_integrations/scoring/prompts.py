"""How a (query, document) pair becomes token ids for a zerank-style model.

zerank-2 scores ``chat_template([system: query, user: document], add_generation_prompt=True)``. Rendering and
tokenizing that string once per pair is correct but wasteful, and truncating the rendered string could cut the
template's suffix. Instead the template is rendered once with sentinels and cut into three literal token runs::

    head  = "<|im_start|>system\\n"
    middle = "<|im_end|>\\n<|im_start|>user\\n"
    tail  = "<|im_end|>\\n<|im_start|>assistant\\n"

so a pair is ``head + query + middle + document + tail``. Every run ends at a special token or a newline, where
the byte-level pre-tokenizer always splits, so the concatenation equals tokenizing the rendered prompt; that is
checked on probe pairs when the template is built, and the tests compare against the rendered prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

_QUERY_SENTINEL = "\ue000zerank-query\ue001"
_DOCUMENT_SENTINEL = "\ue002zerank-document\ue003"
_PROBES = (
    ("What is the boiling point of water?", "Water boils at 100 °C at sea level.\nSecond line."),
    ("¿Qué? 42 tokens, (maybe)", '  "quoted" start — dash; 1234 numbers\t\ttabs '),
    ("a", ""),
)


class PromptTemplateError(ValueError):
    """The tokenizer's chat template cannot be cut into query/document slots."""


def render_prompt(tokenizer: Any, query: str, document: str) -> str:
    """The exact prompt zerank-2 is trained on (query and document already stripped by the caller)."""
    messages = [{"role": "system", "content": query}, {"role": "user", "content": document}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


@dataclass(frozen=True)
class EncodedPair:
    """One pair's token ids, split where the shared query prefix ends."""

    prefix: tuple[int, ...]  # head + query + middle: identical for every document of one query
    continuation: list[int]  # document + tail: ends with the assistant prompt, always
    truncated: bool

    def __len__(self) -> int:
        return len(self.prefix) + len(self.continuation)


@dataclass(frozen=True)
class PromptTemplate:
    """The chat template as literal token runs around the query and document slots."""

    head: tuple[int, ...]
    middle: tuple[int, ...]
    tail: tuple[int, ...]

    @property
    def overhead(self) -> int:
        """Tokens the template itself takes in every pair."""
        return len(self.head) + len(self.middle) + len(self.tail)

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> PromptTemplate:
        if not getattr(tokenizer, "chat_template", None):
            raise PromptTemplateError("the tokenizer has no chat template; zerank models need one")
        text = render_prompt(tokenizer, _QUERY_SENTINEL, _DOCUMENT_SENTINEL)
        if text.count(_QUERY_SENTINEL) != 1 or text.count(_DOCUMENT_SENTINEL) != 1:
            raise PromptTemplateError("the chat template does not place the system and user messages verbatim")
        head, rest = text.split(_QUERY_SENTINEL)
        middle, tail = rest.split(_DOCUMENT_SENTINEL)
        template = cls(
            head=tuple(_encode(tokenizer, head)),
            middle=tuple(_encode(tokenizer, middle)),
            tail=tuple(_encode(tokenizer, tail)),
        )
        for query, document in _PROBES:
            query, document = query.strip(), document.strip()
            expected = _encode(tokenizer, render_prompt(tokenizer, query, document))
            q_ids, d_ids = _encode(tokenizer, query), _encode(tokenizer, document)
            if list(template.head) + q_ids + list(template.middle) + d_ids + list(template.tail) != expected:
                raise PromptTemplateError(
                    "the chat template's literal parts do not tokenize independently of the slot contents"
                )
        return template

    def encode(self, query_ids: Sequence[int], document_ids: Sequence[int], max_length: int) -> EncodedPair:
        """Assemble a pair within ``max_length`` tokens: shorten the document first, then the query.

        The template's suffix is never cut, so the last position is always the assistant prompt where the
        "Yes" logit is read.
        """
        room = max_length - self.overhead
        if room < 1:
            raise ValueError(f"max_length={max_length} leaves no room beside the {self.overhead}-token template")
        query_room = min(len(query_ids), room)
        document_room = min(len(document_ids), room - query_room)
        truncated = query_room < len(query_ids) or document_room < len(document_ids)
        prefix = (*self.head, *query_ids[:query_room], *self.middle)
        continuation = [*document_ids[:document_room], *self.tail]
        return EncodedPair(prefix=prefix, continuation=continuation, truncated=truncated)


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])
