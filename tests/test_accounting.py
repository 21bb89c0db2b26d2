"""TokenLedger: exact counts (vs tiktoken's own encodings), totals, prices, reports, threads, offline."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
import random
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import tiktoken
import tiktoken_ext.openai_public as openai_public

from zerank_integrations import TokenLedger, TokenSavings
from zerank_integrations.accounting import (
    PRICES_AS_OF,
    RECORD_FIELDS,
    encoding_name_for_llm,
    get_encoding,
    lookup_price,
    price_table,
)
from zerank_integrations.accounting.encodings import SPECS

O200K_URL = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"
CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
REPO_ROOT = Path(__file__).resolve().parents[1]

SUMMARY_KEYS = {
    "calls",
    "candidates",
    "kept",
    "tokens_in",
    "tokens_kept",
    "tokens_saved",
    "percent_saved",
    "cost_saved_usd",
    "llm",
    "encoding",
    "price_per_million_input",
    "price_source",
    "prices_as_of",
    # whole-input accounting and exactness (None without prompt=)
    "tokenizer",
    "counting",
    "prompt",
    "input_tokens_in",
    "input_tokens_kept",
    "input_tokens_saved",
    "percent_of_input_saved",
    "input_cost_saved_usd",
}

# Texts chosen to stress pre-tokenizer boundaries: trailing punctuation before the separator, leading
# whitespace / "/" / newlines, special-token look-alikes, non-Latin scripts, emoji, empty documents.
TRICKY = [
    "Reranking keeps the passages that answer the question.",
    "It ends with punctuation.",
    "/usr/share/doc starts with a slash",
    "  leading spaces and a trailing space ",
    "\nleading newline",
    "trailing newlines\n\n",
    "<|endoftext|> is plain text here, not a special token <|endofprompt|>",
    "Ünïcödé, 日本語のテキスト, עברית, emoji 🚀🔥 and combining e\u0301",
    "",
    "12345678901234567890 digits, 3.14159, 1e-9",
    "'s 're 've contractions: don't won't it's",
    "\ttab-led\r\nwindows line endings\r\n",
    "(parenthesised) [bracketed] {braced} — dashes – and … ellipsis",
]


def _static_tiktoken_dir() -> Path:
    spec = importlib.util.find_spec("llama_index.core")
    assert spec is not None and spec.submodule_search_locations, "llama-index-core is not installed"
    return Path(next(iter(spec.submodule_search_locations))) / "_static" / "tiktoken_cache"


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tiktoken.Encoding]:
    """tiktoken's *own* encodings, built by tiktoken_ext.openai_public from a copy of the packaged files."""
    cache = tmp_path_factory.mktemp("tiktoken-ref-cache")
    for item in _static_tiktoken_dir().iterdir():
        if item.is_file() and not item.name.startswith("."):
            shutil.copyfile(item, cache / item.name)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TIKTOKEN_CACHE_DIR", str(cache))
        return {
            "cl100k_base": tiktoken.Encoding(**openai_public.cl100k_base()),
            "o200k_base": tiktoken.Encoding(**openai_public.o200k_base()),
            "o200k_harmony": tiktoken.Encoding(**openai_public.o200k_harmony()),
        }


def ref_count(reference: dict[str, tiktoken.Encoding], encoding: str, texts: list[str], sep: str = "\n\n") -> int:
    return len(reference[encoding].encode_ordinary(sep.join(texts)))


# -- encodings -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["cl100k_base", "o200k_base", "o200k_harmony"])
def test_encodings_match_tiktokens_own_constructors(reference: dict[str, tiktoken.Encoding], name: str) -> None:
    ours, theirs = get_encoding(name), reference[name]
    assert ours._pat_str == theirs._pat_str
    assert ours._special_tokens == theirs._special_tokens
    assert ours.n_vocab == theirs.n_vocab
    sample = "\n\n".join(TRICKY)
    assert ours.encode_ordinary(sample) == theirs.encode_ordinary(sample)
    assert get_encoding(name) is ours  # cached per process


def test_specs_without_offline_files_match_tiktoken_constants() -> None:
    for name in ("r50k_base", "p50k_base", "p50k_edit"):
        assert SPECS[name].pat_str == openai_public.r50k_pat_str


