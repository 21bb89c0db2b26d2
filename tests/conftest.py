"""Shared fixtures: a real zerank-shaped checkpoint (random Qwen3 weights, real Qwen3 tokenizer), built once."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from _ray_support import ray_cluster  # noqa: F401 - one Ray cluster per session, for every Ray test module

from zerank_integrations import ZerankScorer
from zerank_integrations.families import FAMILY_NAMES
from zerank_integrations.ray_support import prepare_local_cluster
from zerank_integrations.testing import build_test_checkpoint, find_qwen3_tokenizer

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ZERANK_SHARED_DIR", REPO_ROOT.parent / "shared"))
DATASETS = SHARED / "datasets"

# Tests never reach the network: every model and tokenizer is local.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
prepare_local_cluster()  # before anything imports ray: the tests' Ray clusters bind to loopback only


@pytest.fixture(scope="session")
def qwen3_tokenizer_dir() -> Path:
    return find_qwen3_tokenizer(REPO_ROOT)


@pytest.fixture(scope="session")
def family_checkpoints(tmp_path_factory: pytest.TempPathFactory, qwen3_tokenizer_dir: Path) -> dict[str, Path]:
    """One small random checkpoint per family, each shipping the sentence-transformers files its family's
    published checkpoints ship (so the family is read from the checkpoint, as for the real models)."""
    root = tmp_path_factory.mktemp("families")
    return {name: build_test_checkpoint(root / name, qwen3_tokenizer_dir, family=name) for name in FAMILY_NAMES}


@pytest.fixture(scope="session")
def checkpoint_dir(family_checkpoints: dict[str, Path]) -> Path:
    """A small zerank-shaped checkpoint on disk, loaded by path like ``zeroentropy/zerank-2-reranker``."""
    return family_checkpoints["zerank"]


@pytest.fixture(scope="session")
def datasets_dir() -> Path:
    if not (DATASETS / "scifact" / "corpus.jsonl").is_file():
        pytest.fail(f"shared BEIR collections not found under {DATASETS} (set ZERANK_SHARED_DIR)")
    return DATASETS


@pytest.fixture(scope="session")
def passages(datasets_dir: Path) -> list[str]:
    """The first 24 scifact abstracts (title and text): real passages of every length for scoring tests."""
    with open(datasets_dir / "scifact" / "corpus.jsonl", encoding="utf-8") as handle:
        rows = [json.loads(line) for _, line in zip(range(24), handle, strict=False)]
    return [row["title"] + "\n" + row["text"] for row in rows]


@pytest.fixture(scope="session")
def med_chroma(tmp_path_factory: pytest.TempPathFactory, datasets_dir: Path) -> Path:
    """MED ingested once per test session into the collection `demo` uses (embedding is the slow part)."""
    from zerank_integrations.cli import DEMO_COLLECTION
    from zerank_integrations.retrieval import ChromaStore, load_beir

    path = tmp_path_factory.mktemp("zerank-med-chroma")
    store = ChromaStore.open(DEMO_COLLECTION, path=path, create=True)
    store.upsert(load_beir(datasets_dir / "med").corpus)
    return path


@pytest.fixture(scope="session")
def scorer(checkpoint_dir: Path) -> ZerankScorer:
    """The test checkpoint behind the default settings (the per-process model cache shares its weights)."""
    return ZerankScorer(str(checkpoint_dir))


@pytest.fixture(scope="session")
def queries(datasets_dir: Path) -> list[str]:
    """MED's judged questions, as real queries for end-to-end runs."""
    from zerank_integrations.retrieval import read_queries_jsonl

    return list(read_queries_jsonl(datasets_dir / "med" / "queries.jsonl").values())
