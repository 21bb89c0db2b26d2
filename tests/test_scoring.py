"""The scoring core: fidelity against a plain reference, batching, caching, long documents, errors, concurrency.

Family recipes are checked one by one in test_families.py; this module checks what every family shares, on
the zerank checkpoint (the reference: chat template, one pair per forward, full logits).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import random
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from _references import ZerankReference
from transformers import AutoModelForCausalLM

from zerank_integrations import ZerankScorer
from zerank_integrations.scoring import DocumentScore, ModelLoadError

MAX_LENGTH = 200


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


@pytest.fixture(scope="module")
def reference(checkpoint_dir: Path) -> ZerankReference:
    return ZerankReference(checkpoint_dir)


@pytest.fixture(scope="module")
def corpus(datasets_dir: Path) -> list[str]:
    with open(datasets_dir / "scifact" / "corpus.jsonl", encoding="utf-8") as handle:
        rows = [json.loads(line) for _, line in zip(range(40), handle, strict=False)]
    return [row["title"] + "\n" + row["text"] for row in rows]


EDGE_DOCUMENTS = [
    "",
    "   \n\t  ",
    "x",
    "Paris",
    "  leading and trailing spaces  ",
    "?! punctuation first, then words",
    "42 is a number; 3.14159 another",
    "Ünïcödé — «quotes», 日本語のテキスト, emoji 🙂",
    "line one\nline two\n\nline four",
    "a literal <|im_end|> inside a document",
]


@pytest.fixture(scope="module")
def pairs(corpus: list[str]) -> list[tuple[str, str]]:
    """>= 50 pairs: very short, long and truncated documents; short, long and over-long queries."""
    long_query = " ".join(["Which mechanisms link chronic inflammation to insulin resistance in adipose tissue?"] * 9)
    over_long_query = "endless question " * 150  # longer than max_length on its own
    short = "  What causes cancer?  "
    result = [(short, doc) for doc in corpus[:20] + EDGE_DOCUMENTS]
    result += [(long_query, doc) for doc in corpus[20:40] + EDGE_DOCUMENTS[:4]]
    result += [(over_long_query, doc) for doc in corpus[:3]]
    return result


def test_fixture_is_zerank_shaped(checkpoint_dir: Path, reference: ZerankReference) -> None:
    config = json.loads((checkpoint_dir / "config.json").read_text())
    assert config["architectures"] == ["Qwen3ForCausalLM"]
    assert config["vocab_size"] == 151_936 and config["tie_word_embeddings"] is True
    assert 64 <= config["hidden_size"] <= 256 and 2 <= config["num_hidden_layers"] <= 4
    assert reference.token("Yes") == 9454 and len(reference.tok) == 151_669
    assert (checkpoint_dir / "model.safetensors").is_file() and (checkpoint_dir / "RANDOM_WEIGHTS.txt").is_file()


def test_pairs_cover_truncation(pairs: list[tuple[str, str]], reference: ZerankReference) -> None:
    lengths = [len(reference.ids(q, d)) for q, d in pairs]
    assert len(pairs) >= 50
    assert min(lengths) < 30 and sum(n > MAX_LENGTH for n in lengths) >= 10


@pytest.mark.parametrize("prefix_reuse", [False, True])
@pytest.mark.parametrize("batch_tokens", [160, 100_000])
def test_scores_equal_reference(
    checkpoint_dir: Path,
    reference: ZerankReference,
    pairs: list[tuple[str, str]],
    prefix_reuse: bool,
    batch_tokens: int,
) -> None:
    scorer = ZerankScorer(
        str(checkpoint_dir), max_length=MAX_LENGTH, batch_tokens=batch_tokens, prefix_reuse=prefix_reuse
    )
    shuffled = pairs[:]
    random.Random(batch_tokens).shuffle(shuffled)
    expected = [reference.raw(q, d, None, MAX_LENGTH) for q, d in shuffled]
    over_long = sum(len(reference.ids(q, d)) > MAX_LENGTH for q, d in shuffled)
    before = scorer.stats
    with pytest.warns(UserWarning, match="exceed max_length=200"):
        details = scorer.score_pairs_details(shuffled)
    assert [d.raw for d in details] == pytest.approx(expected, abs=1e-4)
    assert [d.probability for d in details] == pytest.approx([sigmoid(e / 5) for e in expected], abs=1e-5)
    work = scorer.stats - before
    assert work.pairs == len(pairs) and work.truncated_pairs == over_long
    if batch_tokens == 160:
        assert work.forward_passes > 20  # many small batches, same scores


def test_details_count_the_tokens_read(
    checkpoint_dir: Path, reference: ZerankReference, pairs: list[tuple[str, str]]
) -> None:
    scorer = ZerankScorer(str(checkpoint_dir), max_length=MAX_LENGTH)
    with pytest.warns(UserWarning, match="shortened"):
        details = scorer.score_pairs_details(pairs)
    for (query, document), result in zip(pairs, details, strict=True):
        assert isinstance(result, DocumentScore)
        full = len(reference.ids(query, document))
        assert result.truncated == (full > MAX_LENGTH)
        assert result.tokens == len(reference.ids(query, document, None, MAX_LENGTH)) <= MAX_LENGTH
        assert result.windows == 1 and result.span is None
        assert result.probability == pytest.approx(sigmoid(result.raw / 5))


def test_prefix_reuse_used_for_long_queries(checkpoint_dir: Path, corpus: list[str]) -> None:
    long_query = "how does " + "very " * 120 + "long query work"
    auto = ZerankScorer(str(checkpoint_dir), max_length=1024)
    off = ZerankScorer(str(checkpoint_dir), max_length=1024, prefix_reuse=False)
    a0, o0 = auto.stats, off.stats
    with_reuse = auto.score(long_query, corpus[:10], raw=True)
    without = off.score(long_query, corpus[:10], raw=True)
    assert with_reuse == pytest.approx(without, abs=1e-4)
    # The reused prefix is computed once: far fewer token slots than recomputing it for each document.
    assert (auto.stats - a0).computed_tokens < 0.75 * (off.stats - o0).computed_tokens


def test_rank_orders_best_first(scorer: ZerankScorer, corpus: list[str]) -> None:
    docs = corpus[:15]
    scores = scorer.score("What causes cancer?", docs)
    ranked = scorer.rank("What causes cancer?", docs)
    assert [i for i, _ in ranked] == sorted(range(len(docs)), key=lambda i: -scores[i])
    assert [s for _, s in ranked] == pytest.approx(sorted(scores, reverse=True))
    assert scorer.rank("What causes cancer?", docs, top_n=3) == ranked[:3]
    assert len(scorer.rank("What causes cancer?", docs, top_n=100)) == len(docs)


def test_ties_keep_input_order(checkpoint_dir: Path, corpus: list[str]) -> None:
    # A tiny budget puts every pair in its own batch: equal texts must still tie exactly.
    scorer = ZerankScorer(str(checkpoint_dir), batch_tokens=16, prefix_reuse=False)
    docs = [corpus[0], "other", corpus[0], corpus[1], corpus[0]]
    before = scorer.stats
    scores = scorer.score("q", docs)
    work = scorer.stats - before
    assert scores[0] == scores[2] == scores[4]
    same = [i for i, _ in scorer.rank("q", docs) if i in (0, 2, 4)]
    assert same == [0, 2, 4]
    assert work.pairs == 5 and work.forward_passes == 3  # identical pairs are computed once


def test_bad_input(scorer: ZerankScorer) -> None:
    before = scorer.stats
    assert scorer.score("query", []) == []
    assert scorer.rank("query", []) == []
    assert scorer.score_pairs([]) == []
    assert scorer.stats == before  # the model was not touched
    for query in ("", "   \n"):
        with pytest.raises(ValueError, match="query is empty or whitespace-only"):
            scorer.score(query, ["doc"])
    with pytest.raises(TypeError, match="document at index 2 is int"):
        scorer.score("query", ["a", "b", 3])
    with pytest.raises(TypeError, match="document at index 0 is NoneType"):
        scorer.score("query", [None])
    with pytest.raises(TypeError, match="not a single string"):
        scorer.score("query", "a single string")
    with pytest.raises(TypeError, match="pair at index 1: document at index 0 is bytes"):
        scorer.score_pairs([("q", "d"), ("q", b"bytes")])
    with pytest.raises(ValueError, match="pair at index 0: query is empty"):
        scorer.score_pairs([(" ", "d")])
    with pytest.raises(TypeError, match=r"pair at index 0 must be a \(query, document\[, instruction\]\) tuple"):
        scorer.score_pairs([("q", "d", None, "extra")])
    with pytest.raises(ValueError, match="top_n must be >= 1"):
        scorer.rank("query", ["a"], top_n=0)
    # Text no tokenizer can encode is refused with the field named, never a crash inside the tokenizer.
    with pytest.raises(ValueError, match=r"document at index 1 is not valid Unicode text: lone surrogate '\\udc00'"):
        scorer.score("query", ["fine", "bad \udc00 text"])
    with pytest.raises(ValueError, match="query is not valid Unicode text"):
        scorer.score("bad \ud800", ["doc"])
    with pytest.raises(TypeError, match="instruction must be a string or None, got int"):
        scorer.score("query", ["doc"], instruction=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="instruction is not valid Unicode text"):
        scorer.score("query", ["doc"], instruction="\udfff")
    assert scorer.stats == before


async def test_async_twins_refuse_what_sync_refuses(scorer: ZerankScorer) -> None:
    """A single string must not be scored character by character just because it is iterable."""
    before = scorer.stats
    for call in (scorer.ascore("query", "abc"), scorer.arank("query", "abc", top_n=1)):
        with pytest.raises(TypeError, match="not a single string"):
            await call
    with pytest.raises(TypeError, match="documents must be a sequence of strings, got NoneType"):
        await scorer.ascore("query", None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"pairs must be a sequence of \(query, document\) .*got NoneType"):
        scorer.score_pairs(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"pairs must be .* not a single string"):
        await scorer.ascore_pairs("qd")  # type: ignore[arg-type]
    assert scorer.stats == before  # refused before the model ran
    docs = ["alpha", "beta"]
    assert await scorer.ascore("query", (d for d in docs)) == scorer.score("query", docs)  # generators still work
    assert await scorer.ascore_details("query", docs) == scorer.score_details("query", docs)


def test_empty_document_is_scored_and_inputs_untouched(scorer: ZerankScorer, reference: ZerankReference) -> None:
    docs = ["", "text", "  "]
    snapshot = list(docs)
    scores = scorer.score("query", docs, raw=True)
    assert len(scores) == 3 and docs == snapshot
    assert scores[0] == pytest.approx(reference.raw("query", ""), abs=1e-4)
    # whitespace-only is read as the checkpoint's own template renders it: as given, not as empty
    assert scores[2] == pytest.approx(reference.raw("query", "  "), abs=1e-4)


def test_document_longer_than_the_tokenizer_limit_warns_once(checkpoint_dir: Path) -> None:
    """Our truncation handles it: no false "will result in indexing errors" from transformers, one warning
    (through ``warnings`` only: not a second copy through logging)."""
    scorer = ZerankScorer(str(checkpoint_dir), max_length=64)
    limit = scorer.loaded_model.tokenizer.model_max_length
    huge = "word " * (limit + 10)
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    for name in ("transformers", "zerank_integrations"):
        logging.getLogger(name).addHandler(handler)
    try:
        with pytest.warns(UserWarning, match=r"1 \(query, document\) pair\(s\) exceed max_length=64") as caught:
            scores = scorer.score("query", [huge, "short"])
            scorer.score("query", [huge])  # a second truncation: no second warning
    finally:
        for name in ("transformers", "zerank_integrations"):
            logging.getLogger(name).removeHandler(handler)
    assert len([w for w in caught if "max_length" in str(w.message)]) == 1
    assert len(scores) == 2 and (scorer.stats.truncated_pairs, scorer.stats.pairs) == (2, 3)
    assert not [r for r in records if "indexing errors" in r.getMessage() or "max_length" in r.getMessage()]


def test_settings_are_validated(checkpoint_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"max_length=10 leaves no room beside the \d+ tokens of the zerank prompt"):
        ZerankScorer(str(checkpoint_dir), max_length=10)
    with pytest.raises(ValueError, match="max_length=100000 exceeds the 8192 positions"):
        ZerankScorer(str(checkpoint_dir), max_length=100_000)
    with pytest.raises(ValueError, match="batch_tokens must be a positive int"):
        ZerankScorer(str(checkpoint_dir), batch_tokens=0)
    with pytest.raises(ValueError, match="dtype 'int8' is not supported"):
        ZerankScorer(str(checkpoint_dir), dtype="int8")
    with pytest.raises(ValueError, match="device 'gpu0' is not a torch device"):
        ZerankScorer(str(checkpoint_dir), device="gpu0")
    with pytest.raises(ValueError, match="prefix_reuse must be"):
        ZerankScorer(str(checkpoint_dir), prefix_reuse="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cache_size must be an int >= 0"):
        ZerankScorer(str(checkpoint_dir), cache_size=-1)
    with pytest.raises(ValueError, match="long_documents must be 'truncate' or 'max_chunk'"):
        ZerankScorer(str(checkpoint_dir), long_documents="split")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="chunk_tokens and chunk_stride only apply with long_documents='max_chunk'"):
        ZerankScorer(str(checkpoint_dir), chunk_tokens=64)
    with pytest.raises(ValueError, match=r"chunk_stride \(80\) cannot exceed chunk_tokens \(64\)"):
        ZerankScorer(str(checkpoint_dir), long_documents="max_chunk", chunk_tokens=64, chunk_stride=80)
    default = ZerankScorer(str(checkpoint_dir))
    assert default.max_length == 8192  # zerank's 32k card default, capped by this checkpoint's 8192 positions


def test_unloadable_models_are_named(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelLoadError, match=r"model '.*no-such-model': no such directory"):
        ZerankScorer(str(missing))
    with pytest.raises(ModelLoadError, match=r"(?s)'nobody/zerank-nothing'.*not in the local Hugging Face cache"):
        ZerankScorer("nobody/zerank-nothing", local_files_only=True)


def test_folder_without_a_model_is_named(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(ModelLoadError, match=r"model '.*': the folder has no config\.json, so it is not a Hugging"):
        ZerankScorer(str(tmp_path))


def _copy_tokenizer(source: Path, target: Path) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "modules.json"):
        (target / name).write_bytes((source / name).read_bytes())
    (target / "1_LogitScore").mkdir()
    (target / "1_LogitScore" / "config.json").write_bytes((source / "1_LogitScore" / "config.json").read_bytes())


def test_pickled_weights_are_refused(tmp_path: Path, checkpoint_dir: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(checkpoint_dir)
    target = tmp_path / "pickled"
    target.mkdir()
    model.config.save_pretrained(target)
    torch.save(model.state_dict(), target / "pytorch_model.bin")  # a pickle: loading it could run code
    _copy_tokenizer(checkpoint_dir, target)
    assert not list(target.glob("*.safetensors"))
    with pytest.raises(ModelLoadError, match="pickled"):
        ZerankScorer(str(target))


def test_remote_code_is_never_run(tmp_path: Path, checkpoint_dir: Path) -> None:
    target = tmp_path / "custom-code"
    target.mkdir()
    marker = tmp_path / "code-ran"
    _copy_tokenizer(checkpoint_dir, target)
    (target / "model.safetensors").write_bytes((checkpoint_dir / "model.safetensors").read_bytes())
    config = json.loads((checkpoint_dir / "config.json").read_text())
    config.update(model_type="zerank_custom", auto_map={"AutoModelForCausalLM": "evil.EvilModel"})
    (target / "config.json").write_text(json.dumps(config))
    (target / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    with pytest.raises(ModelLoadError, match="custom-code"):
        ZerankScorer(str(target))
    assert not marker.exists()


def test_one_loaded_model_per_settings(checkpoint_dir: Path) -> None:
    a = ZerankScorer(str(checkpoint_dir))
    b = ZerankScorer(str(checkpoint_dir) + "/", max_length=512, cache_size=10)
    c = ZerankScorer(str(checkpoint_dir), dtype="bfloat16")
    assert a.loaded_model is b.loaded_model
    assert c.loaded_model is not a.loaded_model and c.dtype == torch.bfloat16
    assert a.device == torch.device("cpu") and a.dtype == torch.float32


def test_concurrent_threads_match_serial(scorer: ZerankScorer, corpus: list[str]) -> None:
    queries = [f"question number {i} about cells" for i in range(8)]
    serial = [scorer.score(q, corpus[i : i + 12]) for i, q in enumerate(queries)]
    results: dict[int, list[float]] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for _ in range(3):
                results[i] = scorer.score(queries[i], corpus[i : i + 12])
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert [results[i] for i in range(8)] == [pytest.approx(s, abs=1e-6) for s in serial]


async def test_async_matches_sync(scorer: ZerankScorer, corpus: list[str]) -> None:
    expected = scorer.score("what is a cell?", corpus[:10])
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    results = await asyncio.gather(*(scorer.ascore("what is a cell?", corpus[:10]) for _ in range(6)))
    ranked = await scorer.arank("what is a cell?", corpus[:10], top_n=3)
    task.cancel()
    assert all(r == pytest.approx(expected, abs=1e-6) for r in results)
    assert ranked == scorer.rank("what is a cell?", corpus[:10], top_n=3)
    assert ticks > 10  # the loop kept running while the model worked


def test_out_of_memory_splits_and_keeps_order(
    checkpoint_dir: Path, corpus: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    scorer = ZerankScorer(str(checkpoint_dir), max_length=MAX_LENGTH, batch_tokens=100_000, prefix_reuse=False)
    with pytest.warns(UserWarning, match="shortened"):
        expected = scorer.score("what is a cell?", corpus[:16], raw=True)
    forward = scorer.loaded_model.forward
    real_full = forward.full
    refused: list[int] = []
    served: list[int] = []

    def full_with_small_memory(rows):  # type: ignore[no-untyped-def]
        if len(rows) > 3:
            refused.append(len(rows))
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        served.append(len(rows))
        return real_full(rows)

    monkeypatch.setattr(forward, "full", full_with_small_memory)
    assert scorer.score("what is a cell?", corpus[:16], raw=True) == pytest.approx(expected, abs=1e-5)
    # Split until it fit: every pair scored exactly once, in the right place.
    assert refused and refused[0] > 3 and sum(served) == 16 and max(served) <= 3


def test_count_and_truncate_texts(scorer: ZerankScorer, reference: ZerankReference) -> None:
    texts = ["one two three four five six seven", "short", "", "Ünïcödé 日本語 🙂 text"]
    assert scorer.count_tokens(texts) == [reference.n(t) for t in texts]
    cut = scorer.truncate_texts(texts, 3)
    assert cut[1:3] == texts[1:3] and texts[0].startswith(cut[0]) and reference.n(cut[0]) == 3
    assert all(reference.n(c) <= 3 for c in cut)
    with pytest.raises(ValueError, match="max_tokens must be a positive int"):
        scorer.truncate_texts(texts, 0)


# -- the score cache ------------------------------------------------------------------------------------------
def test_cache_returns_identical_scores_without_forward_passes(checkpoint_dir: Path, corpus: list[str]) -> None:
    cached = ZerankScorer(str(checkpoint_dir), cache_size=1000)
    plain = ZerankScorer(str(checkpoint_dir))
    query = "what regulates the cell cycle?"
    first = cached.score_details(query, corpus[:12])
    before = cached.stats
    again = cached.score_details(query, list(reversed(corpus[:12])))
    work = cached.stats - before
    assert again == list(reversed(first))  # identical objects' values: raw, tokens, truncation
    assert work.forward_passes == 0 and work.cache_hits == 12 and work.cache_misses == 0 and work.pairs == 12
    assert [d.raw for d in first] == pytest.approx(plain.score(query, corpus[:12], raw=True), abs=1e-6)
    # Only the new pairs reach the model; a different instruction is a different pair.
    before = cached.stats
    mixed = cached.score(query, corpus[10:14])
    assert (cached.stats - before).cache_hits == 2 and (cached.stats - before).cache_misses == 2
    assert mixed == pytest.approx(plain.score(query, corpus[10:14]), abs=1e-6)
    before = cached.stats
    cached.score(query, corpus[:2], instruction="prefer reviews")
    assert (cached.stats - before).cache_misses == 2


def test_cache_is_bounded(checkpoint_dir: Path) -> None:
    scorer = ZerankScorer(str(checkpoint_dir), cache_size=3)
    scorer.score("q", ["a", "b", "c", "d", "e"])
    assert len(scorer._cache) == 3
    before = scorer.stats
    scorer.score("q", ["c", "d", "e"])  # the three most recent stayed
    assert (scorer.stats - before).cache_hits == 3
    before = scorer.stats
    scorer.score("q", ["a"])  # evicted first
    assert (scorer.stats - before).cache_misses == 1


async def test_cache_under_concurrency_equals_serial(checkpoint_dir: Path, corpus: list[str]) -> None:
    serial_scorer = ZerankScorer(str(checkpoint_dir))
    queries = [f"follow-up question {i % 3}" for i in range(12)]
    windows = [corpus[(i % 4) * 5 : (i % 4) * 5 + 10] for i in range(12)]  # overlapping chunks
    serial = [serial_scorer.score(q, w) for q, w in zip(queries, windows, strict=True)]
    shared = ZerankScorer(str(checkpoint_dir), cache_size=500)
    threaded: dict[int, list[float]] = {}

    def work(i: int) -> None:
        threaded[i] = shared.score(queries[i], windows[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    from_async = await asyncio.gather(*(shared.ascore(q, w) for q, w in zip(queries, windows, strict=True)))
    for i in range(12):
        assert threaded[i] == pytest.approx(serial[i], abs=1e-6)
        assert from_async[i] == pytest.approx(serial[i], abs=1e-6)
    assert shared.stats.cache_hits > 0


# -- long documents as windows --------------------------------------------------------------------------------
def test_max_chunk_scores_the_best_window(checkpoint_dir: Path, corpus: list[str]) -> None:
    query = "How do T cells recognise antigens?"
    long_document = "  " + "\n\n".join(corpus[:6]) + "  "  # far longer than the room, with strippable ends
    documents = [long_document, corpus[7], "short one"]
    scorer = ZerankScorer(
        str(checkpoint_dir), max_length=160, long_documents="max_chunk", chunk_tokens=64, chunk_stride=48
    )
    plain = ZerankScorer(str(checkpoint_dir), max_length=160)
    details = scorer.score_details(query, documents)
    long, _, short = details
    assert long.windows > 10 and long.span is not None and not long.truncated
    # Every window scored one by one by the plain scorer: the document's score is their maximum.
    spans = _window_spans(scorer, long_document, 64, 48)
    assert len(spans) == long.windows
    one_by_one = [plain.score(query, [long_document[a:b]], raw=True)[0] for a, b in spans]
    assert long.raw == pytest.approx(max(one_by_one), abs=1e-4)
    assert long.span == spans[one_by_one.index(max(one_by_one))]
    assert long_document[long.span[0] : long.span[1]].strip()
    if scorer.loaded_model.template.format.strip:  # a stripping recipe: spans still index the input
        assert long.span[0] >= 2
    # Short documents score exactly as under "truncate".
    assert short.windows == 1 and short.span is None
    assert short.raw == pytest.approx(plain.score(query, ["short one"], raw=True)[0], abs=1e-5)
    assert long.tokens > 160  # every window's prompt counted


def _window_spans(scorer: ZerankScorer, document: str, size: int, stride: int) -> list[tuple[int, int]]:
    """Windows as the docs describe them: ``size`` tokens every ``stride``, the last ending at the end, over the
    document as the family reads it (stripped by a stripping recipe, else as given)."""
    read = document.strip() if scorer.loaded_model.template.format.strip else document
    encoded = scorer.loaded_model.tokenizer(read, add_special_tokens=False, return_offsets_mapping=True)
    offsets = encoded["offset_mapping"]
    shift = document.index(read)
    n = len(offsets)
    starts = list(range(0, max(n - size, 0) + 1, stride))
    if starts[-1] + size < n:
        starts.append(n - size)
    return [(offsets[s][0] + shift, offsets[min(s + size, n) - 1][1] + shift) for s in starts]


def test_max_chunk_default_window_fills_the_room(checkpoint_dir: Path, corpus: list[str]) -> None:
    scorer = ZerankScorer(str(checkpoint_dir), max_length=200, long_documents="max_chunk")
    document = "\n".join(corpus[:4])
    (result,) = scorer.score_details("what is apoptosis?", [document])
    assert result.windows >= 4 and not result.truncated
    assert result.tokens <= result.windows * 200


# -- failing fast ---------------------------------------------------------------------------------------------
@contextmanager
def _fake_hub(status: int, error_code: str | None) -> Iterator[tuple[str, list[str]]]:
    """A loopback server answering every request like the Hub does for a missing repository; yields its URL
    and the list of paths it was asked for."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            self.send_response(status)
            if error_code:
                self.send_header("X-Error-Code", error_code)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"error": "Repository not found"}')

        do_HEAD = do_GET

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def _load_in_subprocess(model: str, endpoint: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    code = textwrap.dedent(
        f"""
        from zerank_integrations.scoring import ModelLoadError, ZerankScorer
        try:
            ZerankScorer({model!r})
        except ModelLoadError as error:
            print("ERROR:", error)
        """
    )
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(tmp_path / "hf-home"))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize(
    ("status", "error_code", "expected"),
    [(404, "RepoNotFound", "no such model on the Hugging Face Hub"), (401, None, "answered HTTP 401")],
)
def test_unknown_model_fails_at_once_without_retries(
    tmp_path: Path, status: int, error_code: str | None, expected: str
) -> None:
    with _fake_hub(status, error_code) as (endpoint, seen):
        proc = _load_in_subprocess("nobody/no-such-reranker", endpoint, tmp_path)
    assert "ERROR: " in proc.stdout and expected in proc.stdout, proc.stdout + proc.stderr
    asked = [path for path in seen if "no-such-reranker" in path]  # (the client also asks /api/agent-harnesses)
    assert len(asked) == 1 and asked[0].startswith("/api/models/")  # one request: no retries, no downloads
    assert "Retrying" not in proc.stderr and "Traceback" not in proc.stderr


def test_unreachable_hub_fails_at_once(tmp_path: Path) -> None:
    with _fake_hub(200, None) as (endpoint, _):
        closed = endpoint  # nothing listens there once the server is closed: connection refused
    proc = _load_in_subprocess("zeroentropy/zerank-2-reranker", closed, tmp_path)
    assert "the Hugging Face Hub cannot be reached" in proc.stdout and "hf download" in proc.stdout, proc.stdout
    assert "Retrying" not in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.count("cannot be reached") <= 1  # one line of warning, no retry noise
