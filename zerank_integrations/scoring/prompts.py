"""How a (query, document, instruction) triple becomes token ids, for any family.

A family declares its prompt as pieces (:class:`~zerank_integrations.families.PromptFormat`)::

    head + query_segment + middle + document_segment + tail

Rendering and tokenizing the whole prompt once per pair is correct but wasteful, and cutting the rendered
string could cut the template's suffix. Instead the fixed pieces are tokenized once, the query segment once
per (query, instruction), and only the document segment per pair. Where a family's reference recipe tokenizes
several pieces as one string (zerank's chat template, Qwen3-Reranker's user turn, a cross-encoder's pair
encoding) the split is checked on probe pairs when the template is built: concatenating the pieces' tokens
must equal the reference tokenization, or the model is refused.

Truncation keeps every fixed piece whole (the score is read at the last position, after the suffix):

- the query segment may use at most ``query_share`` (3/4) of the content room ``max_length - head - tail``;
  a longer one is shortened first, so a document is never emptied by its query;
- the document segment then gets what is left and is cut from its end.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from zerank_integrations.families import PromptFormat, RerankerFamily

_QUERY_SENTINEL = "\ue000zerank-query\ue001"
_DOCUMENT_SENTINEL = "\ue002zerank-document\ue003"
_PROBES: tuple[tuple[str, str, str | None], ...] = (
    ("What is the boiling point of water?", "Water boils at 100 °C at sea level.\nSecond line.", None),
    ("¿Qué? 42 tokens, (maybe)", '"quoted" start — dash; 1234 numbers\t\ttabs', "Prefer primary sources."),
    ("a", "", None),
    ("why?", "(a) list item: see /path/to/file.", "Answer in one word:"),
    ("  padded query ", " 7 leading digit", None),
)


class PromptTemplateError(ValueError):
    """The family's prompt cannot be assembled from independently tokenized pieces for this tokenizer."""


class Tokens:
    """Thread-safe tokenization without special tokens (Hugging Face fast tokenizers are not re-entrant)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self._lock = threading.Lock()

    def ids(self, texts: Sequence[str]) -> list[list[int]]:
        if not texts:
            return []
        # verbose=False: texts longer than model_max_length are fine here (they are cut by the template).
        with self._lock:
            return [
                list(row) for row in self.tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]
            ]

    def with_offsets(self, texts: Sequence[str]) -> list[tuple[list[int], list[tuple[int, int]]]]:
        """Token ids and each token's [start, end) character span in its text."""
        if not texts:
            return []
        with self._lock:
            encoded = self.tokenizer(list(texts), add_special_tokens=False, verbose=False, return_offsets_mapping=True)
        return [
            (list(ids), [(int(a), int(b)) for a, b in spans])
            for ids, spans in zip(encoded["input_ids"], encoded["offset_mapping"], strict=True)
        ]

    def pair(self, first: str, second: str) -> tuple[list[int], list[int] | None]:
        """The tokenizer's own pair encoding (special tokens included) and its token type ids, if any."""
        # Batched on purpose: a lone call treats an empty second text as no pair at all; batches (what
        # sentence-transformers sends) keep its separator.
        with self._lock:
            encoded = self.tokenizer([first], [second], add_special_tokens=True, verbose=False)
        types = encoded.get("token_type_ids")
        return list(encoded["input_ids"][0]), list(types[0]) if types is not None else None


@dataclass(frozen=True)
class Piece:
    """Token ids with their token type ids (``None`` for models that take no type ids)."""

    ids: tuple[int, ...]
    types: tuple[int, ...] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def __add__(self, other: Piece) -> Piece:
        types = None if self.types is None or other.types is None else self.types + other.types
        return Piece(self.ids + other.ids, types)

    def cut(self, length: int) -> Piece:
        return Piece(self.ids[:length], None if self.types is None else self.types[:length])


@dataclass(frozen=True)
class QuerySegment:
    """A query (with its instruction) as tokens, possibly shortened to its share of the prompt."""

    piece: Piece
    truncated: bool


@dataclass(frozen=True)
class EncodedPair:
    """One pair's tokens, split where the part shared by every document of a query ends."""

    prefix: Piece  # head + query segment + middle: identical for every document of one (query, instruction)
    continuation: Piece  # document segment + tail: ends with the template's suffix, always
    truncated: bool

    def __len__(self) -> int:
        return len(self.prefix) + len(self.continuation)

    @property
    def row(self) -> Piece:
        return self.prefix + self.continuation


