"""Batch reranking on Ray Data, on a real local Ray cluster (one per session, see ``_ray_support``).

Every row is checked against the in-process ``RerankStep`` with a ``TokenLedger`` (scores exactly equal: a
worker runs the same per-query call), and ``eval --engine ray --workers 2`` against ``eval`` without Ray.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
import pytest

from zerank_integrations import TokenLedger, ZerankScorer
from zerank_integrations.cli import DEMO_COLLECTION, main
from zerank_integrations.ray_data import (
    BatchRerankSettings,
    RayRerankStage,
    RerankBatches,
    dataset_savings,
    rerank_dataset,
)
from zerank_integrations.ray_support import RAY_INSTALL_HINT
from zerank_integrations.rerank import RerankStep
from zerank_integrations.selection import SelectionPolicy

POLICY = {"top_n": 3, "score_threshold": 0.05, "max_prompt_tokens": 600}


def _rows(queries: list[str], passages: list[str]) -> list[dict[str, Any]]:
    """Four queries with 6, 5, 0 and 6 candidate passages (one row has none), each passage with an id."""
    sizes = [6, 5, 0, 6]
    rows, start = [], 0
    for k, size in enumerate(sizes):
        docs = passages[start : start + size]
        rows.append({"query": queries[k], "documents": docs, "ids": [f"p{start + i}" for i in range(size)]})
        start += size
    return rows


def test_rows_are_what_the_in_process_step_gives(
    ray_cluster: ModuleType,
    checkpoint_dir: Path,
    scorer: ZerankScorer,
    queries: list[str],
    passages: list[str],
) -> None:
    import ray.data

    rows = _rows(queries, passages)
    dataset = ray.data.from_items(rows, override_num_blocks=4)
    reranked = rerank_dataset(dataset, str(checkpoint_dir), workers=2, batch_size=1, llm="gpt-4o", **POLICY)
    reranked = reranked.materialize()
    got = {row["query"]: row for row in reranked.take_all()}

    ledger = TokenLedger(llm="gpt-4o")
    step = RerankStep(scorer, SelectionPolicy(**POLICY), ledger=ledger)
    assert len(got) == len(rows)
    for row in rows:
        out, expected = got[row["query"]], step.run(row["query"], row["documents"])
        assert list(out["documents"]) == row["documents"] and list(out["ids"]) == row["ids"]  # input columns kept
        assert list(out["ranking"]) == [i for i, _ in expected.ranking]
        assert list(out["scores"]) == [dict(expected.ranking)[i] for i in range(len(row["documents"]))]
        assert list(out["kept_indexes"]) == [i for i, _ in expected.kept]
        assert list(out["kept"]) == [row["documents"][i] for i, _ in expected.kept]
        assert list(out["kept_ids"]) == [row["ids"][i] for i, _ in expected.kept]
        assert list(out["over_budget"]) == expected.over_budget
        savings = expected.savings
        assert (out["n_candidates"], out["n_kept"], out["tokens_in"], out["tokens_kept"], out["tokens_saved"]) == (
            savings.candidates,
            savings.kept,
            savings.tokens_in,
            savings.tokens_kept,
            savings.tokens_saved,
        )
        assert out["cost_saved_usd"] == pytest.approx(savings.cost_saved_usd, rel=1e-12)
    assert sum(len(got[r["query"]]["over_budget"]) for r in rows) > 0  # the token budget binds

    totals, summary = dataset_savings(reranked), ledger.summary()
    for key in ("calls", "candidates", "kept", "tokens_in", "tokens_kept", "tokens_saved", "percent_saved"):
        assert totals[key] == summary[key], key
    assert totals["calls"] == 4 and totals["tokens_saved"] > 0
    assert totals["cost_saved_usd"] == pytest.approx(summary["cost_saved_usd"], rel=1e-12)


def test_eval_on_ray_writes_what_eval_in_process_writes(
    ray_cluster: ModuleType,
    capsys: pytest.CaptureFixture[str],
    med_chroma: Path,
    datasets_dir: Path,
    checkpoint_dir: Path,
    tmp_path: Path,
) -> None:
    args = ["eval", "--beir", datasets_dir / "med", "--collection", DEMO_COLLECTION, "--chroma-path", med_chroma]
    args += ["--model", checkpoint_dir, "--max-queries", "6", "--top-k", "12", "--top-n", "4"]
    args += ["--score-threshold", "0.05", "--max-prompt-tokens", "900"]
    reports = {}
    for name, engine in {"local": [], "ray": ["--engine", "ray", "--workers", "2"]}.items():
        assert main([str(a) for a in [*args, "--out", tmp_path / name, *engine]]) == 0, capsys.readouterr().err
        reports[name] = json.loads((tmp_path / name / "eval.json").read_text())
    local, on_ray = reports["local"], reports["ray"]
    for section in ("retrieval", "rerank", "kept", "tokens"):
        assert on_ray[section] == local[section], section  # exact: the same scores, the same ledger totals
    assert on_ray == local  # and nothing else in the report differs
    assert local["queries"] == 6 and local["tokens"]["calls"] == 6 and local["tokens"]["tokens_saved"] > 0
    assert ray_cluster.is_initialized()  # the CLI used the running cluster and left it running


def test_engine_ray_without_ray_fails_in_one_line(datasets_dir: Path, checkpoint_dir: Path, tmp_path: Path) -> None:
    """A real import failure: ``sys.modules['ray'] = None`` makes every ``import ray`` raise ImportError."""
    argv = ["eval", "--beir", str(datasets_dir / "med"), "--out", str(tmp_path / "out")]
    argv += ["--chroma-path", str(tmp_path / "db"), "--model", str(checkpoint_dir), "--engine", "ray"]
    code = (
        f"import sys\nsys.modules['ray'] = None\nfrom zerank_integrations.cli import main\nsys.exit(main({argv!r}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 1, done.stderr
    assert lines == [
        f"zerank-integrations: error: eval --engine ray needs Ray (ray.data is not installed): {RAY_INSTALL_HINT}"
    ]
    assert not (tmp_path / "db").exists()  # failed before anything was ingested


def test_workers_without_the_ray_engine_is_refused(
    capsys: pytest.CaptureFixture[str], datasets_dir: Path, tmp_path: Path
) -> None:
    args = ["eval", "--beir", datasets_dir / "med", "--out", tmp_path / "out", "--chroma-path", tmp_path / "db"]
    assert main([str(a) for a in [*args, "--workers", "2"]]) == 1
    assert capsys.readouterr().err.strip() == "zerank-integrations: error: --workers needs --engine ray"
    assert not (tmp_path / "db").exists()


def test_options_are_checked_on_the_driver() -> None:
    with pytest.raises(TypeError, match=r"unknown scorer option\(s\) devcie; known: batch_tokens, cache_dir"):
        BatchRerankSettings.from_kwargs({"model": "m", "devcie": "cpu"})
    with pytest.raises(ValueError, match="top_n"):
        BatchRerankSettings(top_n=0)
    with pytest.raises(ValueError, match="score_threshold must be in"):
        BatchRerankSettings(score_threshold=1.5)
    with pytest.raises(ValueError, match="unknown tiktoken encoding 'nope'"):
        BatchRerankSettings(encoding="nope")
    with pytest.raises(ValueError, match="price_per_million_input must be finite"):
        BatchRerankSettings(llm="gpt-4o", price_per_million_input=-1.0)
    with pytest.raises(ValueError, match="workers must be an int >= 1, got 0"):
        rerank_dataset(None, "m", workers=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="workers must be an int >= 1"):
        RayRerankStage("m", workers=0)
    settings = BatchRerankSettings.from_kwargs({"model": "m", "top_n": 2, "llm": "gpt-4o", "device": "cpu"})
    assert settings.scorer_options == {"device": "cpu"} and settings.policy == SelectionPolicy(top_n=2)
    assert BatchRerankSettings.from_kwargs(settings.to_kwargs()) == settings  # what travels to the workers


def test_a_bad_row_is_named(checkpoint_dir: Path) -> None:
    """The callable itself, in process (as a worker runs it), on numpy batches like Ray Data's."""
    rerank = RerankBatches(model=str(checkpoint_dir), top_n=1)
    docs = np.empty(1, dtype=object)
    docs[0] = np.array(["a passage", "another"], dtype=object)
    ids = np.empty(1, dtype=object)
    ids[0] = np.array(["only-one"], dtype=object)
    with pytest.raises(ValueError, match=r"ids has 1 entries for 2 documents \(query 'q'\)"):
        rerank({"query": np.array(["q"], dtype=object), "documents": docs, "ids": ids})
    with pytest.raises(KeyError, match=r"needs a 'documents' column; got columns \['query'\]"):
        rerank({"query": np.array(["q"], dtype=object)})
    not_text = np.empty(1, dtype=object)
    not_text[0] = np.array(["fine", 3], dtype=object)
    with pytest.raises(TypeError, match=r"documents\[1\] of row 0 is int, expected str"):
        rerank({"query": np.array(["q"], dtype=object), "documents": not_text})
    out = rerank({"query": np.array(["q"], dtype=object), "documents": docs})
    assert out["kept"][0] in (["a passage"], ["another"]) and out["n_candidates"].tolist() == [2]
    as_pandas = rerank(pd.DataFrame({"query": ["q"], "documents": [["a passage", "another"]]}))  # batch_format="pandas"
    assert {k: v.tolist() for k, v in as_pandas.items()} == {k: v.tolist() for k, v in out.items()}
    some_ids = pd.DataFrame({"query": ["q", "q"], "documents": [["x", "y"], ["z"]], "ids": [["a", "b"], None]})
    assert rerank(some_ids)["kept_ids"].tolist() in ([["a"], None], [["b"], None])  # a row may come without ids


