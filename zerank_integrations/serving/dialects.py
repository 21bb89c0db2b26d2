"""The rerank dialects the server speaks, as data: one small spec per wire format.

Every dialect is a request model, a function turning it into one :class:`RerankCall` (what the scorer needs),
a function turning the :class:`RerankOutcome` back into that dialect's answer, and its error shape. All of
them feed the one batcher; nothing below touches the model.

========================  =====================  ====================================================
path                      clients                 answer
========================  =====================  ====================================================
``/v1/rerank``            Cohere v1, Jina,        Cohere/Jina/vLLM shape (``results``, ``meta``, ``usage``);
                          Voyage, vLLM clients    Voyage shape (``object: list``, ``data``) when the request
                                                  carries ``top_k`` or ``truncation``, Voyage's own fields
``/v2/rerank``            Cohere v2 (ClientV2)    Cohere shape
``/v1/reranking``         Mixedbread              ``data[{index, score, input?}]``
``/rerank``               TEI                     a bare list ``[{index, score, text?}]``
``/v1/models/rerank``     ZeroEntropy             ``results[{index, relevance_score}]``, ``total_tokens``
========================  =====================  ====================================================
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, RootModel, model_validator
from pydantic_core import PydanticCustomError

from zerank_integrations.base import check_unicode

MAX_COUNT = 1_000_000  # top_n, top_k, max_tokens_per_doc: anything larger is a mistake, not a request


# -- shared field types ----------------------------------------------------------------------------------
def _encodable(value: str) -> str:
    """Refuse text the tokenizer cannot take (lone surrogates), here, per request, before any batching."""
    try:
        check_unicode(value, "the text")
    except ValueError as error:
        raise PydanticCustomError("text_encoding", str(error).replace("{", "{{").replace("}", "}}")) from None
    return value


Text = Annotated[str, AfterValidator(_encodable)]
# Blank as the core reads it (str.strip): Unicode White_Space plus the separators U+001C-U+001F, which Python
# strips too; the schema says the same, so a schema-valid query is never refused after batching.
NOT_BLANK = r"[^\s\x1c-\x1f]"
Query = Annotated[
    str, Field(pattern=NOT_BLANK, description="the search query; must not be blank"), AfterValidator(_encodable)
]
Instruction = Annotated[
    str | None,
    Field(description="task instruction for reranker families that take one (vLLM's field name)"),
]


class _Request(BaseModel):
    """Strict types (``"2"`` is not an integer, ``"yes"`` not a boolean); unknown fields are ignored."""

    model_config = ConfigDict(strict=True, extra="ignore")


class TextObject(BaseModel):
    """A document given as an object: ``text``, or the fields named by ``rank_fields``; other fields ride along."""

    model_config = ConfigDict(strict=True, extra="allow")
    text: Text | None = None


def _check_texts(values: list[Any]) -> list[Any]:
    for item in values:
        if isinstance(item, TextObject):
            for key, value in (item.model_extra or {}).items():
                if isinstance(value, str):
                    _encodable(value)
                elif not isinstance(key, str):
                    raise PydanticCustomError("text_encoding", "object keys must be strings")
    return values


Documents = Annotated[list[Text | TextObject], AfterValidator(_check_texts)]


# -- the normalized call and its outcome ---------------------------------------------------------------
@dataclass(frozen=True)
class RerankCall:
    """What any dialect asks for, in the scorer's terms."""

    query: str
    texts: list[str]
    originals: list[Any]  # as the client sent them, for return_documents / return_input / return_text
    top_n: int | None = None
    return_documents: bool = False
    instruction: str | None = None
    max_tokens_per_doc: int | None = None
    refuse_truncation: bool = False  # Voyage truncation=false, TEI truncate=false: too long is an error
    raw_scores: bool = False  # TEI raw_scores, vLLM use_activation=false: report the family's raw score


