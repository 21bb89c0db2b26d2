"""The int8 CPU path (``quantization="int8"``): scores within a stated bound of float32, weights prepared once and
read back from the cache, one warning and exact float32 when it cannot run, option plumbing, thread leases.

Bounds are measured on these small random checkpoints (see BENCHMARKS.md, "int8 CPU path" for the published
shapes); no timing is asserted here.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

from zerank_integrations import ZerankScorer
from zerank_integrations.options import add_scorer_arguments, scorer_options
from zerank_integrations.scoring import clear_model_cache
from zerank_integrations.scoring.quantization import CACHE_ENV, check_quantization
from zerank_integrations.scoring.threads import THREADS_ENV, available_cores

pytest.importorskip("openvino")
pytest.importorskip("nncf")
pytest.importorskip("torchao")

MAX_DPROB = 0.03  # measured on these tiny random checkpoints: 0.023 (qwen3-reranker); see BENCHMARKS.md


@pytest.fixture
def int8_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "int8-cache"
    monkeypatch.setenv(CACHE_ENV, str(cache))
    clear_model_cache(quantized_only=True)
    yield cache
    clear_model_cache(quantized_only=True)


def _prepared(caplog: pytest.LogCaptureFixture) -> int:
    """How many times the engine prepared (exported or quantized) weights, from its own log lines."""
    return sum("once; cached in" in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize("family", ["cross-encoder", "qwen3-reranker"])
def test_int8_scores_stay_within_the_bound_and_the_cache_is_reused(
    family: str,
    family_checkpoints: dict[str, Path],
    passages: list[str],
    int8_cache: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    checkpoint = str(family_checkpoints[family])
    query = "Which cells respond to the treatment?"
    exact = np.array(ZerankScorer(checkpoint).score(query, passages))
    caplog.set_level(logging.INFO, logger="zerank_integrations.scoring.quantization")
    first = ZerankScorer(checkpoint, quantization="int8")
    assert first.quantization == "int8" and "quantization='int8'" in repr(first)
    quantized = np.array(first.score(query, passages))
    assert _prepared(caplog) == 1
    assert np.abs(quantized - exact).max() <= MAX_DPROB
    assert np.corrcoef(quantized, exact)[0, 1] >= 0.95  # measured 0.968 (cross-encoder): random nets amplify noise
    assert not np.array_equal(quantized, exact)  # int8 really ran
    entries = [p for p in int8_cache.iterdir() if not p.name.startswith(".")]
    assert len(entries) == 1 and (entries[0] / "key.json").is_file()

    clear_model_cache(quantized_only=True)  # a new start: the same checkpoint is read back, not prepared again
    again = ZerankScorer(checkpoint, quantization="int8")
    assert _prepared(caplog) == 1
    assert np.array_equal(np.array(again.score(query, passages)), quantized)
    assert [p for p in int8_cache.iterdir() if not p.name.startswith(".")] == entries


def test_int8_encoder_runs_int8_weights_and_a_pairs_batch_barely_matters(
    family_checkpoints: dict[str, Path], passages: list[str], int8_cache: Path
) -> None:
    import openvino
    import torch

    checkpoint = str(family_checkpoints["cross-encoder"])
    linears = sum(isinstance(m, torch.nn.Linear) for m in ZerankScorer(checkpoint).loaded_model.forward.model.modules())
    scorer = ZerankScorer(checkpoint, quantization="int8")
    encoder = scorer.loaded_model.forward.model
    assert encoder.precision in ("f32", "bf16")  # OpenVINO's default for the ops outside the int8 layers
    prepared = openvino.Core().read_model(str(encoder.path))
    int8 = [
        op
        for op in prepared.get_ops()
        if op.get_type_name() == "Constant" and op.get_output_element_type(0) == openvino.Type.i8
    ]
    assert linears > 0 and len(int8) >= linears  # every linear weight is stored in int8
    query = "Which cells respond to the treatment?"
    together = scorer.score(query, passages, raw=True)
    alone = [scorer.score(query, [passage], raw=True)[0] for passage in passages]
    # activations are quantized per token, not per batch: the company a pair keeps moves it by kernel rounding only
    np.testing.assert_allclose(together, alone, atol=2e-3)


_SCORE_INT8 = textwrap.dedent(
    """
    import os, sys
    from zerank_integrations import ZerankScorer
    print(ZerankScorer(sys.argv[1], quantization="int8").score("q", ["a passage"])[0])
    print(os.environ.get("CI"), os.environ.get("NNCF_CI"))
    """
)


def test_int8_sends_no_openvino_or_nncf_usage_events(family_checkpoints: dict[str, Path], tmp_path: Path) -> None:
    ci_markers = ("CI", "NNCF_CI", "TF_BUILD", "JENKINS_URL")  # what turns their telemetry off on CI machines
    env = {key: value for key, value in os.environ.items() if key not in ci_markers}
    control = tmp_path / "control-home"
    control.mkdir()
    subprocess.run([sys.executable, "-c", "import openvino"], env={**env, "HOME": str(control)}, check=True)
    # openvino-telemetry writes its client id under ~/intel once it has consent to send: a plain import does
    assert (control / "intel").is_dir(), "a plain 'import openvino' no longer records telemetry: revisit this test"
    home = tmp_path / "home"
    home.mkdir()
    env.update(HOME=str(home), ZERANK_INT8_CACHE=str(tmp_path / "cache"), ZERANK_THREADS="1")
    for _ in range(2):  # preparing the int8 model, then a start that reads it from the cache
        done = subprocess.run(
            [sys.executable, "-c", _SCORE_INT8, str(family_checkpoints["cross-encoder"])],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        score, switches = done.stdout.splitlines()
        assert 0.0 < float(score) < 1.0
        assert switches == "None None"  # the switches were set around the imports only
    assert not (home / "intel").exists()


def test_int8_prefix_reuse_matches_full_prompts(
    family_checkpoints: dict[str, Path], passages: list[str], int8_cache: Path
) -> None:
    checkpoint = str(family_checkpoints["qwen3-reranker"])
    query = "a long shared query " * 20
    reused = ZerankScorer(checkpoint, quantization="int8", prefix_reuse=True)
    full = ZerankScorer(checkpoint, quantization="int8", prefix_reuse=False)
    assert reused.loaded_model is full.loaded_model
    with_prefix = reused.score(query, passages[:8], raw=True)
    # the same int8 model either way; the kernels pick their path by matrix shape, so within int8 noise
    np.testing.assert_allclose(with_prefix, full.score(query, passages[:8], raw=True), atol=0.03)
    assert reused.stats.real_tokens < full.stats.real_tokens  # the shared prefix was computed once
    body = reused.loaded_model.forward.body
    kinds = {name: type(module.weight).__name__ for name, module in body.named_modules() if hasattr(module, "weight")}
    down = [name for name in kinds if name.endswith("mlp.down_proj")]
    up = [name for name in kinds if name.endswith("mlp.up_proj")]
    assert down and {kinds[name] for name in down} == {"Parameter"}  # KEEP_FLOAT32: the MLP output stays float32
    assert up and {kinds[name] for name in up} == {"Int8Tensor"}


def test_unusable_cache_falls_back_to_exact_float32_with_one_warning(
    family_checkpoints: dict[str, Path], passages: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(CACHE_ENV, str(blocker / "cache"))
    clear_model_cache(quantized_only=True)
    checkpoint = str(family_checkpoints["cross-encoder"])
    exact = ZerankScorer(checkpoint).score("query", passages[:4])
    clear_model_cache(quantized_only=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scorer = ZerankScorer(checkpoint, quantization="int8")
        ZerankScorer(checkpoint, quantization="int8")
    messages = [str(w.message) for w in caught if "quantization='int8' is not available" in str(w.message)]
    assert len(messages) == 1 and "float32" in messages[0]
    assert scorer.quantization is None
    assert scorer.score("query", passages[:4]) == exact
    clear_model_cache(quantized_only=True)


def test_bad_settings_are_refused_by_name(family_checkpoints: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="quantization must be None or 'int8', got 'int4'"):
        check_quantization("int4")
    with pytest.raises(ValueError, match="quantization must be None or 'int8'"):
        ZerankScorer(str(family_checkpoints["cross-encoder"]), quantization="fp8")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dtype=bfloat16"):
        ZerankScorer(str(family_checkpoints["cross-encoder"]), quantization="int8", dtype="bfloat16")
    with pytest.raises(ValueError, match="threads must be a positive int"):
        ZerankScorer(str(family_checkpoints["cross-encoder"]), threads=0)


def test_cli_and_adapters_take_the_options(family_checkpoints: dict[str, Path], int8_cache: Path) -> None:
    parser = argparse.ArgumentParser()
    add_scorer_arguments(parser)
    args = parser.parse_args(["--quantization", "int8", "--threads", "1"])
    assert scorer_options(args) == {"quantization": "int8", "threads": 1}
    with pytest.raises(SystemExit):
        parser.parse_args(["--quantization", "int4"])
    from zerank_integrations.langchain import ZerankRerank

    rerank = ZerankRerank(model=str(family_checkpoints["cross-encoder"]), quantization="int8", threads=1)
    assert rerank.reranker.quantization == "int8"


_LEASE = textwrap.dedent(
    """
    import sys
    from zerank_integrations.scoring.threads import intra_op_threads
    print(intra_op_threads(), flush=True)
    sys.stdin.readline()  # hold the lease until told to exit
    """
)


def test_two_processes_split_the_cores_instead_of_oversubscribing(tmp_path: Path) -> None:
    env = {**os.environ, "ZERANK_CORE_LEASES": str(tmp_path / "leases")}
    env.pop(THREADS_ENV, None)
    first = subprocess.Popen([sys.executable, "-c", _LEASE], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    second = None
    try:
        assert first.stdout is not None and int(first.stdout.readline()) == available_cores()
        second = subprocess.run([sys.executable, "-c", _LEASE], env=env, input=b"\n", capture_output=True)
        assert int(second.stdout) == 1  # every core is leased: one thread, not a second full set
        explicit = subprocess.run(
            [sys.executable, "-c", _LEASE], env={**env, THREADS_ENV: "3"}, input=b"\n", capture_output=True
        )
        assert int(explicit.stdout) == 3
    finally:
        first.communicate(b"\n", timeout=30)
    after = subprocess.run([sys.executable, "-c", _LEASE], env=env, input=b"\n", capture_output=True)
    assert int(after.stdout) == available_cores()  # leases end with their process


def test_int8_embedder_stays_close_to_float32(passages: list[str], int8_cache: Path) -> None:
    from zerank_integrations.retrieval.embeddings import SentenceTransformerEmbedder

    exact = SentenceTransformerEmbedder().encode(passages)
    embedder = SentenceTransformerEmbedder(quantization="int8")
    assert embedder.get_config()["quantization"] == "int8"
    vectors = embedder.encode(passages)
    assert vectors.shape == exact.shape and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert (vectors * exact).sum(1).min() >= 0.98
    ranking = np.argsort(-(vectors @ exact[0]))
    assert ranking[0] == 0
    alone = np.concatenate([embedder.encode([passage]) for passage in passages])
    np.testing.assert_allclose(vectors, alone, atol=5e-3)  # per-token activation scales: batches barely matter
    with pytest.raises(ValueError, match="quantization must be None or 'int8'"):
        SentenceTransformerEmbedder(quantization="int4")


def test_ingest_and_search_embed_in_int8_when_asked(
    passages: list[str], int8_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from zerank_integrations.cli import main
    from zerank_integrations.retrieval import ChromaStore
    from zerank_integrations.retrieval.embeddings import SentenceTransformerEmbedder

    folder = tmp_path / "docs"
    folder.mkdir()
    for number, text in enumerate(passages[:8]):
        (folder / f"p{number}.txt").write_text(text, encoding="utf-8")
    chroma = tmp_path / "chroma"
    common = ["--chroma-path", str(chroma), "--collection", "int8-docs"]
    assert main(["ingest", str(folder), *common, "--embedding-quantization", "int8"]) == 0
    stored = ChromaStore.open("int8-docs", path=chroma).collection.get(include=["embeddings", "documents"])
    texts, vectors = stored["documents"], np.asarray(stored["embeddings"])
    exact = SentenceTransformerEmbedder().encode(texts)
    int8 = SentenceTransformerEmbedder(quantization="int8").encode(texts)
    np.testing.assert_allclose(vectors, int8, atol=1e-6)  # the int8 engine made the stored vectors
    assert not np.allclose(vectors, exact, atol=1e-4) and (vectors * exact).sum(1).min() >= 0.98
    capsys.readouterr()
    question = passages[3].split("\n")[0]  # a title: its own abstract answers it
    ranked = {}
    for extra in ([], ["--embedding-quantization", "int8"]):
        assert main(["search", question, *common, "--no-rerank", "--json", *extra]) == 0
        ranked[bool(extra)] = [hit["id"].split("#")[0] for hit in json.loads(capsys.readouterr().out)["retrieved"]]
    assert ranked[True][0] == ranked[False][0] == "p3.txt"
    assert main(["ingest", str(folder), *common, "--embedding-quantization", "int4"]) == 2
    assert "--embedding-quantization: invalid choice: 'int4'" in capsys.readouterr().err
