"""How a (query, document, instruction) triple becomes token ids, for any family.

A family declares its prompt as pieces (:class:`~zerank_integrations.families.PromptFormat`)::

    head + query_segment + middle + document_segment + tail

Literal recipes and pair encodings tokenize the fixed pieces once, the query segment once per (query,
instruction), and only the document segment per pair. Where such a recipe tokenizes several pieces as one
string (Qwen3-Reranker's user turn, a cross-encoder's pair encoding) the split is checked on probe pairs when
the template is built: concatenating the pieces' tokens must equal the reference tokenization, or the model is
refused.

Chat templates (zerank; any checkpoint that ships a ("query", "document") template) are the reference as
rendered text: texts are inserted as given, so a document's leading newline merges with the template's
newline before it, exactly as the template's own tokenization does. Each prompt is therefore tokenized as its
whole rendered text; the tokens it shares with its query's rendered prefix (all but a boundary token, at most)
are what prefix reuse computes once.

Truncation keeps every fixed piece whole (the score is read at the last position, after the suffix):

- the query segment may use at most ``query_share`` (3/4) of the content room ``max_length - head - tail``;
  a longer one is shortened first, so a document is never emptied by its query;
- the document segment then gets what is left and is cut from its end.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
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
    ("\nnew line first\n", "\n\n  indented first line\n\ttab\n", "  spaced instruction  "),
    ("Ünïcödé  ", "  日本語のテキスト 🙂\r\n", None),
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
    """A query (with its instruction) as tokens, possibly shortened to its share of the prompt.

    ``prefix`` is what every document of the query starts with: head + query segment + middle. Chat templates
    also keep the rendered text around the document slot (``before``/``after``): their prompts are tokenized
    as the whole rendered text, where the document's first characters can merge with the text before it.
    """

    prefix: Piece
    suffix: Piece  # what every prompt of the query ends with (the template's tail)
    truncated: bool
    before: str | None = None  # chat templates: the rendered text before the document ...
    after: str | None = None  # ... and after it


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
class _ChatPieces:
    """A chat template rendered around the slots: its texts, and their tokens on their own."""

    head: str
    middle: str
    tail: str
    head_ids: Piece
    middle_ids: Piece
    tail_ids: Piece


@dataclass(frozen=True)
class PromptTemplate:
    """A family's prompt for one tokenizer: fixed pieces as tokens, and how the variable ones are made."""

    family: RerankerFamily
    format: PromptFormat  # the family's recipe, or the checkpoint's own pair template (``from_checkpoint``)
    head: Piece
    middle: Piece
    tail: Piece
    query_type: int | None = None  # token type id of query tokens (tokenizer_pair families)
    document_type: int | None = None
    source: str = "the family's recipe"  # where the prompt comes from, for messages and the README
    _chat_cache: dict[str | None, _ChatPieces] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )

    @property
    def accepts_instruction(self) -> bool:
        return self.format.with_instruction is not None

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
        if self.format.pieces == "chat_template":
            return self._chat_query_segment(tokens, query, instruction, max_length)
        cap = self.query_cap(max_length)
        ids = tokens.ids([self.query_text(query, instruction)])[0]
        truncated = len(ids) > cap
        if truncated:
            shortened = None
            if self.format.query_truncation == "text":
                shortened = self._shorten_query_text(tokens, query, instruction, cap)
            ids = shortened if shortened is not None else ids[:cap]
        piece = self._typed(ids, self.query_type)
        return QuerySegment(self.head + piece + self.middle, self.tail, truncated)

    def _chat_query_segment(self, tokens: Tokens, query: str, instruction: str | None, max_length: int) -> QuerySegment:
        """Chat templates: the rendered text up to the document slot, tokenized as one text."""
        pieces = self._chat_pieces(tokens, instruction)
        numerator, denominator = self.family.query_share
        cap = (max_length - len(pieces.head_ids) - len(pieces.tail_ids)) * numerator // denominator
        text = self.query_text(query, instruction)
        truncated = len(tokens.ids([text])[0]) > cap
        if truncated:
            shortened = self._shorten_query_text(tokens, query, instruction, cap, ids_only=False)
            if shortened is not None:
                text = shortened
            else:  # not even an empty query fits beside the instruction: cut the segment's text at a token
                _, spans = tokens.with_offsets([text])[0]
                text = text[: spans[cap - 1][1]] if cap > 0 else ""
        before = pieces.head + text + pieces.middle
        prefix = Piece(tuple(tokens.ids([before])[0]))
        return QuerySegment(prefix, pieces.tail_ids, truncated, before=before, after=pieces.tail)

    def _shorten_query_text(
        self, tokens: Tokens, query: str, instruction: str | None, cap: int, *, ids_only: bool = True
    ) -> Any:
        """Cut the query text at a token boundary until its rendered segment fits ``cap`` (wrappers stay whole).

        Returns the segment's ids (``ids_only``) or its text; ``None`` when even an empty query does not fit
        (an instruction longer than the cap): the caller then cuts the segment itself.
        """
        query_ids, spans = tokens.with_offsets([query])[0]
        over = len(tokens.ids([self.query_text(query, instruction)])[0]) - cap
        keep = len(query_ids) - over
        while keep > 0:
            text = self.query_text(query[: spans[keep - 1][1]], instruction)
            ids = tokens.ids([text])[0]
            if len(ids) <= cap:
                return ids if ids_only else text
            keep -= max(1, len(ids) - cap)
        text = self.query_text("", instruction)
        ids = tokens.ids([text])[0]
        if len(ids) > cap:
            return None
        return ids if ids_only else text

    def document_room(self, segment: QuerySegment, max_length: int) -> int:
        """Tokens left for the document segment after this query segment."""
        return max_length - len(segment.prefix) - len(segment.suffix)

    def encode(self, tokens: Tokens, items: Sequence[tuple[QuerySegment, str]], max_length: int) -> list[EncodedPair]:
        """Each (query segment, normalized document) as one prompt within ``max_length`` tokens.

        Chat templates tokenize each whole rendered prompt, exactly as the template's text tokenizes, and share
        the longest run of tokens the prompt has in common with its query's prefix; the other recipes tokenize
        the document segment on its own. Over-long documents are cut from their end; the suffix stays whole.
        """
        if self.format.pieces == "chat_template":
            rendered = tokens.ids(
                [f"{segment.before}{self.document_text(document)}{segment.after}" for segment, document in items]
            )
            pairs = zip(items, rendered, strict=True)
            return [self._from_rendered(segment, ids, max_length) for (segment, _), ids in pairs]
        documents = tokens.ids([self.document_text(document) for _, document in items])
        return [self.assemble(segment, ids, max_length) for (segment, _), ids in zip(items, documents, strict=True)]

    def assemble(self, segment: QuerySegment, document_ids: Sequence[int], max_length: int) -> EncodedPair:
        """One pair from a separately tokenized document segment, cut from its end when needed."""
        room = self.document_room(segment, max_length)
        document = self._typed(list(document_ids[:room]), self.document_type)
        return EncodedPair(
            prefix=segment.prefix,
            continuation=document + segment.suffix,
            truncated=segment.truncated or len(document_ids) > room,
        )

    def _from_rendered(self, segment: QuerySegment, ids: list[int], max_length: int) -> EncodedPair:
        tail = segment.suffix.ids
        shared = min(_common_prefix(segment.prefix.ids, ids), len(ids) - max(len(tail), 1))
        if len(ids) <= max_length:
            return EncodedPair(Piece(tuple(ids[:shared])), Piece(tuple(ids[shared:])), segment.truncated)
        document = ids[shared : len(ids) - len(tail)][: max(max_length - shared - len(tail), 0)]
        return EncodedPair(Piece(tuple(ids[:shared])), Piece((*document, *tail)), True)

    def _typed(self, ids: Sequence[int], type_id: int | None) -> Piece:
        return Piece(tuple(ids), None if type_id is None else (type_id,) * len(ids))

    # -- chat templates ------------------------------------------------------------------------------------
    def _chat_pieces(self, tokens: Tokens, instruction: str | None) -> _ChatPieces:
        """The rendered text before the query, between query and document, and after the document (and the
        tokens of the text before and after, which size every prompt).

        One rendering per instruction where the template takes the instruction itself; cached.
        """
        key = instruction if self.format.instruction_keyword else None
        found = self._chat_cache.get(key)
        if found is None:
            text = render_chat(tokens.tokenizer, self.format, _QUERY_SENTINEL, _DOCUMENT_SENTINEL, key)
            if text.count(_QUERY_SENTINEL) != 1 or text.count(_DOCUMENT_SENTINEL) != 1:
                roles = " and ".join(self.format.chat_roles)
                raise PromptTemplateError(f"the chat template does not place the {roles} messages verbatim")
            head, rest = text.split(_QUERY_SENTINEL)
            middle, tail = rest.split(_DOCUMENT_SENTINEL)
            if not tail:
                raise PromptTemplateError("the chat template ends with the document: nothing marks where to score")
            head_ids, middle_ids, tail_ids = tokens.ids([head, middle, tail])
            found = self._chat_cache[key] = _ChatPieces(
                head, middle, tail, Piece(tuple(head_ids)), Piece(tuple(middle_ids)), Piece(tuple(tail_ids))
            )
        return found

    # -- construction -------------------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        family: RerankerFamily,
        tokens: Tokens,
        fmt: PromptFormat | None = None,
        *,
        source: str = "the family's recipe",
    ) -> PromptTemplate:
        """The prompt of ``family`` (or ``fmt``, a checkpoint's own template) for this tokenizer, checked on
        probe pairs."""
        fmt = fmt or family.prompt
        if fmt.pieces == "chat_template":
            template = cls._from_chat_template(family, fmt, tokens, source)
        elif fmt.pieces == "tokenizer_pair":
            template = cls._from_pair_encoding(family, fmt, tokens, source)
        else:
            template = cls(
                family,
                fmt,
                head=Piece(tuple(_concat(tokens.ids(fmt.head)))),
                middle=Piece(tuple(_concat(tokens.ids(fmt.middle)))),
                tail=Piece(tuple(_concat(tokens.ids(fmt.tail)))),
                source=source,
            )
        template._check_probes(tokens)
        return template

    @classmethod
    def _from_chat_template(
        cls, family: RerankerFamily, fmt: PromptFormat, tokens: Tokens, source: str
    ) -> PromptTemplate:
        tokenizer = tokens.tokenizer
        if not getattr(tokenizer, "chat_template", None):
            raise PromptTemplateError(f"the tokenizer has no chat template; the {family.name} family needs one")
        template = cls(family, fmt, Piece(()), Piece(()), Piece(()), source=source)
        pieces = template._chat_pieces(tokens, None)
        object.__setattr__(template, "head", pieces.head_ids)
        object.__setattr__(template, "middle", pieces.middle_ids)
        object.__setattr__(template, "tail", pieces.tail_ids)
        return template

    @classmethod
    def _from_pair_encoding(
        cls, family: RerankerFamily, fmt: PromptFormat, tokens: Tokens, source: str
    ) -> PromptTemplate:
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
            fmt,
            head=piece(0, start),
            middle=piece(start + len(first_ids), second_start),
            tail=piece(second_end, len(ids)),
            query_type=None if types is None else types[start],
            document_type=None if types is None else types[second_start],
            source=source,
        )

    def reference_text(self, tokens: Tokens, query: str, document: str, instruction: str | None) -> str | None:
        """The whole prompt as text, as the recipe renders it (``None`` for pair encodings)."""
        fmt = self.format
        query_text, document_text = self.query_text(query, instruction), self.document_text(document)
        if fmt.pieces == "chat_template":
            return render_chat(tokens.tokenizer, fmt, query_text, document_text, instruction)
        if fmt.pieces == "tokenizer_pair":
            return None
        return "".join((*fmt.head, query_text, *fmt.middle, document_text, *fmt.tail))

    def reference_ids(self, tokens: Tokens, query: str, document: str, instruction: str | None) -> Piece:
        """The recipe's reference tokenization of one (normalized) pair, untruncated: what the pieces must equal."""
        fmt = self.format
        query_text, document_text = self.query_text(query, instruction), self.document_text(document)
        if fmt.pieces == "chat_template":
            rendered = render_chat(tokens.tokenizer, fmt, query_text, document_text, instruction)
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
            if instruction is not None and not self.accepts_instruction:
                instruction = None
            instruction = self.effective_instruction(instruction)
            segment = self.query_segment(tokens, query, instruction, unbounded)
            if self.format.pieces == "chat_template":
                rendered = self.reference_text(tokens, query, document, instruction)
                if rendered != f"{segment.before}{self.document_text(document)}{segment.after}":
                    raise PromptTemplateError(
                        "the chat template does not insert the query and document as given (it changes the texts "
                        f"around them: probe query {query!r})"
                    )
            (pair,) = self.encode(tokens, [(segment, document)], unbounded)
            if pair.row != self.reference_ids(tokens, query, document, instruction):
                raise PromptTemplateError(
                    f"the {self.family.name} prompt's pieces do not tokenize independently of the slot contents "
                    f"with this tokenizer (probe query {query!r})"
                )


def render_chat(
    tokenizer: Any, fmt: PromptFormat, query_text: str, document_text: str, instruction: str | None = None
) -> str:
    """The chat template rendered with the query and document segments in ``fmt.chat_roles``, with the
    recipe's template keywords (the generation prompt; the instruction where the template takes it)."""
    kwargs = dict(fmt.chat_kwargs)
    if fmt.instruction_keyword and instruction is not None:
        kwargs["instruction"] = instruction
    messages = [
        {"role": role, "content": _content(text, fmt.message_format)}
        for role, text in zip(fmt.chat_roles, (query_text, document_text), strict=True)
    ]
    return tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)


def _content(text: str, message_format: str) -> Any:
    return [{"type": "text", "text": text}] if message_format == "structured" else text


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def _concat(rows: list[list[int]]) -> list[int]:
    return [token for row in rows for token in row]


def _find(haystack: Sequence[int], needle: Sequence[int], start: int) -> int:
    for i in range(start, len(haystack) - len(needle) + 1):
        if list(haystack[i : i + len(needle)]) == list(needle):
            return i
    return -1