@dataclass(frozen=True)
class RerankOutcome:
    """A scored call: the selection (best first) and the accounting every dialect reports from."""

    call: RerankCall
    ranked: list[tuple[int, float]]  # (index, score as reported), best first, top_n applied
    raw: list[float]  # per document, input order
    tokens: int  # prompt tokens the model read for this request
    request_id: str
    model: str
    elapsed_s: float
    body_bytes: int


def document_text(item: str | TextObject, rank_fields: Sequence[str] | None) -> str:
    """The text scored for one document: a string as is, an object's ``text``, or its ``rank_fields``.

    Several fields are scored as ``field: value`` lines in the order given; a field a document lacks is
    skipped, so an object with none of them scores as an empty document.
    """
    if isinstance(item, str):
        return item
    fields = {"text": item.text, **(item.model_extra or {})}
    names = list(rank_fields) if rank_fields else ["text"] if item.text is not None else list(item.model_extra or {})
    present = [(name, fields[name]) for name in names if fields.get(name) is not None]
    if len(present) == 1 and names == [present[0][0]] and isinstance(present[0][1], str):
        return present[0][1]
    return "\n".join(f"{name}: {_as_text(value)}" for name, value in present)


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _original(item: str | TextObject) -> Any:
    return item if isinstance(item, str) else item.model_dump(exclude_none=True)


def _finite(value: float) -> float | None:
    """JSON has no NaN: a non-finite score is reported as null rather than failing the response."""
    return value if math.isfinite(value) else None


def _top(value: int | None) -> int | None:
    return None if value in (None, 0) else value


# -- Cohere (v1 and v2), Jina, Voyage, vLLM ---------------------------------------------------------------
class CohereRerankRequest(_Request):
    """Cohere v2 ``/v2/rerank`` (and vLLM's extensions, which vLLM serves on the same path)."""

    model: str | None = None
    query: Query
    documents: Documents = Field(description="strings, or objects with a string 'text' field")
    top_n: int | None = Field(None, ge=0, le=MAX_COUNT, description="keep the best n; 0 or absent keeps all")
    max_tokens_per_doc: int | None = Field(None, ge=1, le=MAX_COUNT, description="cut each document to n tokens")
    return_documents: bool | None = None
    instruction: Instruction = None
    use_activation: bool | None = Field(None, description="vLLM: false reports the family's raw score")
    priority: int | None = Field(None, description="accepted and ignored")


class SharedRerankRequest(CohereRerankRequest):
    """``/v1/rerank``: Cohere v1, Jina, vLLM and Voyage (``top_k``, ``truncation``) on one path."""

    model_config = ConfigDict(json_schema_extra={"not": {"required": ["top_n", "top_k"]}})
    top_k: int | None = Field(None, ge=1, le=MAX_COUNT, description="Voyage's top_n")
    truncation: bool | None = Field(None, description="Voyage: false refuses documents longer than the model")
    rank_fields: list[str] | None = Field(None, description="Cohere v1: the object fields to score")
    max_chunks_per_doc: int | None = Field(None, description="Cohere v1: accepted and ignored")

    @model_validator(mode="after")
    def _one_count(self) -> SharedRerankRequest:
        if "top_n" in self.model_fields_set and "top_k" in self.model_fields_set:
            raise PydanticCustomError("conflict", "send top_n (Cohere, Jina) or top_k (Voyage), not both")
        return self

    @property
    def is_voyage(self) -> bool:
        return "top_k" in self.model_fields_set or "truncation" in self.model_fields_set


def cohere_call(request: CohereRerankRequest) -> RerankCall:
    shared = request if isinstance(request, SharedRerankRequest) else None
    rank_fields = shared.rank_fields if shared else None
    return RerankCall(
        query=request.query,
        texts=[document_text(item, rank_fields) for item in request.documents],
        originals=[_original(item) for item in request.documents],
        top_n=_top(shared.top_k if shared and shared.top_k is not None else request.top_n),
        return_documents=bool(request.return_documents),
        instruction=request.instruction,
        max_tokens_per_doc=request.max_tokens_per_doc,
        refuse_truncation=bool(shared and shared.truncation is False),
        raw_scores=request.use_activation is False,
    )


