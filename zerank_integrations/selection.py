"""What the LangChain and LlamaIndex adapters share: settings, validation and the rerank step itself.

Both ``ZerankRerank`` classes inherit :class:`RerankSettings` next to their framework base class, so the
fields, their validation, the scorer construction and the "score, select, record" step live in one place
and the adapters only translate framework objects to strings and back. No framework or torch import here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from zerank_integrations.base import (
    DEFAULT_MODEL,
    Reranker,
    rank_scores,
    validate_documents,
    validate_query,
    validate_top_n,
)

# ZerankScorer keyword options an adapter passes on when it builds its own scorer from ``model``.
SCORER_OPTIONS: tuple[str, ...] = (
    "revision",
    "device",
    "dtype",
    "max_length",
    "batch_tokens",
    "local_files_only",
    "prefix_reuse",
    "cache_dir",
)


@runtime_checkable
class SavingsRecorder(Protocol):
    """Anything shaped like ``TokenLedger.record``: structural, so the adapters never import tiktoken."""

    def record(self, query: str, candidates: list[str], kept: list[str]) -> Any: ...


class RerankSettings(BaseModel):
    """Fields, validation and the rerank step common to both adapters (a pydantic mixin).

    Scorer-defining fields (``model``, ``scorer`` and the scorer options) are frozen: changing them after
    construction would silently leave the old model loaded. ``top_n``, ``score_threshold`` and ``ledger``
    may be reassigned and are validated again when they are.
    """

    # hide_input_in_errors: a validation error must never echo a scorer or ledger (which may hold a key)
    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, arbitrary_types_allowed=True, hide_input_in_errors=True
    )

    model: str | None = Field(
        default=None,
        frozen=True,
        description=f"Model id or local path; defaults to {DEFAULT_MODEL!r} when no scorer is given.",
    )
    scorer: Any = Field(
        default=None,
        frozen=True,
        exclude=True,
        repr=False,
        description="An existing Reranker (ZerankScorer, RemoteScorer, ...) instead of `model`.",
    )
    top_n: int | None = Field(default=5, description="How many documents to keep, best first (None keeps all, sorted).")
    score_threshold: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Drop documents whose probability is below this, before top_n applies.",
    )
    revision: str | None = Field(default=None, frozen=True, description="Model revision (with `model`).")
    device: str | None = Field(default=None, frozen=True, description="Torch device (with `model`).")
    dtype: str | None = Field(default=None, frozen=True, description="Torch dtype name (with `model`).")
    max_length: int | None = Field(default=None, ge=1, frozen=True, description="Max tokens per pair (with `model`).")
    batch_tokens: int | None = Field(
        default=None, ge=1, frozen=True, description="Token budget per forward pass (with `model`)."
    )
    local_files_only: bool | None = Field(default=None, frozen=True, description="Never reach the Hub (with `model`).")
    prefix_reuse: bool | Literal["auto"] | None = Field(
        default=None, frozen=True, description="Reuse the query prefix's keys/values (with `model`)."
    )
    cache_dir: str | None = Field(default=None, frozen=True, description="Hub cache folder (with `model`).")
    ledger: Any = Field(
        default=None,
        exclude=True,
        repr=False,
        description="A TokenLedger; every call records the candidates and the kept documents.",
    )

    _reranker: Reranker = PrivateAttr()
    _repr_extra: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _model_or_scorer(cls, data: Any) -> Any:
        """``model`` and ``scorer`` are exclusive; options only make sense when we build the scorer."""
        if not isinstance(data, dict):
            return data
        scorer = data.get("scorer")
        if scorer is None:
            if data.get("model") is None:
                data = {**data, "model": DEFAULT_MODEL}
            return data
        if data.get("model") is not None:
            raise ValueError("pass either `model` (an id or path to load) or `scorer` (an existing Reranker), not both")
        given = [name for name in SCORER_OPTIONS if data.get(name) is not None]
        if given:
            raise ValueError(
                f"scorer options {', '.join(given)} only apply when `model` is given; "
                "configure the scorer you pass instead"
            )
        return data

    @field_validator("scorer")
    @classmethod
    def _check_scorer(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, Reranker):
            raise TypeError(
                f"scorer must satisfy zerank_integrations.base.Reranker (model_name, score, rank, ascore, "
                f"arank), got {type(value).__name__}"
            )
        return value

    @field_validator("ledger")
    @classmethod
    def _check_ledger(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, SavingsRecorder):
            raise TypeError(
                f"ledger must be a TokenLedger (or have record(query, candidates, kept)), got {type(value).__name__}"
            )
        return value

    @field_validator("top_n", mode="before")
    @classmethod
    def _check_top_n(cls, value: Any) -> int | None:
        return validate_top_n(value)

    @field_validator("score_threshold", mode="before")
    @classmethod
    def _check_threshold(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise TypeError(f"score_threshold must be a probability in [0, 1] or None, got {value!r}")
        return value

    @field_validator("dtype", mode="before")
    @classmethod
    def _dtype_name(cls, value: Any) -> Any:
        """Accept ``torch.bfloat16`` as well as ``"bfloat16"`` without importing torch here."""
        if value is not None and not isinstance(value, str) and str(value).startswith("torch."):
            return str(value).removeprefix("torch.")
        return value

    def model_post_init(self, context: Any, /) -> None:
        super().model_post_init(context)
        self._reranker = self.scorer if self.scorer is not None else self._build_scorer()

    def _build_scorer(self) -> Reranker:
        """Load through the core, whose per-process cache lets equal wrappers share one model."""
        from zerank_integrations.scoring import ZerankScorer  # torch loads only when a model is asked for

        options = {name: getattr(self, name) for name in SCORER_OPTIONS if getattr(self, name) is not None}
        return ZerankScorer(self.model, **options)

    @property
    def reranker(self) -> Reranker:
        """The scorer this adapter calls: the one passed in, or the ``ZerankScorer`` built from ``model``."""
        return self._reranker

    @property
    def model_name(self) -> str:
        """The scorer's model name (what events, callbacks and the repr report)."""
        return self._reranker.model_name

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        """Settings only: never the scorer's or ledger's internals (a remote scorer may hold a key)."""
        yield "model", self.model_name
        if self.scorer is not None:
            yield "scorer", _TypeName(type(self.scorer).__name__)
        yield "top_n", self.top_n
        yield "score_threshold", self.score_threshold
        for name in SCORER_OPTIONS:
            if getattr(self, name) is not None:
                yield name, getattr(self, name)
        for name in self._repr_extra:  # adapter-specific settings, shown when not at their default
            value = getattr(self, name)
            if value != type(self).model_fields[name].default:
                yield name, getattr(value, "value", value)
        if self.ledger is not None:
            yield "ledger", _TypeName(type(self.ledger).__name__)

    def _select(self, texts: list[str], scores: Sequence[float]) -> list[tuple[int, float]]:
        """Best first under ``top_n``/``score_threshold``; a scorer that miscounts (e.g. a remote one) is an error."""
        if len(scores) != len(texts):
            raise RuntimeError(
                f"{type(self._reranker).__name__} returned {len(scores)} scores for {len(texts)} documents"
            )
        return rank_scores(scores, self.top_n, self.score_threshold)

    def rerank_texts(
        self, query: str, texts: Sequence[str], *, prompt_texts: Sequence[str] | None = None
    ) -> list[tuple[int, float]]:
        """(index, probability) pairs of the kept texts, best first; records the call on the ledger.

        ``prompt_texts`` (one per text) is what the LLM will receive when that differs from the scored
        text (LlamaIndex formats nodes differently for embedding and for the LLM); the ledger counts it.
        """
        query = validate_query(query)
        docs = validate_documents(texts)
        prompt = self._prompt_texts(docs, prompt_texts)
        ranked = self._select(docs, self._reranker.score(query, docs)) if docs else []
        if self.ledger is not None:
            self.ledger.record(query, prompt, [prompt[i] for i, _ in ranked])
        return ranked

    async def arerank_texts(
        self, query: str, texts: Sequence[str], *, prompt_texts: Sequence[str] | None = None
    ) -> list[tuple[int, float]]:
        """Async :meth:`rerank_texts`: scoring and token counting run off the event loop."""
        query = validate_query(query)
        docs = validate_documents(texts)
        prompt = self._prompt_texts(docs, prompt_texts)
        ranked = self._select(docs, await self._reranker.ascore(query, docs)) if docs else []
        if self.ledger is not None:
            await asyncio.to_thread(self.ledger.record, query, prompt, [prompt[i] for i, _ in ranked])
        return ranked

    @staticmethod
    def _prompt_texts(docs: list[str], prompt_texts: Sequence[str] | None) -> list[str]:
        if prompt_texts is None:
            return docs
        prompt = validate_documents(prompt_texts)
        if len(prompt) != len(docs):
            raise ValueError(f"prompt_texts has {len(prompt)} entries for {len(docs)} documents")
        return prompt


class _TypeName(str):
    """Shows as a bare class name in a repr (``ledger=TokenLedger``), never as the object's contents."""

    def __repr__(self) -> str:
        return str(self)
