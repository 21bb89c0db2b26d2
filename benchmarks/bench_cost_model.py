"""Does the planner's cost model hold across model sizes? Measured forward passes against its estimate.

For each model shape (random checkpoints: a random checkpoint of a real model's shape times like the real
one), times ``forward.full`` on a grid of (rows, tokens), fits ``call + token x slots + context x attended
pairs`` by least squares, and prints the fit next to ``LoadedModel.cost`` (estimated from the shape and the
device, no timing). Also: how many passes the planner makes for 20 scifact-sized pairs with the estimate,
and with the former fixed 32-token overhead.

    python benchmarks/bench_cost_model.py                     # CPU, 1 thread, five shapes (~3 minutes)
    python benchmarks/bench_cost_model.py --shapes b384x6 --device cuda
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from zerank_integrations import ZerankScorer
from zerank_integrations.scoring.batching import CostModel, padded_slots, plan_batches
from zerank_integrations.scoring.prompts import Piece
from zerank_integrations.testing import build_test_checkpoint

# name: (family, hidden, layers, heads, kv heads, MLP width); b384x6 is ms-marco-MiniLM-L6's shape, q1024x4
# four layers of Qwen3-0.6B's width (head size 128).
SHAPES = {
    "q64x2": ("zerank", 64, 2, 4, 2, None),
    "b64x2": ("cross-encoder", 64, 2, 4, 4, None),
    "q256x4": ("zerank", 256, 4, 4, 2, None),
    "b384x6": ("cross-encoder", 384, 6, 12, 12, 1536),
    "q1024x4": ("qwen3-reranker", 1024, 4, 8, 4, 3072),
}
GRID = [(1, 8), (1, 64), (4, 32), (1, 256), (8, 64), (2, 256), (16, 64), (4, 256), (1, 480), (8, 256), (16, 128)]


def measure(scorer: ZerankScorer, rows: int, length: int, rng: random.Random, repeats: int) -> float:
    forward = scorer.loaded_model.forward
    typed = scorer.loaded_model.template.query_type is not None
    batch = [Piece(tuple(rng.randrange(1000, 20_000) for _ in range(length)), (0,) * length if typed else None)] * rows
    forward.full(batch)
    best = float("inf")
    for _ in range(repeats):
        if scorer.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        forward.full(batch)
        if scorer.device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default=",".join(SHAPES))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--work-dir", help="where the checkpoints go (default: a temporary folder)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="zerank-cost-"))
    rng = random.Random(0)
    documents = [rng.randint(150, 480) for _ in range(20)]  # prompt lengths of 20 scifact abstracts
    print(
        "| shape | fixed ms (fit / est.) | µs per token (fit / est.) | ns per attended pair (fit / est.) "
        "| fixed cost in tokens (fit / est.) | passes for 20 pairs (est. / old 32-token) |"
    )
    print("|---|---|---|---|---|---|")
    for name in args.shapes.split(","):
        family, hidden, layers, heads, kv_heads, intermediate = SHAPES[name]
        path = work / name
        if not (path / "config.json").is_file():  # a hub-cache layout returns its snapshot folder
            path = build_test_checkpoint(
                path,
                family=family,
                hidden_size=hidden,
                num_layers=layers,
                num_heads=heads,
                num_kv_heads=kv_heads,
                intermediate_size=intermediate,
            )
        scorer = ZerankScorer(str(path), device=args.device)
        estimate = scorer.loaded_model.cost
        samples = [(r, n, measure(scorer, r, n, rng, args.repeats)) for r, n in GRID]
        design = np.array([[1.0, r * n, r * estimate.attended(n)] for r, n, _ in samples])
        seconds = np.array([t for _, _, t in samples])
        weights = 1 / seconds  # relative error: small and large passes count alike
        (call, token, context), *_ = np.linalg.lstsq(design * weights[:, None], seconds * weights, rcond=None)
        fitted = CostModel(call_seconds=call, token_seconds=token, context_seconds=context, causal=estimate.causal)
        passes = len(plan_batches(documents, scorer.batch_tokens, cost=estimate))
        old = plan_batches(documents, scorer.batch_tokens, cost=CostModel.in_tokens(32))
        padding = sum(padded_slots(documents, b) for b in old) - sum(documents)
        print(
            f"| {name} | {call * 1e3:.2f} / {estimate.call_seconds * 1e3:.2f} | {token * 1e6:.2f} / "
            f"{estimate.token_seconds * 1e6:.2f} | {context * 1e9:.1f} / {estimate.context_seconds * 1e9:.1f} | "
            f"{fitted.overhead_tokens:.0f} / {estimate.overhead_tokens:.0f} | {passes} / {len(old)} "
            f"(old padding {padding}) |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