@pytest.mark.parametrize(
    ("llm", "expected"),
    [
        ("gpt-4o", "o200k_base"),
        ("gpt-4o-mini", "o200k_base"),
        ("gpt-4.1-nano", "o200k_base"),
        ("gpt-5", "o200k_base"),
        ("gpt-5-mini", "o200k_base"),
        ("gpt-4", "cl100k_base"),
        ("gpt-4-turbo", "cl100k_base"),
        ("gpt-3.5-turbo", "cl100k_base"),
    ],
)
def test_llm_to_encoding_uses_tiktokens_model_table(llm: str, expected: str) -> None:
    assert encoding_name_for_llm(llm) == expected == tiktoken.encoding_name_for_model(llm)
    assert TokenLedger(llm=llm).encoding == expected


@pytest.mark.parametrize("llm", ["claude-sonnet-4-5", "gemini-2.5-flash", "my-local-llama"])
def test_unknown_llm_raises_naming_the_model(llm: str) -> None:
    with pytest.raises(ValueError, match=rf"LLM '{llm}'.*encoding="):
        TokenLedger(llm=llm)


def test_unknown_llm_with_explicit_encoding_is_counted_and_priced() -> None:
    ledger = TokenLedger(llm="claude-sonnet-4-5-20250929", encoding="cl100k_base")
    assert ledger.encoding == "cl100k_base"
    assert ledger.price_per_million_input == 3.0  # dated snapshot resolves to its alias in the table
    saving = ledger.record("q", ["alpha beta gamma", "delta"], ["delta"])
    assert saving.cost_saved_usd == pytest.approx(saving.tokens_saved * 3.0 / 1e6)


def test_unknown_encoding_and_missing_arguments() -> None:
    with pytest.raises(ValueError, match="unknown tiktoken encoding 'o300k_base'"):
        TokenLedger(encoding="o300k_base")
    with pytest.raises(ValueError, match="needs llm="):
        TokenLedger()


# -- counting ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("llm", ["gpt-4o", "gpt-3.5-turbo"])
def test_counts_equal_independent_tiktoken_counts(reference: dict[str, tiktoken.Encoding], llm: str) -> None:
    ledger = TokenLedger(llm=llm)
    enc = ledger.encoding
    kept = [TRICKY[6], TRICKY[0], TRICKY[2]]
    saving = ledger.record("what does reranking keep?", TRICKY, kept)
    assert saving.tokens_in == ref_count(reference, enc, TRICKY) > 0
    assert saving.tokens_kept == ref_count(reference, enc, kept) > 0
    assert saving.tokens_saved == saving.tokens_in - saving.tokens_kept
    assert saving.percent_saved == round(100 * saving.tokens_saved / saving.tokens_in, 2)
    assert (saving.candidates, saving.kept, saving.query) == (len(TRICKY), 3, "what does reranking keep?")
    # The same call again comes from the cache and must not change the numbers.
    again = ledger.record("what does reranking keep?", TRICKY, kept)
    assert (again.tokens_in, again.tokens_kept) == (saving.tokens_in, saving.tokens_kept)
    assert ledger.count_tokens(kept) == saving.tokens_kept


@pytest.mark.parametrize("encoding", ["o200k_base", "cl100k_base"])
@pytest.mark.parametrize("separator", ["\n\n", "\n", "\n---\n", "\r\n", " ", "", "\n\n\n"])
def test_randomised_counts_equal_direct_counts(
    reference: dict[str, tiktoken.Encoding], encoding: str, separator: str
) -> None:
    """Per-text caching must give exactly the count of the joined prompt, whatever the boundaries."""
    rng = random.Random(f"{encoding}{separator!r}")
    alphabet = [*"aZé1 .,/!?'\n\r\t-", "\u0301", "日本", "🚀", "ab", "The", "'s", "  ", "\n\n", "</", "x/"]
    pool = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12))) for _ in range(40)]
    ledger = TokenLedger(encoding=encoding, separator=separator, cache_size=64)
    for _ in range(60):
        candidates = rng.sample(pool, rng.randint(0, 10))
        kept = [c for c in candidates if rng.random() < 0.5]
        saving = ledger.record("q", candidates, kept)
        assert saving.tokens_in == ref_count(reference, encoding, candidates, separator)
        assert saving.tokens_kept == ref_count(reference, encoding, kept, separator)


