"""Smoke tests: both adapter examples run end to end with the small checkpoint and agree with each other."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from _adapter_support import EXAMPLES

RANKED_LINE = re.compile(r"^\s*(\d+)\. \[(\S+)\] p=(\d\.\d{4}) ", re.MULTILINE)
SAVINGS_LINE = re.compile(r"^tokens: (\d+) retrieved -> (\d+) sent to the LLM \((\d+) saved", re.MULTILINE)


def test_both_examples_run_and_rank_identically(checkpoint_dir: Path, datasets_dir: Path) -> None:
    args = ["--model", str(checkpoint_dir), "--data", str(datasets_dir / "med"), "--limit", "60", "--k", "20"]
    args += ["--top-n", "3"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    runs = {
        name: subprocess.Popen(
            [sys.executable, str(EXAMPLES / f"{name}.py"), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for name in ("langchain_rag", "llama_index_query_engine")
    }
    outputs = {}
    for name, process in runs.items():
        stdout, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, f"{name} failed:\n{stdout}\n{stderr[-3000:]}"
        outputs[name] = stdout

    ranked = {name: RANKED_LINE.findall(out) for name, out in outputs.items()}
    savings = {name: SAVINGS_LINE.findall(out) for name, out in outputs.items()}
    for name in outputs:
        assert [int(rank) for rank, _, _ in ranked[name]] == [1, 2, 3], outputs[name]
        assert outputs[name].count("random-weight test model") == 1  # the test checkpoint is flagged, once
        probabilities = [float(p) for _, _, p in ranked[name]]
        assert probabilities == sorted(probabilities, reverse=True)
        [(tokens_in, tokens_kept, saved)] = savings[name]
        assert int(tokens_in) > int(tokens_kept) > 0 and int(saved) == int(tokens_in) - int(tokens_kept)
    # same corpus, embedder, k and reranker: LangChain and LlamaIndex must keep the same documents
    assert ranked["langchain_rag"] == ranked["llama_index_query_engine"]
    assert savings["langchain_rag"] == savings["llama_index_query_engine"]


def test_examples_find_the_packaged_med_copy(datasets_dir: Path) -> None:
    """Without ../shared the examples fall back to the gzip MED copy shipped in the package: same documents."""
    from _adapter_support import load_example, med_passages

    support = load_example("example_support")
    packaged = support.load_passages(support._packaged_med(), 5)
    assert [(d.id, d.content) for d in packaged] == [(d.id, d.content) for d in med_passages(datasets_dir, 5)]
    assert support.default_query(support._packaged_med()) == support.default_query(datasets_dir / "med")
