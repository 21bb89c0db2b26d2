"""Settings shared by both adapters (zerank_integrations.selection): validation, scorer options, repr."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _adapter_support import FixedScorer
from langchain_core.documents import BaseDocumentCompressor
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from pydantic import ValidationError

from zerank_integrations import TokenLedger, ZerankScorer
from zerank_integrations import langchain as lc
from zerank_integrations import llama_index as li
from zerank_integrations.scoring import ModelLoadError

ADAPTERS = pytest.mark.parametrize("adapter", [lc.ZerankRerank, li.ZerankRerank], ids=["langchain", "llama_index"])


def test_framework_base_classes() -> None:
    assert issubclass(lc.ZerankRerank, BaseDocumentCompressor)
    assert issubclass(li.ZerankRerank, BaseNodePostprocessor)
    assert li.ZerankRerank.class_name() == "ZerankRerank"


@ADAPTERS
@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"top_n": 0}, ValidationError, "top_n must be >= 1, got 0"),
        ({"top_n": -3}, ValidationError, "top_n must be >= 1, got -3"),
        ({"top_n": True}, TypeError, "top_n must be an int >= 1 or None, got True"),
        ({"top_n": 2.5}, TypeError, "top_n must be an int"),
        ({"score_threshold": 1.5}, ValidationError, "less than or equal to 1"),
        ({"score_threshold": -0.1}, ValidationError, "greater than or equal to 0"),
        ({"score_threshold": True}, TypeError, "score_threshold must be a probability"),
        ({"unknown_option": 1}, ValidationError, "Extra inputs are not permitted"),
        ({"ledger": 3}, TypeError, "ledger must be a TokenLedger"),
        ({"model": "x"}, ValidationError, "pass either `model`"),
        ({"device": "cpu", "max_length": 64}, ValidationError, "scorer options device, max_length only apply"),
    ],
)
def test_invalid_settings_are_refused_at_construction(
    adapter: type, kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    scorer = FixedScorer({"a": 0.5}, name="secret-free")
    with pytest.raises(error, match=message) as caught:
        adapter(scorer=scorer, **kwargs)
    assert "sk-secret" not in str(caught.value)


@ADAPTERS
def test_scorer_must_be_a_reranker(adapter: type) -> None:
    with pytest.raises(TypeError, match=r"scorer must satisfy zerank_integrations.base.Reranker .* got str"):
        adapter(scorer="zeroentropy/zerank-2")


@ADAPTERS
def test_assignment_is_validated_and_scorer_fields_are_frozen(adapter: type) -> None:
    reranker = adapter(scorer=FixedScorer({t: float(i) / 10 for i, t in enumerate("abcd")}), top_n=3)
    with pytest.raises(ValidationError, match="top_n must be >= 1"):
        reranker.top_n = 0
    with pytest.raises(ValidationError, match="frozen"):
        reranker.model = "other"
    reranker.top_n = 1
    assert reranker.rerank_texts("q", ["a", "d", "c"]) == [(1, 0.3)]
    reranker.top_n = None  # keep all, sorted
    assert reranker.rerank_texts("q", ["a", "d", "c"]) == [(1, 0.3), (2, 0.2), (0, 0.0)]


@ADAPTERS
def test_repr_is_readable_and_never_shows_scorer_internals(adapter: type) -> None:
    reranker = adapter(scorer=FixedScorer({}), top_n=4, score_threshold=0.25, ledger=TokenLedger(llm="gpt-4o"))
    text = repr(reranker)
    assert text.startswith("ZerankRerank(model='fixed-scores', scorer=FixedScorer, top_n=4, score_threshold=0.25"), text
    assert text.endswith("ledger=TokenLedger)")
    assert "sk-secret" not in text and "api_key" not in text


def test_scorer_options_are_passed_on(checkpoint_dir: Path) -> None:
    reranker = li.ZerankRerank(
        model=str(checkpoint_dir),
        device="cpu",
        dtype=torch.float32,
        max_length=300,
        batch_tokens=1024,
        prefix_reuse=False,
        local_files_only=True,
    )
    scorer = reranker.reranker
    assert isinstance(scorer, ZerankScorer)
    assert (scorer.max_length, scorer.batch_tokens, scorer.prefix_reuse) == (300, 1024, False)
    assert scorer.dtype == torch.float32 and str(scorer.device) == "cpu"
    assert reranker.dtype == "float32"
    assert "dtype='float32'" in repr(reranker) and "max_length=300" in repr(reranker)


def test_default_model_is_zerank_2(tmp_path: Path) -> None:
    """No model and no scorer means zerank-2 (here: not in an empty cache, so a clear load error)."""
    with pytest.raises(ModelLoadError, match="zeroentropy/zerank-2"):
        lc.ZerankRerank(local_files_only=True, cache_dir=str(tmp_path))


@ADAPTERS
def test_prompt_texts_must_match_the_documents(adapter: type) -> None:
    ledger = TokenLedger(encoding="o200k_base")
    reranker = adapter(scorer=FixedScorer({"a": 0.2, "b": 0.9}), top_n=1, ledger=ledger)
    with pytest.raises(ValueError, match="prompt_texts has 1 entries for 2 documents"):
        reranker.rerank_texts("q", ["a", "b"], prompt_texts=["A"])
    assert reranker.rerank_texts("q", ["a", "b"], prompt_texts=["alpha text", "beta text"]) == [(1, 0.9)]
    assert ledger.records[-1].tokens_kept == ledger.count_tokens(["beta text"])
    assert ledger.summary()["calls"] == 1  # the refused call was not recorded


def test_adapters_do_not_import_torch() -> None:
    """Thin adapters: torch loads only when a ZerankScorer is built from ``model``, never on import."""
    code = (
        "import sys\n"
        "import zerank_integrations.langchain, zerank_integrations.llama_index\n"
        "heavy = [m for m in ('torch', 'transformers', 'tiktoken') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