def test_formatter_and_separator_define_the_counted_text(reference: dict[str, tiktoken.Encoding]) -> None:
    docs = [{"title": "Doc A", "body": "First body."}, {"title": "Doc B", "body": "/second body"}]

    def fmt(doc: dict[str, str]) -> str:
        return f"## {doc['title']}\n{doc['body']}"

    ledger = TokenLedger(llm="gpt-4o", formatter=fmt, separator="\n---\n")
    saving = ledger.record("q", docs, docs[:1])
    texts = [fmt(d) for d in docs]
    assert saving.tokens_in == ref_count(reference, "o200k_base", texts, "\n---\n")
    assert saving.tokens_kept == ref_count(reference, "o200k_base", texts[:1], "\n---\n")
    assert docs[1] == {"title": "Doc B", "body": "/second body"}  # caller's documents untouched


def test_empty_inputs_and_type_errors() -> None:
    ledger = TokenLedger(llm="gpt-4o")
    saving = ledger.record("q", [], [])
    assert (saving.tokens_in, saving.tokens_kept, saving.percent_saved, saving.cost_saved_usd) == (
        0,
        0,
        0.0,
        0.0,
    )
    with pytest.raises(TypeError, match=r"candidates\[1\] is int, expected str"):
        ledger.record("q", ["a", 3], [])
    with pytest.raises(TypeError, match="not a single string"):
        ledger.record("q", "a single string", [])
    with pytest.raises(TypeError, match="query must be a string"):
        ledger.record(None, ["a"], [])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"formatter returned int for kept\[0\]"):
        TokenLedger(llm="gpt-4o", formatter=len).record("q", [], ["abc"])
    assert ledger.summary()["calls"] == 1  # failed calls are not recorded


# -- totals, prices, reports -------------------------------------------------------------------------


def _record_some(ledger: TokenLedger) -> None:
    for i in range(5):
        candidates = [f"passage {i}-{j}: " + "context " * (i + j) for j in range(6)]
        ledger.record(f"query {i}", candidates, candidates[: i % 3 + 1])


def test_summary_totals_equal_sums_of_records() -> None:
    ledger = TokenLedger(llm="gpt-4o")
    _record_some(ledger)
    records, summary = ledger.records, ledger.summary()
    assert set(summary) == SUMMARY_KEYS
    assert summary["calls"] == len(records) == 5
    for key in ("candidates", "kept", "tokens_in", "tokens_kept", "tokens_saved"):
        assert summary[key] == sum(getattr(r, key) for r in records)
    assert summary["percent_saved"] == round(100 * summary["tokens_saved"] / summary["tokens_in"], 2)
    assert summary["cost_saved_usd"] == pytest.approx(sum(r.cost_saved_usd for r in records))
    assert summary["cost_saved_usd"] == pytest.approx(summary["tokens_saved"] * 2.50 / 1e6)
    assert (summary["llm"], summary["encoding"], summary["price_per_million_input"]) == (
        "gpt-4o",
        "o200k_base",
        2.5,
    )
    assert (summary["price_source"], summary["prices_as_of"]) == ("table", PRICES_AS_OF)
    assert [r.query for r in records] == [f"query {i}" for i in range(5)]
    records.clear()  # a copy: the ledger keeps its history
    assert len(ledger.records) == 5


def test_price_override_and_missing_price() -> None:
    ledger = TokenLedger(llm="gpt-4o", price_per_million_input=7.0)
    saving = ledger.record("q", ["one two three four five", "six"], ["six"])
    assert saving.cost_saved_usd == pytest.approx(saving.tokens_saved * 7.0 / 1e6)
    summary = ledger.summary()
    assert (summary["price_per_million_input"], summary["price_source"], summary["prices_as_of"]) == (
        7.0,
        "override",
        None,
    )
    no_price = TokenLedger(encoding="o200k_base")
    assert no_price.record("q", ["a b c"], []).cost_saved_usd is None
    assert no_price.summary()["cost_saved_usd"] is None
    with pytest.raises(ValueError, match="finite and >= 0"):
        TokenLedger(llm="gpt-4o", price_per_million_input=-1)
    with pytest.raises(TypeError, match="must be a number"):
        TokenLedger(llm="gpt-4o", price_per_million_input="2.5")  # type: ignore[arg-type]


def test_price_table_is_dated_and_exact_about_names() -> None:
    table = price_table()
    assert PRICES_AS_OF and len(PRICES_AS_OF) >= 7
    for model in ("gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-5", "gpt-4-turbo", "gpt-3.5-turbo"):
        assert table[model].provider == "openai" and table[model].input_usd_per_million > 0
    assert lookup_price("gpt-4o-mini").input_usd_per_million == 0.15  # never priced as gpt-4o
    assert lookup_price("gpt-4o-2024-08-06").input_usd_per_million == 2.50
    assert lookup_price("gpt-4o-2024-05-13").input_usd_per_million == 5.00
    assert lookup_price("claude-haiku-4-5-20251001").input_usd_per_million == 1.00
    assert lookup_price("no-such-model") is None
    assert TokenLedger(llm="gpt-4o-mini").price_per_million_input == 0.15