class ResultDocument(BaseModel):
    model_config = ConfigDict(extra="allow")
    text: str | None = None


class CohereResult(BaseModel):
    index: int
    relevance_score: float | None
    raw_score: float | None = Field(None, description="extension: the family's raw score (RemoteScorer raw=True)")
    document: ResultDocument | None = None


class ApiVersion(BaseModel):
    version: str


class BilledUnits(BaseModel):
    search_units: int
    input_tokens: int


class MetaTokens(BaseModel):
    input_tokens: int
    output_tokens: int = 0


class CohereMeta(BaseModel):
    api_version: ApiVersion
    billed_units: BilledUnits
    tokens: MetaTokens


class TokenUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class CohereRerankResponse(BaseModel):
    id: str
    model: str
    results: list[CohereResult]
    meta: CohereMeta
    usage: TokenUsage


class VoyageResult(BaseModel):
    index: int
    relevance_score: float | None
    document: str | None = None


class VoyageUsage(BaseModel):
    total_tokens: int


class VoyageRerankResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[VoyageResult]
    model: str
    usage: VoyageUsage


def _cohere_answer(outcome: RerankOutcome, version: str) -> CohereRerankResponse:
    call = outcome.call
    results = []
    for index, score in outcome.ranked:
        item = CohereResult(index=index, relevance_score=_finite(score), raw_score=_finite(outcome.raw[index]))
        if call.return_documents:
            original = call.originals[index]
            item.document = ResultDocument.model_validate(
                original if isinstance(original, dict) else {"text": original}
            )
        results.append(item)
    n = len(call.texts)
    return CohereRerankResponse(
        id=outcome.request_id,
        model=outcome.model,
        results=results,
        meta=CohereMeta(
            api_version=ApiVersion(version=version),
            billed_units=BilledUnits(search_units=max(1, math.ceil(n / 100)), input_tokens=outcome.tokens),
            tokens=MetaTokens(input_tokens=outcome.tokens, output_tokens=0),
        ),
        usage=TokenUsage(prompt_tokens=outcome.tokens, total_tokens=outcome.tokens),
    )


def voyage_answer(outcome: RerankOutcome) -> VoyageRerankResponse:
    call = outcome.call
    data = []
    for index, score in outcome.ranked:
        item = VoyageResult(index=index, relevance_score=_finite(score))
        if call.return_documents:
            item.document = call.texts[index]
        data.append(item)
    return VoyageRerankResponse(
        object="list", data=data, model=outcome.model, usage=VoyageUsage(total_tokens=outcome.tokens)
    )


def shared_answer(request: SharedRerankRequest, outcome: RerankOutcome) -> BaseModel:
    return voyage_answer(outcome) if request.is_voyage else _cohere_answer(outcome, "1")


def cohere_v2_answer(request: CohereRerankRequest, outcome: RerankOutcome) -> BaseModel:
    return _cohere_answer(outcome, "2")


# -- Mixedbread -----------------------------------------------------------------------------------------
class MixedbreadRerankRequest(_Request):
    """Mixedbread ``/v1/reranking``."""

    model: str | None = None
    query: Query
    input: Documents = Field(description="strings, or objects (scored by 'text' or by rank_fields)")
    rank_fields: list[str] | None = None
    top_k: int | None = Field(None, ge=1, le=MAX_COUNT)
    return_input: bool | None = None
    rewrite_query: bool | None = Field(None, description="accepted and ignored")
    instruction: Instruction = None


def mixedbread_call(request: MixedbreadRerankRequest) -> RerankCall:
    return RerankCall(
        query=request.query,
        texts=[document_text(item, request.rank_fields) for item in request.input],
        originals=[_original(item) for item in request.input],
        top_n=request.top_k,
        return_documents=bool(request.return_input),
        instruction=request.instruction,
    )


class MixedbreadResult(BaseModel):
    index: int
    score: float | None
    input: Any | None = None
    object: Literal["rank_result"] = "rank_result"


