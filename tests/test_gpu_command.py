"""The GPU command (benchmarks/bench_gpu.py) runs end to end in its reduced mode, so it cannot rot.

Reduced mode is the same code on the small checkpoint, fp32, on the CPU, without the out-of-memory step (a
CPU has no memory cap to set). Timings are not asserted (the machine is shared); the checks are that every
step ran and reported what it measures, and that fp32 fidelity holds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_command_runs_reduced_on_cpu(checkpoint_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, str(REPO / "benchmarks" / "bench_gpu.py"), "--reduced", "--out", str(out)]
    done = subprocess.run(
        [*command, "--small-model", str(checkpoint_dir)], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["mode"] == "reduced" and results["dtype"] == "float32"
    fidelity = results["fidelity"]["small"]
    assert fidelity["pairs"] == 8 + 6 and fidelity["fp32_vs_reference_max_abs"] < 1e-4
    speed = {(row["workload"], row["method"]): row for row in results["speed"]}
    assert set(speed) == {("short", "ours"), ("long", "ours"), ("short", "st"), ("long", "st")}
    for row in speed.values():
        assert row["pairs"] == 8 and row["pairs_per_s"] > 0 and row["tokens_per_s"] > row["pairs_per_s"]
        assert 0 < row["mfu"] < 1 and row["vs_st"] > 0
    # The long query (400 tokens, 8 documents) is read once by ours; sentence-transformers reads it 8 times.
    assert speed[("long", "ours")]["prefix_reuse"] is True
    assert results["oom"] == {"skipped": "needs a CUDA device (a memory cap is set on the GPU)"}
    passes = results["cost_model"]["passes"]
    assert [(p["rows"], p["tokens"]) for p in passes] == [(1, 16), (1, 256), (4, 256), (16, 256)]
    assert all(p["measured_ms"] > 0 and p["estimated_ms"] > 0 for p in passes)
    report = (out / "results.md").read_text()
    assert "| long | ours | 1 | 8 |" in report and "## Out of memory" in report and "skipped" in report
    assert report in done.stdout