def test_importing_the_module_imports_no_ray_and_no_torch() -> None:
    code = (
        "import sys, zerank_integrations.ray_data\n"
        "heavy = [m for m in ('ray', 'torch', 'tiktoken', 'pandas', 'pyarrow') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_each_worker_takes_rows(
    ray_cluster: ModuleType, checkpoint_dir: Path, scorer: ZerankScorer, queries: list[str], passages: list[str]
) -> None:
    """Two workers, eight one-row blocks: both workers score rows (told apart by their process ids), and each
    row's scores are the in-process ones, whichever worker took it."""
    import ray.data
    from _ray_support import RerankBatchesWithPid

    context = ray.data.DataContext.get_current()
    previous = context.wait_for_min_actors_s
    context.wait_for_min_actors_s = 120  # both workers are up before the first row is handed out
    rows = [{"query": queries[k], "documents": passages[k : k + 3]} for k in range(8)]
    try:
        reranked = ray.data.from_items(rows, override_num_blocks=8).map_batches(
            RerankBatchesWithPid,
            fn_constructor_kwargs={"model": str(checkpoint_dir)},
            compute=ray.data.ActorPoolStrategy(size=2),
            batch_size=1,
            batch_format="numpy",
        )
        out = reranked.take_all()
    finally:
        context.wait_for_min_actors_s = previous
    taken = Counter(int(row["worker_pid"]) for row in out)
    assert len(out) == 8 and len(taken) == 2, taken  # each of the two workers took rows
    for row in out:
        assert list(row["scores"]) == scorer.score(row["query"], list(row["documents"]))


def test_the_readme_ray_data_example_prints_only_its_results(checkpoint_dir: Path, tmp_path: Path) -> None:
    """The README's Ray Data block, as a user runs it (its own local cluster): its two lines, no Ray line."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    start = readme.index("from zerank_integrations.ray_data import dataset_savings, ray_session, rerank_dataset")
    code = readme[start : readme.index("```", start)].replace(
        '"zeroentropy/zerank-2-reranker"', repr(str(checkpoint_dir))
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env |= {
        "RAY_USAGE_STATS_ENABLED": "0",
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
    }
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert len(lines) == 2, lines
    assert lines[0].startswith("[") and lines[1].startswith("{'calls': 2, 'candidates': 5, 'kept': 4")
