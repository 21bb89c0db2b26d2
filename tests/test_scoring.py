"""The scoring core against a straightforward reference: chat template, one pair per forward, full logits."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import threading
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from zerank_integrations import ZerankScorer
from zerank_integrations.scoring import ModelLoadError
from zerank_integrations.scoring import scorer as scorer_module

MAX_LENGTH = 200


# -- the reference implementation ----------------------------------------------------------------------------
class Reference:
    """zerank-2 scoring written the obvious way, sharing no code with the package."""

    def __init__(self, path: Path) -> None:
        self.tok = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        self.yes = self.tok.convert_tokens_to_ids("Yes")
        self._memo: dict[tuple[str, str, int | None], float] = {}

    def ids(self, query: str, document: str) -> list[int]:
        messages = [{"role": "system", "content": query}, {"role": "user", "content": document}]
        text = self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def prompt_ids(self, query: str, document: str, max_length: int | None) -> list[int]:
        query, document = query.strip(), document.strip()
        ids = self.ids(query, document)
        if max_length is None or len(ids) <= max_length:
            return ids
        room_for_document = max_length - len(self.ids(query, ""))
        if room_for_document >= 0:  # shorten the document first
            doc_tokens = self.tok(document, add_special_tokens=False)["input_ids"][:room_for_document]
            return self.ids(query, self.tok.decode(doc_tokens))
        room_for_query = max_length - len(self.ids("", ""))
        query_tokens = self.tok(query, add_special_tokens=False)["input_ids"][:room_for_query]
        return self.ids(self.tok.decode(query_tokens), "")

    @torch.inference_mode()
    def logit(self, query: str, document: str, max_length: int | None = None) -> float:
        key = (query, document, max_length)
        if key not in self._memo:  # full-vocabulary logits are slow; compute each pair once per module
            ids = self.prompt_ids(query, document, max_length)
            self._memo[key] = self.model(torch.tensor([ids])).logits[0, -1, self.yes].item()
        return self._memo[key]


@pytest.fixture(scope="module")
def reference(checkpoint_dir: Path) -> Reference:
    return Reference(checkpoint_dir)


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


def test_fixture_is_zerank_shaped(checkpoint_dir: Path, reference: Reference) -> None:
    config = json.loads((checkpoint_dir / "config.json").read_text())
    assert config["architectures"] == ["Qwen3ForCausalLM"]
    assert config["vocab_size"] == 151_936 and config["tie_word_embeddings"] is True
    assert 64 <= config["hidden_size"] <= 256 and 2 <= config["num_hidden_layers"] <= 4
    assert reference.yes == 9454 and len(reference.tok) == 151_669
    assert (checkpoint_dir / "model.safetensors").is_file()


def test_pairs_cover_truncation(pairs: list[tuple[str, str]], reference: Reference) -> None:
    lengths = [len(reference.ids(q.strip(), d.strip())) for q, d in pairs]
    assert len(pairs) >= 50
    assert min(lengths) < 30 and sum(n > MAX_LENGTH for n in lengths) >= 10


@pytest.mark.parametrize("prefix_reuse", [False, True])
@pytest.mark.parametrize("batch_tokens", [160, 100_000])
def test_scores_equal_reference(
    checkpoint_dir: Path,
    reference: Reference,
    pairs: list[tuple[str, str]],
    prefix_reuse: bool,
    batch_tokens: int,
) -> None:
    scorer = ZerankScorer(
        str(checkpoint_dir), max_length=MAX_LENGTH, batch_tokens=batch_tokens, prefix_reuse=prefix_reuse
    )
    shuffled = pairs[:]
    random.Random(batch_tokens).shuffle(shuffled)
    expected = [reference.logit(q, d, MAX_LENGTH) for q, d in shuffled]
    over_long = sum(len(reference.ids(q.strip(), d.strip())) > MAX_LENGTH for q, d in shuffled)
    before = scorer.stats
    with pytest.warns(UserWarning, match="exceed max_length=200"):
        raw = scorer.score_pairs(shuffled, raw=True)
    assert raw == pytest.approx(expected, abs=1e-4)
    probabilities = scorer.score_pairs(shuffled)
    assert probabilities == pytest.approx([1 / (1 + math.exp(-e / 5)) for e in expected], abs=1e-5)
    work = scorer.stats - before
    assert work.pairs == 2 * len(pairs) and work.truncated_pairs == 2 * over_long
    if batch_tokens == 160:
        assert work.forward_passes > 20  # many small batches, same scores


def test_score_per_query_equals_reference(checkpoint_dir: Path, reference: Reference, corpus: list[str]) -> None:
    scorer = ZerankScorer(str(checkpoint_dir), max_length=MAX_LENGTH)  # a fresh scorer: it warns once
    query = "What causes cancer?"
    with pytest.warns(UserWarning, match="shortened"):
        scores = scorer.score(query, corpus[:12])
    expected = [1 / (1 + math.exp(-reference.logit(query, doc, MAX_LENGTH) / 5)) for doc in corpus[:12]]
    assert scores == pytest.approx(expected, abs=1e-5)
    assert all(0.0 <= s <= 1.0 for s in scores)


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
    docs = [corpus[0], "other", " " + corpus[0], corpus[1], corpus[0] + "\n"]
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
    with pytest.raises(TypeError, match="pair at index 1: document is bytes"):
        scorer.score_pairs([("q", "d"), ("q", b"bytes")])
    with pytest.raises(ValueError, match="pair at index 0: query is empty"):
        scorer.score_pairs([(" ", "d")])
    with pytest.raises(ValueError, match="top_n must be >= 1"):
        scorer.rank("query", ["a"], top_n=0)
    assert scorer.stats == before


async def test_async_twins_refuse_what_sync_refuses(scorer: ZerankScorer) -> None:
    """A single string must not be scored character by character just because it is iterable."""
    before = scorer.stats
    for call in (scorer.ascore("query", "abc"), scorer.arank("query", "abc", top_n=1)):
        with pytest.raises(TypeError, match="not a single string"):
            await call
    with pytest.raises(TypeError, match="documents must be a sequence of strings, got NoneType"):
        await scorer.ascore("query", None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"pairs must be a sequence of \(query, document\) tuples, got NoneType"):
        scorer.score_pairs(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"pairs must be .* not a single string"):
        await scorer.ascore_pairs("qd")  # type: ignore[arg-type]
    assert scorer.stats == before  # refused before the model ran
    docs = ["alpha", "beta"]
    assert await scorer.ascore("query", (d for d in docs)) == scorer.score("query", docs)  # generators still work


def test_empty_document_is_scored_and_inputs_untouched(scorer: ZerankScorer, reference: Reference) -> None:
    docs = ["", "text", "  "]
    snapshot = list(docs)
    scores = scorer.score("query", docs, raw=True)
    assert len(scores) == 3 and docs == snapshot
    assert scores[0] == pytest.approx(reference.logit("query", ""), abs=1e-4)
    assert scores[2] == pytest.approx(scores[0], abs=1e-5)  # whitespace-only == empty after stripping


def test_document_longer_than_the_tokenizer_limit(checkpoint_dir: Path) -> None:
    """Our truncation handles it: no false "will result in indexing errors" from transformers, one warning."""
    scorer = ZerankScorer(str(checkpoint_dir), max_length=64)
    limit = scorer.loaded_model.tokenizer.model_max_length
    huge = "word " * (limit + 10)
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    hf_logger = logging.getLogger("transformers")  # transformers' own loggers do not propagate to the root
    hf_logger.addHandler(handler)
    try:
        with pytest.warns(UserWarning, match=r"1 \(query, document\) pair\(s\) exceed max_length=64"):
            scores = scorer.score("query", [huge, "short"])
    finally:
        hf_logger.removeHandler(handler)
    assert len(scores) == 2 and (scorer.stats.truncated_pairs, scorer.stats.pairs) == (1, 2)
    assert not [r for r in records if "indexing errors" in r.getMessage()]


def test_settings_are_validated(checkpoint_dir: Path, reference: Reference) -> None:
    template_tokens = len(reference.ids("", ""))
    with pytest.raises(ValueError, match=f"max_length=10 must exceed the {template_tokens} tokens"):
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


def test_unloadable_models_are_named(tmp_path: Path, checkpoint_dir: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelLoadError, match=r"model '.*no-such-model': no such directory"):
        ZerankScorer(str(missing))
    with pytest.raises(ModelLoadError, match=r"(?s)'nobody/zerank-nothing'.*pass its local directory"):
        ZerankScorer("nobody/zerank-nothing", local_files_only=True)


def test_folder_without_a_model_is_named(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(ModelLoadError, match=r"model '.*': the folder has no config\.json, so it is not a Hugging"):
        ZerankScorer(str(tmp_path))


def test_pickled_weights_are_refused(tmp_path: Path, checkpoint_dir: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(checkpoint_dir)
    target = tmp_path / "pickled"
    target.mkdir()
    model.config.save_pretrained(target)
    torch.save(model.state_dict(), target / "pytorch_model.bin")  # a pickle: loading it could run code
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        (target / name).write_bytes((checkpoint_dir / name).read_bytes())
    assert not list(target.glob("*.safetensors"))
    with pytest.raises(ModelLoadError, match="pickled"):
        ZerankScorer(str(target))


def test_remote_code_is_never_run(tmp_path: Path, checkpoint_dir: Path) -> None:
    target = tmp_path / "custom-code"
    target.mkdir()
    marker = tmp_path / "code-ran"
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json", "model.safetensors"):
        (target / name).write_bytes((checkpoint_dir / name).read_bytes())
    config = json.loads((checkpoint_dir / "config.json").read_text())
    config.update(model_type="zerank_custom", auto_map={"AutoModelForCausalLM": "evil.EvilModel"})
    (target / "config.json").write_text(json.dumps(config))
    (target / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    with pytest.raises(ModelLoadError, match="custom-code"):
        ZerankScorer(str(target))
    assert not marker.exists()


def test_one_loaded_model_per_settings(checkpoint_dir: Path) -> None:
    a = ZerankScorer(str(checkpoint_dir))
    b = ZerankScorer(str(checkpoint_dir) + "/", max_length=512)
    c = ZerankScorer(str(checkpoint_dir), dtype="bfloat16")
    assert a._loaded is b._loaded
    assert c._loaded is not a._loaded and c.dtype == torch.bfloat16
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
    real_forward = scorer_module.yes_logits_full
    refused: list[int] = []
    served: list[int] = []

    def forward_with_small_memory(loaded, rows):  # type: ignore[no-untyped-def]
        if len(rows) > 3:
            refused.append(len(rows))
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        served.append(len(rows))
        return real_forward(loaded, rows)

    monkeypatch.setattr(scorer_module, "yes_logits_full", forward_with_small_memory)
    assert scorer.score("what is a cell?", corpus[:16], raw=True) == pytest.approx(expected, abs=1e-5)
    # Split until it fit: every pair scored exactly once, in the right place.
    assert refused and refused[0] > 3 and sum(served) == 16 and max(served) <= 3


def test_sentence_transformers_parity(checkpoint_dir: Path, scorer: ZerankScorer, corpus: list[str]) -> None:
    from zerank_integrations.testing import sentence_transformers_cross_encoder

    cross_encoder = sentence_transformers_cross_encoder(checkpoint_dir)
    query = "What causes cancer?"
    docs = [doc[:300] for doc in corpus[:12]] + ["", "short"]
    theirs = cross_encoder.predict([(query, d) for d in docs], activation_fn=torch.nn.Identity(), batch_size=4)
    ours = ZerankScorer(str(checkpoint_dir)).score(query, docs, raw=True)
    assert ours == pytest.approx([float(x) for x in theirs], abs=1e-4)