class MixedbreadRerankResponse(BaseModel):
    object: Literal["list"] = "list"
    model: str
    data: list[MixedbreadResult]
    usage: TokenUsage
    top_k: int
    return_input: bool


def mixedbread_answer(request: MixedbreadRerankRequest, outcome: RerankOutcome) -> MixedbreadRerankResponse:
    call = outcome.call
    data = []
    for index, score in outcome.ranked:
        item = MixedbreadResult(index=index, score=_finite(score), object="rank_result")
        if call.return_documents:
            item.input = call.originals[index]
        data.append(item)
    return MixedbreadRerankResponse(
        object="list",
        model=outcome.model,
        data=data,
        usage=TokenUsage(prompt_tokens=outcome.tokens, total_tokens=outcome.tokens),
        top_k=len(data),
        return_input=call.return_documents,
    )


# -- TEI ------------------------------------------------------------------------------------------------
class TeiRerankRequest(_Request):
    """Hugging Face text-embeddings-inference ``/rerank``."""

    query: Query
    texts: list[Text]
    raw_scores: bool | None = Field(None, description="true reports the family's raw score")
    return_text: bool | None = None
    truncate: bool | None = Field(None, description="false refuses texts longer than the model; default: cut them")
    truncation_direction: Literal["Right", "right"] | None = Field(
        None, description="only Right: documents are cut at the end, the query is kept whole"
    )
    instruction: Instruction = None


def tei_call(request: TeiRerankRequest) -> RerankCall:
    return RerankCall(
        query=request.query,
        texts=list(request.texts),
        originals=list(request.texts),
        return_documents=bool(request.return_text),
        instruction=request.instruction,
        refuse_truncation=request.truncate is False,
        raw_scores=bool(request.raw_scores),
    )


class TeiRank(BaseModel):
    index: int
    score: float | None
    text: str | None = None


class TeiRerankResponse(RootModel[list[TeiRank]]):
    pass


def tei_answer(request: TeiRerankRequest, outcome: RerankOutcome) -> TeiRerankResponse:
    ranks = []
    for index, score in outcome.ranked:
        rank = TeiRank(index=index, score=_finite(score))
        if outcome.call.return_documents:
            rank.text = outcome.call.texts[index]
        ranks.append(rank)
    return TeiRerankResponse(ranks)


# -- ZeroEntropy ----------------------------------------------------------------------------------------
class ZeroEntropyRerankRequest(_Request):
    """ZeroEntropy ``/v1/models/rerank``."""

    model: str | None = None
    query: Query
    documents: list[Text]
    top_n: int | None = Field(None, ge=1, le=MAX_COUNT)
    latency: Literal["fast", "slow"] | None = Field(None, description="accepted; this server has one speed")
    instruction: Instruction = None


def zeroentropy_call(request: ZeroEntropyRerankRequest) -> RerankCall:
    return RerankCall(
        query=request.query,
        texts=list(request.documents),
        originals=list(request.documents),
        top_n=request.top_n,
        instruction=request.instruction,
    )


class ZeroEntropyResult(BaseModel):
    index: int
    relevance_score: float | None


class ZeroEntropyRerankResponse(BaseModel):
    results: list[ZeroEntropyResult]
    actual_latency_mode: Literal["fast", "slow"] = "fast"
    e2e_latency: float
    inference_latency: float
    total_bytes: int
    total_tokens: int


def zeroentropy_answer(request: ZeroEntropyRerankRequest, outcome: RerankOutcome) -> ZeroEntropyRerankResponse:
    return ZeroEntropyRerankResponse(
        results=[ZeroEntropyResult(index=i, relevance_score=_finite(s)) for i, s in outcome.ranked],
        actual_latency_mode=request.latency or "fast",
        e2e_latency=outcome.elapsed_s,
        inference_latency=outcome.elapsed_s,
        total_bytes=outcome.body_bytes,
        total_tokens=outcome.tokens,
    )


# -- error shapes ---------------------------------------------------------------------------------------
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "timeout_error",
    413: "request_too_large",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "internal_error",
    503: "overloaded_error",
}
_TEI_TYPES = {401: "Unauthorized", 429: "Overloaded", 503: "Overloaded", 500: "Backend"}


