"""Every rerank dialect, proven with the real SDKs (unchanged, pointed at a loopback server) and RemoteScorer.

Each SDK's answer must give the local scorer's order and scores (1e-6); bad requests must get that dialect's
4xx and error shape while good ones keep working; limits hold on every route.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from _serving_support import DOCS, QUERY, close_to, in_input_order, serve_in_thread

from zerank_integrations import ZerankScorer
from zerank_integrations.serving import RemoteScorer, create_app
from zerank_integrations.serving.client import CLIENT_DIALECTS

MAX_DOCUMENTS = 12
MAX_REQUEST_BYTES = 30_000
KEY = "sdk-test-key"


@pytest.fixture(scope="module")
def base_url(scorer: ZerankScorer) -> Iterator[str]:
    app = create_app(scorer, api_key=KEY, max_documents=MAX_DOCUMENTS, max_request_bytes=MAX_REQUEST_BYTES)
    with serve_in_thread(app) as url:
        yield url


def local_ranking(scorer: ZerankScorer, docs: list[str], top_n: int | None = None) -> list[tuple[int, float]]:
    return scorer.rank(QUERY, docs, top_n=top_n)


def assert_same_ranking(got: list[tuple[int, float]], want: list[tuple[int, float]]) -> None:
    assert [i for i, _ in got] == [i for i, _ in want]
    assert close_to([s for _, s in got], [s for _, s in want])


# -- the real SDKs ----------------------------------------------------------------------------------------
def test_cohere_client_v2(base_url: str, scorer: ZerankScorer) -> None:
    import cohere

    client = cohere.ClientV2(api_key=KEY, base_url=base_url)
    answer = client.rerank(model="zerank-2", query=QUERY, documents=DOCS, top_n=4)
    assert_same_ranking([(r.index, r.relevance_score) for r in answer.results], local_ranking(scorer, DOCS, 4))
    assert answer.meta.api_version.version == "2"
    assert answer.meta.billed_units.search_units == 1
    full = client.rerank(model="zerank-2", query=QUERY, documents=DOCS)
    assert_same_ranking([(r.index, r.relevance_score) for r in full.results], local_ranking(scorer, DOCS))


async def test_cohere_async_client_v2(base_url: str, scorer: ZerankScorer) -> None:
    import cohere

    client = cohere.AsyncClientV2(api_key=KEY, base_url=base_url)
    answer = await client.rerank(model="zerank-2", query=QUERY, documents=DOCS, top_n=2)
    assert_same_ranking([(r.index, r.relevance_score) for r in answer.results], local_ranking(scorer, DOCS, 2))


def test_cohere_client_v1_strings_and_objects(base_url: str, scorer: ZerankScorer) -> None:
    import cohere

    client = cohere.Client(api_key=KEY, base_url=base_url)
    answer = client.rerank(model="zerank-2", query=QUERY, documents=DOCS, top_n=3, return_documents=True)
    assert_same_ranking([(r.index, r.relevance_score) for r in answer.results], local_ranking(scorer, DOCS, 3))
    assert [r.document.text for r in answer.results] == [DOCS[r.index] for r in answer.results]
    objects = [{"text": text, "id": f"doc-{i}"} for i, text in enumerate(DOCS)]
    answer = client.rerank(model="zerank-2", query=QUERY, documents=objects, return_documents=True)
    assert_same_ranking([(r.index, r.relevance_score) for r in answer.results], local_ranking(scorer, DOCS))
    assert all(r.document.id == f"doc-{r.index}" for r in answer.results)  # other fields ride along
    assert answer.meta.api_version.version == "1"


def test_voyage_client(base_url: str, scorer: ZerankScorer) -> None:
    import voyageai

    client = voyageai.Client(api_key=KEY, base_url=f"{base_url}/v1", max_retries=0)
    answer = client.rerank(QUERY, DOCS, model="rerank-2", top_k=3)
    assert_same_ranking([(r.index, r.relevance_score) for r in answer.results], local_ranking(scorer, DOCS, 3))
    assert [r.document for r in answer.results] == [DOCS[r.index] for r in answer.results]
    assert answer.total_tokens >= 0
    full = client.rerank(QUERY, DOCS, model="rerank-2")
    assert_same_ranking([(r.index, r.relevance_score) for r in full.results], local_ranking(scorer, DOCS))


async def test_voyage_async_client(base_url: str, scorer: ZerankScorer) -> None:
    import voyageai

    client = voyageai.AsyncClient(api_key=KEY, base_url=f"{base_url}/v1", max_retries=0)
    answer = await client.rerank(QUERY, DOCS, model="rerank-2", top_k=2)
    assert_same_ranking([(r.index, r.relevance_score) for r in answer.results], local_ranking(scorer, DOCS, 2))


def test_voyage_client_surfaces_a_refusal(base_url: str) -> None:
    import voyageai
    from voyageai import error as voyage_error

    client = voyageai.Client(api_key=KEY, base_url=f"{base_url}/v1", max_retries=0)
    with pytest.raises(voyage_error.MalformedRequestError, match="'query' is empty"):  # needs Voyage's "detail"
        client.rerank("   ", DOCS, model="rerank-2")
    with pytest.raises(voyage_error.AuthenticationError, match="invalid bearer token"):
        voyageai.Client(api_key="wrong", base_url=f"{base_url}/v1", max_retries=0).rerank(QUERY, DOCS, "rerank-2")


def test_zeroentropy_client(base_url: str, scorer: ZerankScorer) -> None:
    import zeroentropy

    client = zeroentropy.ZeroEntropy(api_key=KEY, base_url=f"{base_url}/v1", max_retries=0)
    answer = client.models.rerank(model="zerank-2", query=QUERY, documents=DOCS, top_n=3, latency="fast")
    assert_same_ranking([(r.index, r.relevance_score) for r in answer.results], local_ranking(scorer, DOCS, 3))
    assert answer.actual_latency_mode == "fast" and answer.total_bytes > 0
    with pytest.raises(zeroentropy.UnprocessableEntityError, match="documents"):
        client.models.rerank(model="zerank-2", query=QUERY, documents=[{"text": "an object"}])  # type: ignore[list-item]


async def test_zeroentropy_async_client(base_url: str, scorer: ZerankScorer) -> None:
    import zeroentropy

    client = zeroentropy.AsyncZeroEntropy(api_key=KEY, base_url=f"{base_url}/v1", max_retries=0)
    answer = await client.models.rerank(model="zerank-2", query=QUERY, documents=DOCS)
    assert_same_ranking([(r.index, r.relevance_score) for r in answer.results], local_ranking(scorer, DOCS))


def test_mixedbread_client(base_url: str, scorer: ZerankScorer) -> None:
    import mixedbread

    client = mixedbread.Mixedbread(api_key=KEY, base_url=base_url, max_retries=0)
    answer = client.rerank(model="zerank-2", query=QUERY, input=DOCS, top_k=3, return_input=True)
    assert_same_ranking([(r.index, r.score) for r in answer.data], local_ranking(scorer, DOCS, 3))
    assert [r.input for r in answer.data] == [DOCS[r.index] for r in answer.data]
    assert answer.top_k == 3 and answer.return_input is True
    fields = [{"title": f"title {i}", "body": text} for i, text in enumerate(DOCS)]
    ranked = client.rerank(query=QUERY, input=fields, rank_fields=["body"])
    assert_same_ranking([(r.index, r.score) for r in ranked.data], local_ranking(scorer, DOCS))


def test_tei_dialect(base_url: str, scorer: ZerankScorer) -> None:
    headers = {"Authorization": f"Bearer {KEY}"}
    plain = httpx.post(f"{base_url}/rerank", json={"query": QUERY, "texts": DOCS, "return_text": True}, headers=headers)
    assert plain.status_code == 200
    ranked = plain.json()  # a bare list, best first
    assert_same_ranking([(r["index"], r["score"]) for r in ranked], local_ranking(scorer, DOCS))
    assert [r["text"] for r in ranked] == [DOCS[r["index"]] for r in ranked]
    raw = httpx.post(f"{base_url}/rerank", json={"query": QUERY, "texts": DOCS, "raw_scores": True}, headers=headers)
    assert close_to(in_input_order(raw.json(), len(DOCS), "score"), scorer.score(QUERY, DOCS, raw=True))


def test_vllm_style_request_on_the_shared_path(base_url: str, scorer: ZerankScorer) -> None:
    body = {"model": "zerank-2", "query": QUERY, "documents": DOCS, "top_n": 0, "use_activation": False}
    answer = httpx.post(f"{base_url}/v1/rerank", json=body, headers={"Authorization": f"Bearer {KEY}"}).json()
    assert close_to(in_input_order(answer["results"], len(DOCS)), scorer.score(QUERY, DOCS, raw=True))
    assert answer["usage"]["total_tokens"] == answer["usage"]["prompt_tokens"]


# -- RemoteScorer in every dialect against our own server -------------------------------------------------
@pytest.mark.parametrize("dialect", sorted(CLIENT_DIALECTS))
async def test_remote_scorer_in_every_dialect(base_url: str, scorer: ZerankScorer, dialect: str) -> None:
    remote = RemoteScorer(base_url, dialect=dialect, api_key=KEY, family="zerank", max_documents_per_request=4)
    try:
        assert close_to(remote.score(QUERY, DOCS), scorer.score(QUERY, DOCS))
        assert close_to(remote.score(QUERY, DOCS, raw=True), scorer.score(QUERY, DOCS, raw=True), tol=1e-5)
        assert_same_ranking(remote.rank(QUERY, DOCS, top_n=3), local_ranking(scorer, DOCS, 3))
        assert close_to(await remote.ascore(QUERY, DOCS), scorer.score(QUERY, DOCS))
        assert remote.requests_sent == 8  # 6 documents in parts of 4: two requests per call
        assert remote.model_name == scorer.model_name
    finally:
        await remote.aclose()


# -- bad requests, per dialect ----------------------------------------------------------------------------
def _shared(body: Any) -> str:
    assert body["message"] == body["detail"] and body["id"]
    return body["message"]


ERROR_TEXT: dict[str, Callable[[Any], str]] = {
    "/v1/rerank": _shared,
    "/v2/rerank": lambda body: body["message"],
    "/v1/reranking": lambda body: body["detail"],
    "/rerank": lambda body: body["error"] if body["error_type"] == "Validation" else "wrong error_type",
    "/v1/models/rerank": lambda body: body["detail"],
}
FIELD = {"/v1/rerank": "documents", "/v2/rerank": "documents", "/v1/reranking": "input", "/rerank": "texts"}
FIELD["/v1/models/rerank"] = "documents"

BAD: list[tuple[str, Callable[[str], dict[str, Any] | bytes], int, str]] = [
    ("missing query", lambda f: {f: ["d"]}, 422, "'query' is required"),
    ("blank query", lambda f: {"query": "  ", f: ["d"]}, 422, "'query' is empty"),
    ("separators-only query", lambda f: {"query": "\x1d\x1f ", f: ["d"]}, 422, "'query' is empty"),  # str.strip
    ("documents not a list", lambda f: {"query": "q", f: "d"}, 422, "must be an array"),
    ("numeric document", lambda f: {"query": "q", f: ["d", 5]}, 422, "[1]"),
    ("lone surrogate", lambda f: b'{"query": "q", "' + f.encode() + b'": ["ok", "x\\udc00"]}', 422, "lone surrogate"),
    ("too many documents", lambda f: {"query": "q", f: ["d"] * (MAX_DOCUMENTS + 1)}, 413, f"at most {MAX_DOCUMENTS}"),
    ("body too large", lambda f: {"query": "q", f: ["x" * MAX_REQUEST_BYTES]}, 413, f"{MAX_REQUEST_BYTES} bytes"),
    ("deep nesting", lambda f: b'{"query": "q", "' + f.encode() + b'": ' + b"[" * 50 + b"]" * 50 + b"}", 400, "deep"),
    ("duplicate key", lambda f: b'{"query": "q", "query": "r", "' + f.encode() + b'": []}', 400, "twice"),
    ("not JSON", lambda f: b'{"query": ', 400, "malformed JSON"),
]


@pytest.mark.parametrize("path", list(ERROR_TEXT))
@pytest.mark.parametrize(("name", "make", "status", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_requests_get_the_dialects_own_4xx(
    base_url: str,
    scorer: ZerankScorer,
    path: str,
    name: str,
    make: Callable[[str], Any],
    status: int,
    message: str,
) -> None:
    body = make(FIELD[path])
    content = body if isinstance(body, bytes) else httpx.Request("POST", "/", json=body).content
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=30) as client:
        refused = client.post(path, content=content)
        assert refused.status_code == status, refused.text
        assert message in ERROR_TEXT[path](refused.json())
        good = client.post("/v2/rerank", json={"query": QUERY, "documents": DOCS[:3]})  # same connection pool
    assert good.status_code == 200
    assert close_to(in_input_order(good.json()["results"], 3), scorer.score(QUERY, DOCS[:3]))


# -- the core contract's per-pair details: usage, truncation, instruction, families --------------------------
AUTH = {"Authorization": f"Bearer {KEY}"}


def test_usage_is_the_tokens_the_model_read(base_url: str, scorer: ZerankScorer) -> None:
    tokens = sum(d.tokens for d in scorer.score_details(QUERY, DOCS))
    assert tokens > len(DOCS)  # every prompt has a template around the texts
    cohere_v2 = httpx.post(f"{base_url}/v2/rerank", json={"query": QUERY, "documents": DOCS}, headers=AUTH).json()
    assert cohere_v2["meta"]["tokens"]["input_tokens"] == tokens == cohere_v2["usage"]["total_tokens"]
    voyage = httpx.post(
        f"{base_url}/v1/rerank", json={"query": QUERY, "documents": DOCS, "top_k": 1}, headers=AUTH
    ).json()
    assert voyage["usage"]["total_tokens"] == tokens
    zeroentropy = httpx.post(f"{base_url}/v1/models/rerank", json={"query": QUERY, "documents": DOCS}, headers=AUTH)
    assert zeroentropy.json()["total_tokens"] == tokens


def test_max_tokens_per_doc_cuts_each_document(base_url: str, scorer: ZerankScorer) -> None:
    cut = scorer.truncate_texts(DOCS, 3)
    assert cut != DOCS and all(n <= 3 for n in scorer.count_tokens(cut))
    body = {"query": QUERY, "documents": DOCS, "max_tokens_per_doc": 3}
    answer = httpx.post(f"{base_url}/v2/rerank", json=body, headers=AUTH).json()
    assert close_to(in_input_order(answer["results"], len(DOCS)), scorer.score(QUERY, cut))


async def test_requests_with_different_instructions_share_a_batch(scorer: ZerankScorer) -> None:
    if not scorer.accepts_instruction:
        pytest.skip("the test checkpoint's family takes no instruction")
    instructions = ["prefer primary sources", "prefer recent documents", None]
    expected = [scorer.score(QUERY, DOCS, instruction=text) for text in instructions]
    assert expected[0] != expected[1]
    app = create_app(scorer, batch_wait_ms=200)
    with serve_in_thread(app) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            bodies = [{"query": QUERY, "documents": DOCS, "instruction": text} for text in instructions]
            answers = await asyncio.gather(*(client.post("/v1/rerank", json=body) for body in bodies))
        assert app.state.batcher.stats.largest_batch_requests >= 2
    for answer, want in zip(answers, expected, strict=True):
        assert close_to(in_input_order(answer.json()["results"], len(DOCS)), want)


def test_a_family_without_instructions_answers_422(tmp_path: Any, qwen3_tokenizer_dir: Any) -> None:
    from zerank_integrations.testing import build_test_checkpoint

    checkpoint = build_test_checkpoint(tmp_path / "cross-encoder", family="cross-encoder")
    cross = ZerankScorer(str(checkpoint))
    assert not cross.accepts_instruction
    app = create_app(cross)
    with serve_in_thread(app) as url:
        refused = httpx.post(f"{url}/v2/rerank", json={"query": QUERY, "documents": DOCS, "instruction": "be strict"})
        schema = httpx.get(f"{url}/openapi.json").json()
        # TEI returns raw scores; the cross-encoder family's calibration (temperature 1) makes probabilities
        with RemoteScorer(url, dialect="tei", model=cross.model_name, family="cross-encoder") as remote:
            assert close_to(remote.score(QUERY, DOCS), cross.score(QUERY, DOCS))
            assert close_to(remote.score(QUERY, DOCS, raw=True), cross.score(QUERY, DOCS, raw=True))
    assert refused.status_code == 422 and "takes no instruction" in refused.json()["message"]
    assert "instruction" not in schema["components"]["schemas"]["CohereRerankRequest"]["properties"]
    raw = cross.score(QUERY, DOCS, raw=True)
    assert close_to(cross.score(QUERY, DOCS), [1 / (1 + math.exp(-x)) for x in raw])
