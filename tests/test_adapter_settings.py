"""Settings shared by both adapters (zerank_integrations.adapter_settings) and the one scorer-option table."""

from __future__ import annotations

import argparse
import inspect
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _adapter_support import FixedScorer
from langchain_core.documents import BaseDocumentCompressor
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from pydantic import SecretStr, ValidationError

from zerank_integrations import TokenLedger, ZerankScorer
from zerank_integrations import langchain as lc
from zerank_integrations import llama_index as li
from zerank_integrations.options import SCORER_OPTIONS, add_scorer_arguments, scorer_options
from zerank_integrations.scoring import ModelLoadError

ADAPTERS = pytest.mark.parametrize("adapter", [lc.ZerankRerank, li.ZerankRerank], ids=["langchain", "llama_index"])


def test_framework_base_classes() -> None:
    assert issubclass(lc.ZerankRerank, BaseDocumentCompressor)
    assert issubclass(li.ZerankRerank, BaseNodePostprocessor)
    assert li.ZerankRerank.class_name() == "ZerankRerank"


# -- the option table is ZerankScorer's signature, and every front end uses it -----------------------------


def test_option_table_equals_the_scorer_signature() -> None:
    parameters = inspect.signature(ZerankScorer.__init__).parameters
    keywords = [name for name, p in parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    assert [option.name for option in SCORER_OPTIONS] == keywords
    assert list(parameters)[:2] == ["self", "model"]
    # the adapters' fields, in both frameworks, are generated from the same table
    for adapter in (lc.ZerankRerank, li.ZerankRerank):
        fields = adapter.model_fields
        for option in SCORER_OPTIONS:
            assert fields[option.name].default is None and fields[option.name].frozen, option.name
            assert fields[option.name].description.startswith(option.help), option.name


def test_cli_flags_come_from_the_table() -> None:
    parser = argparse.ArgumentParser()
    add_scorer_arguments(parser)
    flags = {a.dest for a in parser._actions} - {"help", "model"}
    assert flags == {o.name for o in SCORER_OPTIONS if o.cli}
    assert {o.name for o in SCORER_OPTIONS if not o.cli} == {"token"}  # secrets stay off command lines
    args = parser.parse_args(
        ["--model", "m", "--device", "cpu", "--max-length", "300", "--prefix-reuse", "off", "--local-files-only"]
    )
    assert scorer_options(args) == {"device": "cpu", "max_length": 300, "prefix_reuse": False, "local_files_only": True}
    assert scorer_options(parser.parse_args([])) == {}  # nothing given: the scorer's own defaults
    with pytest.raises(SystemExit):
        parser.parse_args(["--max-length", "0"])


# -- validation ------------------------------------------------------------------------------------------


@ADAPTERS
@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"top_n": 0}, ValidationError, "top_n must be >= 1, got 0"),
        ({"top_n": -3}, ValidationError, "top_n must be >= 1, got -3"),
        ({"top_n": True}, TypeError, "top_n must be an int >= 1 or None, got True"),
        ({"top_n": 2.5}, TypeError, "top_n must be an int"),
        ({"score_threshold": 1.5}, ValidationError, r"score_threshold must be in \[0, 1\], got 1.5"),
        ({"score_threshold": -0.1}, ValidationError, r"score_threshold must be in \[0, 1\], got -0.1"),
        ({"score_threshold": float("nan")}, ValidationError, r"score_threshold must be in \[0, 1\], got nan"),
        ({"score_threshold": True}, TypeError, "score_threshold must be a probability"),
        ({"max_prompt_tokens": 0}, ValidationError, "max_prompt_tokens must be >= 1, got 0"),
        ({"max_prompt_tokens": 2.0}, TypeError, "max_prompt_tokens must be an int >= 1 or None, got 2.0"),
        ({"instruction": 3}, TypeError, "instruction must be a string or None, got int"),
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
    with pytest.raises(ValidationError, match="frozen"):
        reranker.device = "cpu"
    reranker.top_n = 1
    assert reranker.rerank_texts("q", ["a", "d", "c"]).kept == [(1, 0.3)]
    reranker.top_n = None  # keep all, sorted
    assert reranker.rerank_texts("q", ["a", "d", "c"]).kept == [(1, 0.3), (2, 0.2), (0, 0.0)]
    reranker.score_threshold = 0.2  # reassigned policies take effect on the next call
    assert reranker.rerank_texts("q", ["a", "d", "c"]).kept == [(1, 0.3), (2, 0.2)]
    reranker.instruction = "   "
    assert reranker.instruction is None  # blank means none


@ADAPTERS
def test_repr_is_readable_and_never_shows_scorer_internals(adapter: type) -> None:
    reranker = adapter(
        scorer=FixedScorer({}), top_n=4, score_threshold=0.25, max_prompt_tokens=900, ledger=TokenLedger(llm="gpt-4o")
    )
    text = repr(reranker)
    assert text.startswith(
        "ZerankRerank(model='fixed-scores', scorer=FixedScorer, top_n=4, score_threshold=0.25, max_prompt_tokens=900"
    ), text
    assert text.endswith("ledger=TokenLedger)")
    assert "sk-secret" not in text and "api_key" not in text


def test_scorer_options_are_passed_on(checkpoint_dir: Path) -> None:
    reranker = li.ZerankRerank(
        model=str(checkpoint_dir),
        device=torch.device("cpu"),
        dtype=torch.float32,
        max_length=300,
        batch_tokens=1024,
        prefix_reuse=False,
        local_files_only=True,
        token="hf_secret_value",
    )
    scorer = reranker.reranker
    assert isinstance(scorer, ZerankScorer)
    assert (scorer.max_length, scorer.batch_tokens, scorer.prefix_reuse) == (300, 1024, False)
    assert scorer.dtype == torch.float32 and str(scorer.device) == "cpu"
    assert reranker.dtype == "float32" and reranker.device == "cpu"
    assert isinstance(reranker.token, SecretStr)
    text = repr(reranker)
    assert "dtype='float32'" in text and "max_length=300" in text
    assert "hf_secret_value" not in text and "token=" not in text
    assert "hf_secret_value" not in str(reranker.to_dict())


def test_default_model_is_zerank_2(tmp_path: Path) -> None:
    """No model and no scorer means zerank-2 (here: not in an empty cache, so a clear load error)."""
    with pytest.raises(ModelLoadError, match="zeroentropy/zerank-2"):
        lc.ZerankRerank(local_files_only=True, cache_dir=str(tmp_path))


@ADAPTERS
def test_prompt_must_match_the_documents(adapter: type) -> None:
    ledger = TokenLedger(encoding="o200k_base")
    reranker = adapter(scorer=FixedScorer({"a": 0.2, "b": 0.9}), top_n=1, ledger=ledger)
    with pytest.raises(ValueError, match="prompt has 1 entries for 2 documents"):
        reranker.rerank_texts("q", ["a", "b"], prompt=["A"])
    assert reranker.rerank_texts("q", ["a", "b"], prompt=["alpha text", "beta text"]).kept == [(1, 0.9)]
    assert ledger.records[-1].tokens_kept == ledger.count_tokens(["beta text"])
    assert ledger.summary()["calls"] == 1  # the refused call was not recorded


def test_adapters_do_not_import_torch_tiktoken_or_chromadb() -> None:
    """Thin adapters: torch loads only when a ZerankScorer is built from ``model``, never on import."""
    code = (
        "import sys\n"
        "import zerank_integrations.langchain, zerank_integrations.llama_index\n"
        "heavy = [m for m in ('torch', 'transformers', 'tiktoken', 'chromadb') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