class SharedError(BaseModel):
    """``/v1/rerank``: Cohere's ``message`` and Voyage's and Jina's ``detail`` (the Voyage SDK needs it)."""

    id: str
    message: str
    detail: str


class CohereError(BaseModel):
    id: str
    message: str


class DetailError(BaseModel):
    detail: str
    request_id: str | None = Field(None, description="extension: the X-Request-Id to quote")


class TeiError(BaseModel):
    error: str
    error_type: str
    request_id: str | None = Field(None, description="extension: the X-Request-Id to quote")


class ErrorInfo(BaseModel):
    message: str
    type: str
    code: int
    param: str | None = None


class GenericError(BaseModel):
    """Routes outside any dialect (unknown paths, ``/health``): the OpenAI/vLLM shape plus ``message``."""

    error: ErrorInfo
    message: str
    detail: str
    request_id: str | None = None


def generic_error(status: int, message: str, param: str | None, request_id: str) -> GenericError:
    kind = _ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "internal_error")
    info = ErrorInfo(message=message, type=kind, code=status, param=param)
    return GenericError(error=info, message=message, detail=message, request_id=request_id)


# -- the table ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ServerDialect:
    """One wire format: where it lives, what it accepts and answers, and how it says no."""

    name: str
    path: str
    summary: str
    request_model: type[_Request]
    response_model: Any
    documents_field: str
    to_call: Callable[[Any], RerankCall]
    answer: Callable[[Any, RerankOutcome], BaseModel]
    error_model: type[BaseModel]
    error: Callable[[int, str, str | None, str], BaseModel]


DIALECTS: tuple[ServerDialect, ...] = (
    ServerDialect(
        name="cohere-v1",
        path="/v1/rerank",
        summary="Cohere v1, Jina, Voyage and vLLM rerank",
        request_model=SharedRerankRequest,
        response_model=CohereRerankResponse | VoyageRerankResponse,
        documents_field="documents",
        to_call=cohere_call,
        answer=shared_answer,
        error_model=SharedError,
        error=lambda status, message, param, rid: SharedError(id=rid, message=message, detail=message),
    ),
    ServerDialect(
        name="cohere-v2",
        path="/v2/rerank",
        summary="Cohere v2 rerank (ClientV2)",
        request_model=CohereRerankRequest,
        response_model=CohereRerankResponse,
        documents_field="documents",
        to_call=cohere_call,
        answer=cohere_v2_answer,
        error_model=CohereError,
        error=lambda status, message, param, rid: CohereError(id=rid, message=message),
    ),
    ServerDialect(
        name="mixedbread",
        path="/v1/reranking",
        summary="Mixedbread rerank",
        request_model=MixedbreadRerankRequest,
        response_model=MixedbreadRerankResponse,
        documents_field="input",
        to_call=mixedbread_call,
        answer=mixedbread_answer,
        error_model=DetailError,
        error=lambda status, message, param, rid: DetailError(detail=message, request_id=rid),
    ),
    ServerDialect(
        name="tei",
        path="/rerank",
        summary="text-embeddings-inference rerank",
        request_model=TeiRerankRequest,
        response_model=TeiRerankResponse,
        documents_field="texts",
        to_call=tei_call,
        answer=tei_answer,
        error_model=TeiError,
        error=lambda status, message, param, rid: TeiError(
            error=message, error_type=_TEI_TYPES.get(status, "Validation"), request_id=rid
        ),
    ),
    ServerDialect(
        name="zeroentropy",
        path="/v1/models/rerank",
        summary="ZeroEntropy rerank",
        request_model=ZeroEntropyRerankRequest,
        response_model=ZeroEntropyRerankResponse,
        documents_field="documents",
        to_call=zeroentropy_call,
        answer=zeroentropy_answer,
        error_model=DetailError,
        error=lambda status, message, param, rid: DetailError(detail=message, request_id=rid),
    ),
)