@dataclass(frozen=True)
class PromptTemplate:
    """A family's prompt for one tokenizer: fixed pieces as tokens, and how the variable ones are made."""

    family: RerankerFamily
    head: Piece
    middle: Piece
    tail: Piece
    query_type: int | None = None  # token type id of query tokens (tokenizer_pair families)
    document_type: int | None = None

    @property
    def format(self) -> PromptFormat:
        return self.family.prompt

    @property
    def overhead(self) -> int:
        """Tokens the fixed pieces take in every pair."""
        return len(self.head) + len(self.middle) + len(self.tail)

    def content_room(self, max_length: int) -> int:
        """Tokens for query segment + middle + document segment."""
        return max_length - len(self.head) - len(self.tail)

    def query_cap(self, max_length: int) -> int:
        numerator, denominator = self.family.query_share
        return self.content_room(max_length) * numerator // denominator

    # -- text --------------------------------------------------------------------------------------------
    def effective_instruction(self, instruction: str | None) -> str | None:
        """The instruction the prompt will carry: the caller's, else the family's default."""
        if instruction is not None and self.format.strip:
            instruction = instruction.strip()
        return instruction if instruction else self.format.default_instruction

    def normalize(self, query: str, document: str) -> tuple[str, str]:
        """What the family reads of the texts (zerank strips them; the others read them as given)."""
        return (query.strip(), document.strip()) if self.format.strip else (query, document)

    def normalize_document(self, document: str) -> str:
        return document.strip() if self.format.strip else document

    def query_text(self, query: str, instruction: str | None) -> str:
        instruction = instruction if instruction is not None else self.format.default_instruction
        if instruction is not None:
            assert self.format.with_instruction is not None  # the scorer refuses instructions before this
            return self.format.with_instruction.format(query=query, instruction=instruction)
        return self.format.query.format(query=query)

    def document_text(self, document: str) -> str:
        return self.format.document.format(document=document)

    # -- tokens -----------------------------------------------------------------------------------------
    def query_segment(self, tokens: Tokens, query: str, instruction: str | None, max_length: int) -> QuerySegment:
        """The query segment's tokens within ``query_cap``; normalized query, effective instruction."""
        cap = self.query_cap(max_length)
        ids = tokens.ids([self.query_text(query, instruction)])[0]
        if len(ids) <= cap:
            return QuerySegment(self._typed(ids, self.query_type), truncated=False)
        if self.format.query_truncation == "text":
            shortened = self._shorten_query_text(tokens, query, instruction, cap)
            if shortened is not None:
                return QuerySegment(self._typed(shortened, self.query_type), truncated=True)
        return QuerySegment(self._typed(ids[:cap], self.query_type), truncated=True)

    def _shorten_query_text(self, tokens: Tokens, query: str, instruction: str | None, cap: int) -> list[int] | None:
        """Cut the query text at a token boundary until its rendered segment fits ``cap`` (wrappers stay whole).

        ``None`` when even an empty query does not fit (an instruction longer than the cap): the caller then
        cuts the segment's tokens instead.
        """
        query_ids, spans = tokens.with_offsets([query])[0]
        over = len(tokens.ids([self.query_text(query, instruction)])[0]) - cap
        keep = len(query_ids) - over
        while keep > 0:
            ids = tokens.ids([self.query_text(query[: spans[keep - 1][1]], instruction)])[0]
            if len(ids) <= cap:
                return ids
            keep -= max(1, len(ids) - cap)
        ids = tokens.ids([self.query_text("", instruction)])[0]
        return ids if len(ids) <= cap else None

    def document_room(self, segment: QuerySegment, max_length: int) -> int:
        """Tokens left for the document segment after this query segment."""
        return self.content_room(max_length) - len(segment.piece) - len(self.middle)

    def assemble(self, segment: QuerySegment, document_ids: Sequence[int], max_length: int) -> EncodedPair:
        """One pair within ``max_length`` tokens: the document segment is cut from its end when needed."""
        room = self.document_room(segment, max_length)
        document = self._typed(list(document_ids[:room]), self.document_type)
        return EncodedPair(
            prefix=self.head + segment.piece + self.middle,
            continuation=document + self.tail,
            truncated=segment.truncated or len(document_ids) > room,
        )

    def _typed(self, ids: Sequence[int], type_id: int | None) -> Piece:
        return Piece(tuple(ids), None if type_id is None else (type_id,) * len(ids))

    # -- construction -------------------------------------------------------------------------------------
    @classmethod
    def build(cls, family: RerankerFamily, tokens: Tokens) -> PromptTemplate:
        """Tokenize the family's fixed pieces for this tokenizer and check them on probe pairs."""
        fmt = family.prompt
        if fmt.pieces == "chat_template":
            template = cls._from_chat_template(family, tokens)
        elif fmt.pieces == "tokenizer_pair":
            template = cls._from_pair_encoding(family, tokens)
        else:
            template = cls(
                family,
                head=Piece(tuple(_concat(tokens.ids(fmt.head)))),
                middle=Piece(tuple(_concat(tokens.ids(fmt.middle)))),
                tail=Piece(tuple(_concat(tokens.ids(fmt.tail)))),
            )
        template._check_probes(tokens)
        return template

    @classmethod
    def _from_chat_template(cls, family: RerankerFamily, tokens: Tokens) -> PromptTemplate:
        tokenizer = tokens.tokenizer
        if not getattr(tokenizer, "chat_template", None):
            raise PromptTemplateError(f"the tokenizer has no chat template; the {family.name} family needs one")
        text = render_chat(tokenizer, family.prompt.chat_roles, _QUERY_SENTINEL, _DOCUMENT_SENTINEL)
        if text.count(_QUERY_SENTINEL) != 1 or text.count(_DOCUMENT_SENTINEL) != 1:
            roles = " and ".join(family.prompt.chat_roles)
            raise PromptTemplateError(f"the chat template does not place the {roles} messages verbatim")
        head, rest = text.split(_QUERY_SENTINEL)
        middle, tail = rest.split(_DOCUMENT_SENTINEL)
        head_ids, middle_ids, tail_ids = tokens.ids([head, middle, tail])
        return cls(family, Piece(tuple(head_ids)), Piece(tuple(middle_ids)), Piece(tuple(tail_ids)))

    @classmethod
    def _from_pair_encoding(cls, family: RerankerFamily, tokens: Tokens) -> PromptTemplate:
        first, second = "what is the question", "this is the document"
        ids, types = tokens.pair(first, second)
        first_ids, second_ids = tokens.ids([first, second])
        start = _find(ids, first_ids, 0)
        second_start = _find(ids, second_ids, start + len(first_ids)) if start >= 0 else -1
        if start < 0 or second_start < 0:
            raise PromptTemplateError("the tokenizer's pair encoding does not contain both texts in order")
        second_end = second_start + len(second_ids)

        def piece(lo: int, hi: int) -> Piece:
            return Piece(tuple(ids[lo:hi]), None if types is None else tuple(types[lo:hi]))

        return cls(
            family,
            head=piece(0, start),
            middle=piece(start + len(first_ids), second_start),
            tail=piece(second_end, len(ids)),
            query_type=None if types is None else types[start],
            document_type=None if types is None else types[second_start],
        )

    def reference_text(self, tokens: Tokens, query: str, document: str, instruction: str | None) -> str | None:
        """The whole prompt as text, as the family's recipe renders it (``None`` for pair encodings)."""
        fmt = self.format
        query_text, document_text = self.query_text(query, instruction), self.document_text(document)
        if fmt.pieces == "chat_template":
            return render_chat(tokens.tokenizer, fmt.chat_roles, query_text, document_text)
        if fmt.pieces == "tokenizer_pair":
            return None
        return "".join((*fmt.head, query_text, *fmt.middle, document_text, *fmt.tail))

    def reference_ids(self, tokens: Tokens, query: str, document: str, instruction: str | None) -> Piece:
        """The family's reference tokenization of one (normalized) pair, untruncated: what the pieces must equal."""
        fmt = self.format
        query_text, document_text = self.query_text(query, instruction), self.document_text(document)
        if fmt.pieces == "chat_template":
            rendered = render_chat(tokens.tokenizer, fmt.chat_roles, query_text, document_text)
            return Piece(tuple(tokens.ids([rendered])[0]))
        if fmt.pieces == "tokenizer_pair":
            ids, types = tokens.pair(query_text, document_text)
            return Piece(tuple(ids), None if types is None else tuple(types))
        if fmt.joint_segments:
            joint = tokens.ids([query_text + "".join(fmt.middle) + document_text])[0]
            return Piece(self.head.ids + tuple(joint) + self.tail.ids)
        query_ids, document_ids = tokens.ids([query_text, document_text])
        return Piece(self.head.ids + tuple(query_ids) + self.middle.ids + tuple(document_ids) + self.tail.ids)

    def _check_probes(self, tokens: Tokens) -> None:
        unbounded = 1 << 30
        for query, document, instruction in _PROBES:
            query, document = self.normalize(query, document)
            if instruction is not None and not self.family.accepts_instruction:
                instruction = None
            instruction = self.effective_instruction(instruction)
            segment = self.query_segment(tokens, query, instruction, unbounded)
            pair = self.assemble(segment, tokens.ids([self.document_text(document)])[0], unbounded)
            if pair.row != self.reference_ids(tokens, query, document, instruction):
                raise PromptTemplateError(
                    f"the {self.family.name} prompt's pieces do not tokenize independently of the slot contents "
                    f"with this tokenizer (probe query {query!r})"
                )


def render_chat(tokenizer: Any, roles: tuple[str, str], query_text: str, document_text: str) -> str:
    """The chat template rendered with the query and document segments in ``roles``, generation prompt added."""
    messages = [{"role": roles[0], "content": query_text}, {"role": roles[1], "content": document_text}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def _concat(rows: list[list[int]]) -> list[int]:
    return [token for row in rows for token in row]


def _find(haystack: Sequence[int], needle: Sequence[int], start: int) -> int:
    for i in range(start, len(haystack) - len(needle) + 1):
        if list(haystack[i : i + len(needle)]) == list(needle):
            return i
    return -1
