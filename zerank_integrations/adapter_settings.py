"""What the LangChain and LlamaIndex adapters share: their settings, validation and the rerank step.

Both ``ZerankRerank`` classes inherit :class:`RerankSettings` next to their framework base class, so the
fields, their validation and the scorer construction live in one place, the scorer options come from the
one table in :mod:`zerank_integrations.options`, and every call runs the one
:class:`~zerank_integrations.rerank.RerankStep`. The adapters only translate framework objects to strings
and back. :class:`ScorerSettings` is the scorer half alone (model or scorer, options, instruction), for
wrappers that only score, such as LangChain's ``ZerankCrossEncoder``. No framework or torch import here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, create_model, field_validator, model_validator

from zerank_integrations.base import DEFAULT_MODEL, Reranker, validate_instruction, validate_top_n
from zerank_integrations.options import SCORER_OPTIONS, scorer_fields
from zerank_integrations.rerank import RerankResult, RerankStep, SavingsRecorder
from zerank_integrations.selection import SelectionPolicy, validate_max_prompt_tokens, validate_score_threshold

__all__ = ["RerankSettings", "ScorerSettings"]

_OPTION_NAMES = tuple(option.name for option in SCORER_OPTIONS)
_SECRET_OPTIONS = frozenset(option.name for option in SCORER_OPTIONS if option.secret)

# The scorer-option fields, generated from the one table (frozen: changing them later would silently keep
# the old model loaded).
_ScorerOptionFields: type[BaseModel] = create_model(  # type: ignore[call-overload]
    "_ScorerOptionFields",
    __config__=ConfigDict(arbitrary_types_allowed=True),
    **scorer_fields(),
)


class ScorerSettings(_ScorerOptionFields):  # type: ignore[misc,valid-type]
    """The scorer half of the settings (a pydantic mixin): ``model`` or ``scorer``, the scorer options and an
    ``instruction``, validated once; what a wrapper that only scores (LangChain's cross-encoder) needs.

    ``model``, ``scorer`` and the scorer options are frozen; ``instruction`` may be reassigned.
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
    instruction: str | None = Field(
        default=None, description="Task instruction passed to the scorer with every query (families that take one)."
    )

    _reranker: Reranker = PrivateAttr()

    @model_validator(mode="before")
    @classmethod
    def _model_or_scorer(cls, data: Any) -> Any:
        """``model`` and ``scorer`` are exclusive; scorer options only make sense when we build the scorer."""
        if not isinstance(data, dict):
            return data
        if data.get("scorer") is None:
            return data if data.get("model") is not None else {**data, "model": DEFAULT_MODEL}
        if data.get("model") is not None:
            raise ValueError("pass either `model` (an id or path to load) or `scorer` (an existing Reranker), not both")
        given = [name for name in _OPTION_NAMES if data.get(name) is not None]
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

    @field_validator("instruction", mode="before")
    @classmethod
    def _check_instruction(cls, value: Any) -> str | None:
        return validate_instruction(value)

    @field_validator("dtype", "device", mode="before")
    @classmethod
    def _torch_names(cls, value: Any) -> Any:
        """Accept ``torch.bfloat16`` / ``torch.device("cpu")`` as well as their names, without importing torch."""
        if value is not None and not isinstance(value, str) and type(value).__module__.startswith("torch"):
            return str(value).removeprefix("torch.")
        return value

    def model_post_init(self, context: Any, /) -> None:
        super().model_post_init(context)
        self._reranker = self.scorer if self.scorer is not None else self._build_scorer()

    def _build_scorer(self) -> Reranker:
        """Load through the core, whose per-process cache lets equal wrappers share one model."""
        from zerank_integrations.scoring import ZerankScorer  # torch loads only when a model is asked for

        options = {name: getattr(self, name) for name in _OPTION_NAMES if getattr(self, name) is not None}
        return ZerankScorer(self.model, **options)

    @property
    def reranker(self) -> Reranker:
        """The scorer this wrapper calls: the one passed in, or the ``ZerankScorer`` built from ``model``."""
        return self._reranker

    @property
    def model_name(self) -> str:
        """The scorer's model name (what events, callbacks and the repr report)."""
        return self._reranker.model_name

    def _scorer_repr_args(self) -> Iterator[tuple[str | None, Any]]:
        for name in _OPTION_NAMES:
            if getattr(self, name) is not None and name not in _SECRET_OPTIONS:
                yield name, getattr(self, name)

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        """Settings only: never the scorer's internals (a remote scorer may hold a key)."""
        yield "model", self.model_name
        if self.scorer is not None:
            yield "scorer", _TypeName(type(self.scorer).__name__)
        if self.instruction is not None:
            yield "instruction", self.instruction
        yield from self._scorer_repr_args()


class RerankSettings(ScorerSettings):
    """Fields, validation and the rerank step common to both adapters (a pydantic mixin): the scorer settings
    plus the selection policy and the ledger.

    ``model``, ``scorer`` and the scorer options are frozen. ``top_n``, ``score_threshold``,
    ``max_prompt_tokens``, ``instruction`` and ``ledger`` may be reassigned and are validated again when they are.
    """

    top_n: int | None = Field(default=5, description="How many documents to keep, best first (None keeps all, sorted).")
    score_threshold: float | None = Field(
        default=None, description="Drop documents whose probability is below this, before top_n applies."
    )
    max_prompt_tokens: int | None = Field(
        default=None,
        description="Keep documents, best first, while the kept ones stay within this many prompt tokens "
        "(counted like the ledger; o200k_base without one). Applied after score_threshold and top_n.",
    )
    ledger: Any = Field(
        default=None,
        exclude=True,
        repr=False,
        description="A TokenLedger; every call records the candidates and the kept documents.",
    )
    context_key: str | None = Field(
        default=None,
        description="Small to big: score and return the larger context a candidate holds in this metadata key "
        "(LlamaIndex's SentenceWindowNodeParser: 'window') instead of the matched piece, once per distinct "
        "context; the piece moves to metadata 'matched_text'. Candidates without the key are used as they are.",
    )

    _repr_extra: ClassVar[tuple[str, ...]] = ()

    @field_validator("ledger")
    @classmethod
    def _check_ledger(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, SavingsRecorder):
            raise TypeError(
                "ledger must be a TokenLedger (or have record(query, candidates, kept) and count_tokens(documents)), "
                f"got {type(value).__name__}"
            )
        return value

    @field_validator("top_n", mode="before")
    @classmethod
    def _check_top_n(cls, value: Any) -> int | None:
        return validate_top_n(value)

    @field_validator("score_threshold", mode="before")
    @classmethod
    def _check_threshold(cls, value: Any) -> float | None:
        return validate_score_threshold(value)

    @field_validator("max_prompt_tokens", mode="before")
    @classmethod
    def _check_budget(cls, value: Any) -> int | None:
        return validate_max_prompt_tokens(value)

    def small_to_big(self, texts: Sequence[str], metadatas: Sequence[Any]) -> list[tuple[int, str]]:
        """(candidate index, text to score and hand on) per candidate kept: with ``context_key``, its context
        (the first, best-retrieved candidate of each distinct context); without, every candidate as it is."""
        if self.context_key is None:
            return list(enumerate(texts))
        out: list[tuple[int, str]] = []
        seen: set[str] = set()
        for index, (text, metadata) in enumerate(zip(texts, metadatas, strict=True)):
            context = (metadata or {}).get(self.context_key)
            chosen = context if isinstance(context, str) and context.strip() else text
            if chosen not in seen:
                seen.add(chosen)
                out.append((index, chosen))
        return out

    @property
    def policy(self) -> SelectionPolicy:
        """The selection policy of the current settings."""
        return SelectionPolicy(self.score_threshold, self.top_n, self.max_prompt_tokens)

    @property
    def step(self) -> RerankStep:
        """The rerank step of the current settings (built per call, so reassigned settings take effect)."""
        return RerankStep(self._reranker, self.policy, ledger=self.ledger, instruction=self.instruction)

    def rerank_texts(self, query: str, texts: Sequence[str], *, prompt: Sequence[Any] | None = None) -> RerankResult:
        """Run the rerank step on plain texts (``prompt``: what the LLM receives per text, if different)."""
        return self.step.run(query, texts, prompt=prompt)

    async def arerank_texts(
        self, query: str, texts: Sequence[str], *, prompt: Sequence[Any] | None = None
    ) -> RerankResult:
        """Async :meth:`rerank_texts`: the scorer is awaited, token counting runs off the event loop."""
        return await self.step.arun(query, texts, prompt=prompt)

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        """Settings only: never the scorer's or ledger's internals (a remote scorer may hold a key)."""
        yield "model", self.model_name
        if self.scorer is not None:
            yield "scorer", _TypeName(type(self.scorer).__name__)
        yield "top_n", self.top_n
        yield "score_threshold", self.score_threshold
        for name in ("max_prompt_tokens", "instruction"):
            if getattr(self, name) is not None:
                yield name, getattr(self, name)
        yield from self._scorer_repr_args()
        for name in self._repr_extra:  # adapter-specific settings, shown when not at their default
            value = getattr(self, name)
            if value != type(self).model_fields[name].default:
                yield name, getattr(value, "value", value)
        if self.ledger is not None:
            yield "ledger", _TypeName(type(self.ledger).__name__)


class _TypeName(str):
    """Shows as a bare class name in a repr (``ledger=TokenLedger``), never as the object's contents."""

    def __repr__(self) -> str:
        return str(self)