def test_to_json_and_to_csv_round_trip(tmp_path: Path) -> None:
    ledger = TokenLedger(llm="gpt-4o")
    _record_some(ledger)
    ledger.record('no price issue, quotes "and", commas', ["a, b", "c"], ["c"])
    text = ledger.to_json(tmp_path / "ledger.json")
    assert (tmp_path / "ledger.json").read_text(encoding="utf-8") == text
    payload = json.loads(text)
    assert payload["summary"] == ledger.summary()
    assert [TokenSavings(**r) for r in payload["records"]] == ledger.records

    text = ledger.to_csv(tmp_path / "ledger.csv")
    with open(tmp_path / "ledger.csv", encoding="utf-8", newline="") as handle:
        assert handle.read() == text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert tuple(rows[0]) == RECORD_FIELDS
    parsed = [
        TokenSavings(
            query=row["query"],
            candidates=int(row["candidates"]),
            kept=int(row["kept"]),
            tokens_in=int(row["tokens_in"]),
            tokens_kept=int(row["tokens_kept"]),
            tokens_saved=int(row["tokens_saved"]),
            percent_saved=float(row["percent_saved"]),
            cost_saved_usd=float(row["cost_saved_usd"]) if row["cost_saved_usd"] else None,
            timestamp=float(row["timestamp"]),
            exact=row["exact"] == "True",
            input_tokens_in=int(row["input_tokens_in"]) if row["input_tokens_in"] else None,
            input_tokens_kept=int(row["input_tokens_kept"]) if row["input_tokens_kept"] else None,
        )
        for row in rows
    ]
    assert parsed == ledger.records


def test_reset_and_bounded_history() -> None:
    ledger = TokenLedger(llm="gpt-4o", max_records=2)
    _record_some(ledger)
    assert [r.query for r in ledger.records] == ["query 3", "query 4"]
    assert ledger.summary()["calls"] == 5  # totals still cover every call
    ledger.reset()
    assert ledger.records == []
    assert {k: v for k, v in ledger.summary().items() if k in RECORD_FIELDS or k == "calls"} == {
        "calls": 0,
        "candidates": 0,
        "kept": 0,
        "tokens_in": 0,
        "tokens_kept": 0,
        "tokens_saved": 0,
        "percent_saved": 0.0,
        "cost_saved_usd": 0.0,
        "input_tokens_in": None,  # no prompt=: the whole input is not counted
        "input_tokens_kept": None,
    }


def test_concurrent_recording_gives_exact_totals(reference: dict[str, tiktoken.Encoding]) -> None:
    ledger = TokenLedger(llm="gpt-4o", cache_size=16)  # small cache: eviction races too
    n_threads, calls_each = 16, 25
    expected: list[tuple[int, int]] = [(0, 0)] * n_threads
    barrier = threading.Barrier(n_threads)
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            rng = random.Random(t)
            tokens_in = tokens_kept = 0
            batches = []
            for c in range(calls_each):
                cands = [f"thread {t} call {c} doc {j} " + "word " * rng.randint(0, 30) for j in range(8)]
                kept = cands[: rng.randint(0, 8)]
                batches.append((cands, kept))
                tokens_in += ref_count(reference, "o200k_base", cands)
                tokens_kept += ref_count(reference, "o200k_base", kept)
            expected[t] = (tokens_in, tokens_kept)
            barrier.wait()
            for cands, kept in batches:
                ledger.record(f"t{t}", cands, kept)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    summary = ledger.summary()
    assert summary["calls"] == len(ledger.records) == n_threads * calls_each
    assert summary["candidates"] == n_threads * calls_each * 8
    assert summary["tokens_in"] == sum(e[0] for e in expected)
    assert summary["tokens_kept"] == sum(e[1] for e in expected)
    assert sum(r.tokens_in for r in ledger.records) == summary["tokens_in"]
    timestamps = [r.timestamp for r in ledger.records]
    assert timestamps == sorted(timestamps)


# -- dependencies and offline behaviour ------------------------------------------------------------------

_BLOCK_NETWORK = """
import json, os, socket, sys
ATTEMPTS = []
def _blocked(*args, **kwargs):
    ATTEMPTS.append(repr(args[:2]))
    raise OSError("network access blocked by test")
socket.socket.connect = _blocked
socket.socket.connect_ex = _blocked
socket.create_connection = _blocked
socket.getaddrinfo = _blocked
"""


def _run_isolated(code: str, env_updates: dict[str, str | None]) -> dict[str, object]:
    env = dict(os.environ)
    for key, value in env_updates.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    script = _BLOCK_NETWORK + textwrap.dedent(code)
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_import_does_not_pull_torch_or_frameworks() -> None:
    out = _run_isolated(
        """
        import zerank_integrations.accounting
        from zerank_integrations import TokenLedger
        heavy = [m for m in ("torch", "transformers", "langchain_core", "llama_index.core", "chromadb")
                 if m in sys.modules]
        print(json.dumps({"heavy": heavy}))
        """,
        {},
    )
    assert out["heavy"] == []


TEXTS = ["Offline counting works.", "/and never hangs", "Ünïcödé 🚀 <|endoftext|>"]


def test_offline_with_network_blocked_and_empty_cache(tmp_path: Path, reference: dict[str, tiktoken.Encoding]) -> None:
    cache = tmp_path / "empty-cache"
    cache.mkdir()
    out = _run_isolated(
        f"""
        from zerank_integrations import TokenLedger
        from zerank_integrations.accounting import encoding_source
        texts = {TEXTS!r}
        result = {{}}
        for llm in ("gpt-4o", "gpt-3.5-turbo"):
            ledger = TokenLedger(llm=llm)
            saving = ledger.record("q", texts, texts[:1])
            result[ledger.encoding] = [saving.tokens_in, saving.tokens_kept, encoding_source(ledger.encoding)]
        result["env"] = os.environ.get("TIKTOKEN_CACHE_DIR")
        result["cache_files"] = os.listdir(os.environ["TIKTOKEN_CACHE_DIR"])
        result["attempts"] = ATTEMPTS
        print(json.dumps(result))
        """,
        {"TIKTOKEN_CACHE_DIR": str(cache), "DATA_GYM_CACHE_DIR": None},
    )
    assert out["attempts"] == []
    assert out["env"] == str(cache)  # the user's choice is left alone ...
    assert out["cache_files"] == []  # ... and nothing is written into it
    for enc in ("o200k_base", "cl100k_base"):
        tokens_in, tokens_kept, source = out[enc]
        assert tokens_in == ref_count(reference, enc, TEXTS)
        assert tokens_kept == ref_count(reference, enc, TEXTS[:1])
        assert Path(source).is_file() and not source.startswith(str(cache))  # a packaged local copy


def test_user_cache_is_preferred_and_bad_files_are_skipped_not_deleted(tmp_path: Path) -> None:
    import hashlib

    cache = tmp_path / "user-cache"
    cache.mkdir()
    o200k_key = hashlib.sha1(O200K_URL.encode()).hexdigest()
    cl100k_key = hashlib.sha1(CL100K_URL.encode()).hexdigest()
    shutil.copyfile(_static_tiktoken_dir() / o200k_key, cache / o200k_key)
    (cache / cl100k_key).write_bytes(b"not a bpe file\n")
    out = _run_isolated(
        """
        from zerank_integrations.accounting import encoding_source, get_encoding
        get_encoding("o200k_base"); get_encoding("cl100k_base")
        print(json.dumps({"o200k": encoding_source("o200k_base"), "cl100k": encoding_source("cl100k_base"),
                          "attempts": ATTEMPTS}))
        """,
        {"TIKTOKEN_CACHE_DIR": str(cache)},
    )
    assert out["o200k"] == str(cache / o200k_key)
    assert out["cl100k"] != str(cache / cl100k_key) and Path(str(out["cl100k"])).is_file()
    assert (cache / cl100k_key).read_bytes() == b"not a bpe file\n"
    assert out["attempts"] == []


def test_encoding_without_offline_copy_fails_fast_with_clear_error(tmp_path: Path) -> None:
    out = _run_isolated(
        """
        from zerank_integrations import TokenLedger
        try:
            TokenLedger(encoding="r50k_base")
            print(json.dumps({"error": None}))
        except RuntimeError as exc:
            print(json.dumps({"error": str(exc), "attempts": len(ATTEMPTS)}))
        """,
        {"TIKTOKEN_CACHE_DIR": str(tmp_path)},
    )
    assert out["error"] is not None
    assert "r50k_base" in out["error"] and "TIKTOKEN_CACHE_DIR" in out["error"]
    assert out["attempts"] >= 1
