"""The GPU command: one run that proves the CUDA path and measures it (issue #12).

    python benchmarks/bench_gpu.py --out gpu-results              # a GPU machine: under 10 minutes on one H100
    python benchmarks/bench_gpu.py --reduced --out /tmp/reduced   # anywhere (the test suite runs this on CPU)

It needs torch, transformers, sentence-transformers and this package, the Qwen3 tokenizer
(``$ZERANK_QWEN3_TOKENIZER`` or ``shared/tokenizers/qwen3``, see BENCHMARKS.md) and nothing else: the
documents are the MED abstracts bundled in the package, the models random-weight checkpoints built on the fly
(speed does not depend on the weights). Steps, each recorded in ``results.json`` and ``results.md``:

1. **checkpoints**: the small random test checkpoint (zerank family, 64 wide); in full mode also one of
   zerank-2's exact shape (the Qwen3-4B configuration: 36 layers, 2560 wide, 32 query / 8 key-value heads of
   128), built on the GPU in bf16.
2. **fidelity**: on the small checkpoint, our fp32 scores against the plain recipe (one pair per forward, the
   model's full vocabulary head), and bf16 / fp16 against fp32; on the big one, the ranking bf16 gives
   against fp32 (Spearman, top-5 overlap per query).
3. **speed**: ours against sentence-transformers ``CrossEncoder`` on the same checkpoint, 100 documents of
   300-500 tokens per query, short (MED questions) and long (1,000-token) queries: pairs/s, prompt tokens/s,
   peak memory, model FLOPs utilisation against a matmul ceiling measured in the same run; with several GPUs
   also one replica per GPU (``device="cuda"``).
4. **OOM**: with ``torch.cuda.set_per_process_memory_fraction`` below what a full batch needs, every score
   still comes back (batches are halved and retried), equal to the uncapped run.
5. **cost model**: measured forward-pass times next to the planner's estimate for this device.

``--reduced``: the small checkpoint only, fp32, on the CPU (or ``--device``), fewer documents, no OOM step.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from bench_scoring import model_flops, model_shape  # one FLOP count for both benchmarks (a sibling script)

# zerank-2 is Qwen3-4B with a reranking head trained on top: the shape is what sets its speed.
QWEN3_4B = {
    "hidden_size": 2560,
    "intermediate_size": 9728,
    "num_hidden_layers": 36,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "max_position_embeddings": 40960,
    "rope_theta": 1_000_000.0,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": True,
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


# -- data ----------------------------------------------------------------------------------------------------
def med(name: str) -> list[dict[str, Any]]:
    with gzip.open(resources.files("zerank_integrations") / "data" / "med" / name, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def workloads(tokenizer: Any, documents: int, short: int, long: int, long_tokens: int) -> dict[str, list[Any]]:
    """(query, documents) groups: MED abstracts of 300-500 tokens; MED questions, and 1,000-token queries (a
    question followed by retrieved context, as agents send)."""
    corpus = [row["text"] for row in med("corpus.jsonl.gz")]
    sized = [text for text in corpus if 300 <= len(tokenizer(text)["input_ids"]) <= 500]
    questions = [row["text"] for row in med("queries.jsonl.gz")]
    groups: dict[str, list[Any]] = {"short": [], "long": []}
    for index in range(short):
        start = (index * documents) % max(len(sized) - documents, 1)
        groups["short"].append((questions[index], sized[start : start + documents]))
    for index in range(long):
        context = "\n\n".join(corpus[200 + 7 * index : 200 + 7 * index + 12])
        ids = tokenizer(questions[short + index] + "\n\nContext:\n" + context)["input_ids"][:long_tokens]
        start = (index * 37) % max(len(sized) - documents, 1)
        groups["long"].append((tokenizer.decode(ids), sized[start : start + documents]))
    return groups


# -- checkpoints ---------------------------------------------------------------------------------------------
def build_zerank2_shaped(out: Path, small: Path, device: torch.device, init_std: float, layers: int) -> Path:
    """A random-weight checkpoint of zerank-2's shape, made on ``device`` in bf16 (8 GB of safetensors), with
    the small checkpoint's tokenizer, chat template and sentence-transformers files. ``layers`` < 36 keeps the
    layer shape and cuts the depth (smaller GPUs, quick checks)."""
    from transformers import AutoConfig, Qwen3Config, Qwen3ForCausalLM

    small_config = AutoConfig.from_pretrained(small)
    config = Qwen3Config(
        vocab_size=small_config.vocab_size,
        initializer_range=init_std,
        bos_token_id=small_config.bos_token_id,
        eos_token_id=small_config.eos_token_id,
        pad_token_id=small_config.pad_token_id,
        architectures=["Qwen3ForCausalLM"],
        **{**QWEN3_4B, "num_hidden_layers": layers},
    )
    default = torch.get_default_dtype()
    torch.manual_seed(0)
    try:
        torch.set_default_dtype(torch.bfloat16)
        with torch.device(device):
            model = Qwen3ForCausalLM(config).eval()
    finally:
        torch.set_default_dtype(default)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    del model
    for item in small.iterdir():
        if item.name in ("config.json", "model.safetensors", "generation_config.json") or (out / item.name).exists():
            continue
        if item.is_dir():
            shutil.copytree(item, out / item.name)
        else:
            shutil.copy2(item, out / item.name)
    return out


def release() -> None:
    """Drop every loaded model (the package's process-wide cache included) and give GPU memory back."""
    import gc

    from zerank_integrations.scoring import clear_model_cache

    clear_model_cache()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# -- statistics ----------------------------------------------------------------------------------------------
def ranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    result = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            result[order[k]] = (i + j) / 2
        i = j + 1
    return result


def spearman(a: list[float], b: list[float]) -> float:
    ra, rb = ranks(a), ranks(b)
    mean_a, mean_b = statistics.fmean(ra), statistics.fmean(rb)
    cov = sum((x - mean_a) * (y - mean_b) for x, y in zip(ra, rb, strict=True))
    norm = math.sqrt(sum((x - mean_a) ** 2 for x in ra) * sum((y - mean_b) ** 2 for y in rb))
    return cov / norm if norm else 1.0


def top_overlap(a: list[float], b: list[float], k: int = 5) -> float:
    k = min(k, len(a))
    best = {i for i, _ in sorted(enumerate(a), key=lambda p: -p[1])[:k]}
    return len(best & {i for i, _ in sorted(enumerate(b), key=lambda p: -p[1])[:k]}) / k


# -- timing helpers --------------------------------------------------------------------------------------------
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_mib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def matmul_ceiling(device: torch.device, dtype: torch.dtype, width: int, reduced: bool) -> float:
    """Dense FLOP/s of a large matmul in this dtype on this device: the utilisation denominator."""
    rows, inner, cols = (512, width, 4 * width) if reduced else (8192, width, 4 * width)
    a = torch.randn(rows, inner, device=device, dtype=dtype)
    b = torch.randn(inner, cols, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    synchronize(device)
    best = float("inf")
    for _ in range(10 if not reduced else 5):
        start = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * rows * inner * cols / best


# -- the steps -------------------------------------------------------------------------------------------------
def fidelity_small(path: Path, device: torch.device, reduced: bool, groups: dict[str, list[Any]]) -> dict[str, Any]:
    """Ours fp32 vs the plain recipe; bf16 / fp16 vs fp32 (full mode)."""
    from transformers import AutoModelForCausalLM

    from zerank_integrations import ZerankScorer

    query, documents = groups["short"][0][0], groups["short"][0][1][:12]
    long_query = groups["long"][0][0]
    items = [(query, d) for d in documents] + [(long_query, d) for d in documents[:6]]
    ours = ZerankScorer(str(path), device=device, dtype="float32")
    got = ours.score_pairs(items, raw=True)
    loaded = ours.loaded_model
    template, tokens = loaded.template, loaded.tokens
    reference_model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(device).eval()
    yes = tokens.ids(["Yes"])[0][0]
    expected = []
    with torch.inference_mode():
        for q, d in items:
            nq, nd = template.normalize(q, d)
            ids = template.reference_ids(tokens, nq, nd, template.effective_instruction(None)).ids
            expected.append(float(reference_model(torch.tensor([ids], device=device)).logits[0, -1, yes]))
    del reference_model
    result: dict[str, Any] = {
        "pairs": len(items),
        "fp32_vs_reference_max_abs": max(abs(a - b) for a, b in zip(got, expected, strict=True)),
    }
    for name in () if reduced else ("bfloat16", "float16"):
        half = ZerankScorer(str(path), device=device, dtype=name).score_pairs(items, raw=True)
        result[f"{name}_vs_fp32_max_abs_raw"] = max(abs(a - b) for a, b in zip(half, got, strict=True))
        result[f"{name}_vs_fp32_spearman"] = spearman(half, got)
    release()
    return result


def fidelity_big(path: Path, device: torch.device, groups: dict[str, list[Any]]) -> dict[str, Any]:
    """Ranking agreement of bf16 with fp32 on zerank-2's shape (random weights: rank only, not quality)."""
    from zerank_integrations import ZerankScorer

    cases = [groups["short"][0], groups["long"][0]]
    scores: dict[str, list[list[float]]] = {}
    for name in ("float32", "bfloat16"):
        scorer = ZerankScorer(str(path), device=device, dtype=name)
        scores[name] = [scorer.score(q, docs[:50], raw=True) for q, docs in cases]
        del scorer
        release()
    per_query = []
    for full, half in zip(scores["float32"], scores["bfloat16"], strict=True):
        per_query.append(
            {
                "spearman": spearman(full, half),
                "top5_overlap": top_overlap(full, half),
                "fp32_score_spread": statistics.pstdev(full),
                "max_abs_raw": max(abs(a - b) for a, b in zip(full, half, strict=True)),
            }
        )
    return {"queries": per_query}


def speed(
    path: Path,
    device: torch.device,
    dtype: torch.dtype,
    groups: dict[str, list[Any]],
    args: argparse.Namespace,
    ceiling: float,
) -> list[dict[str, Any]]:
    """Ours vs sentence-transformers, per workload; plus one replica per GPU when there are several."""
    from sentence_transformers import CrossEncoder

    from zerank_integrations import ZerankScorer

    rows: list[dict[str, Any]] = []
    ours = ZerankScorer(str(path), device=device, dtype=dtype)
    parameters, per_pair = model_shape(ours.loaded_model.forward.body.config)
    template, tokens, max_length = ours.loaded_model.template, ours.loaded_model.tokens, ours.max_length

    def prompts(group: int, query: str, docs: list[str]) -> list[tuple[int, int, int]]:
        q = template.normalize(query, "")[0]
        segment = template.query_segment(tokens, q, template.effective_instruction(None), max_length)
        pairs = template.encode(tokens, [(segment, template.normalize_document(d)) for d in docs], max_length)
        return [(group, len(pair.prefix), len(pair.continuation)) for pair in pairs]

    def measure(method: str, run: Any, workload: str, replicas: int = 1, scorer: Any = None) -> None:
        cases = groups[workload]
        run(cases[0][0], cases[0][1][:8])  # warm-up: kernels, allocator
        before = scorer.stats if scorer is not None else None
        peak_reset(device)
        start = time.perf_counter()
        for query, docs in cases:
            run(query, docs)
        synchronize(device)
        seconds = time.perf_counter() - start
        shapes = [shape for group, (query, docs) in enumerate(cases) for shape in prompts(group, query, docs)]
        row: dict[str, Any] = {"workload": workload, "method": method, "replicas": replicas, "pairs": len(shapes)}
        reused = False
        if scorer is not None:
            done = scorer.stats - before
            reused = done.real_tokens < sum(a + b for _, a, b in shapes)  # a prefix was read once, not per document
            row.update(forward_passes=done.forward_passes, prefix_reuse=reused)
        flops = model_flops(shapes, parameters, per_pair, reused, causal=True)
        row.update(
            seconds=seconds,
            pairs_per_s=len(shapes) / seconds,
            tokens_per_s=sum(a + b for _, a, b in shapes) / seconds,
            peak_mib=peak_mib(device),
            mfu=flops / seconds / (ceiling * replicas),
        )
        rows.append(row)
        print(f"speed {workload:>5} {method:>6}: {row['pairs_per_s']:.1f} pairs/s", file=sys.stderr, flush=True)

    for workload in ("short", "long"):
        measure("ours", lambda q, d: ours.score(q, d, raw=True), workload, scorer=ours)
    ours = None
    release()
    cross_encoder = CrossEncoder(str(path), device=str(device), model_kwargs={"dtype": dtype})

    def st_run(query: str, docs: list[str]) -> None:
        cross_encoder.predict(
            [(query, d) for d in docs], batch_size=args.st_batch_size, activation_fn=torch.nn.Identity()
        )

    for workload in ("short", "long"):
        measure("st", st_run, workload)
    cross_encoder = None
    release()
    if device.type == "cuda" and torch.cuda.device_count() > 1 and not args.reduced:
        spread = ZerankScorer(str(path), device="cuda", dtype=dtype)
        for workload in ("short", "long"):
            measure("ours", lambda q, d: spread.score(q, d, raw=True), workload, len(spread.devices), spread)
        spread = None
        release()
    for row in rows:
        st = next(r for r in rows if r["method"] == "st" and r["workload"] == row["workload"])
        row["vs_st"] = row["pairs_per_s"] / st["pairs_per_s"]
    return rows


def out_of_memory(path: Path, device: torch.device, dtype: torch.dtype, groups: dict[str, list[Any]]) -> dict[str, Any]:
    """Cap the process's GPU memory below what a full batch needs: scores still all come back, the same."""
    from zerank_integrations import ZerankScorer

    scorer = ZerankScorer(str(path), device=device, dtype=dtype, prefix_reuse=False)
    query, docs = groups["short"][0]
    peak_reset(device)
    before = scorer.stats
    uncapped = scorer.score(query, docs, raw=True)
    free_run = scorer.stats - before
    needed = torch.cuda.max_memory_allocated(device) - torch.cuda.memory_allocated(device)
    total = torch.cuda.get_device_properties(device).total_memory
    allowed = torch.cuda.memory_allocated(device) + needed // 4  # a quarter of what the full batches took
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(allowed / total, device)
    try:
        before = scorer.stats
        capped = scorer.score(query, docs, raw=True)
        capped_run = scorer.stats - before
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, device)
    del scorer
    release()
    return {
        "pairs": len(docs),
        "batch_memory_mib": needed / 2**20,
        "cap_above_weights_mib": (needed // 4) / 2**20,
        "forward_passes_uncapped": free_run.forward_passes,
        "forward_passes_capped": capped_run.forward_passes,
        "all_scores_returned": len(capped) == len(uncapped) and all(math.isfinite(x) for x in capped),
        "max_abs_raw_vs_uncapped": max(abs(a - b) for a, b in zip(capped, uncapped, strict=True)),
        "ranking_spearman_vs_uncapped": spearman(capped, uncapped),
    }


def cost_model(path: Path, device: torch.device, dtype: torch.dtype, reduced: bool) -> dict[str, Any]:
    """Forward-pass times for a grid of (rows, tokens) against the planner's estimate for this model."""
    import random

    from zerank_integrations import ZerankScorer
    from zerank_integrations.scoring.prompts import Piece

    scorer = ZerankScorer(str(path), device=device, dtype=dtype)
    forward, estimate = scorer.loaded_model.forward, scorer.loaded_model.cost
    rng = random.Random(0)
    small = reduced or device.type == "cpu"
    grid = [(1, 16), (1, 256), (4, 256), (16, 256)] if small else [(1, 16), (1, 512), (8, 512), (32, 512), (64, 512)]
    measured = []
    for rows, length in grid:
        batch = [Piece(tuple(rng.randrange(1000, 100_000) for _ in range(length))) for _ in range(rows)]
        forward.full(batch)
        best = float("inf")
        for _ in range(3):
            synchronize(device)
            start = time.perf_counter()
            forward.full(batch)
            synchronize(device)
            best = min(best, time.perf_counter() - start)
        measured.append(
            {
                "rows": rows,
                "tokens": length,
                "measured_ms": best * 1e3,
                "estimated_ms": estimate.seconds([length] * rows) * 1e3,
            }
        )
    del scorer
    release()
    return {
        "estimate": {
            "call_ms": estimate.call_seconds * 1e3,
            "token_us": estimate.token_seconds * 1e6,
            "overhead_tokens": estimate.overhead_tokens,
        },
        "passes": measured,
    }


# -- report ----------------------------------------------------------------------------------------------------
def markdown(results: dict[str, Any]) -> str:
    lines = [f"# GPU command results ({results['mode']})", "", f"machine: {results['machine']}", ""]
    fid = results["fidelity"]["small"]
    lines += ["## Fidelity", "", "| check | value |", "|---|---|"]
    lines += [f"| small checkpoint: {key} | {value:.3g} |" for key, value in fid.items() if key != "pairs"]
    for index, query in enumerate(results["fidelity"].get("big", {}).get("queries", [])):
        lines.append(
            f"| zerank-2 shape, query {index}: bf16 vs fp32 Spearman / top-5 overlap / max abs raw (fp32 spread) | "
            f"{query['spearman']:.4f} / {query['top5_overlap']:.2f} / {query['max_abs_raw']:.3g} "
            f"({query['fp32_score_spread']:.3g}) |"
        )
    lines += [
        "",
        "## Speed",
        "",
        "| workload | method | replicas | pairs | pairs/s | tokens/s | peak MiB | MFU | vs st |",
    ]
    lines.append("|---|---|---|---|---|---|---|---|---|")
    for row in results["speed"]:
        peak = f"{row['peak_mib']:,.0f}" if row["peak_mib"] is not None else "–"
        lines.append(
            f"| {row['workload']} | {row['method']} | {row['replicas']} | {row['pairs']} | {row['pairs_per_s']:.1f} | "
            f"{row['tokens_per_s']:,.0f} | {peak} | {row['mfu']:.1%} | {row['vs_st']:.2f}x |"
        )
    lines += ["", f"matmul ceiling: {results['matmul_ceiling_tflops']:.3g} TFLOP/s ({results['dtype']})", ""]
    oom = results["oom"]
    lines += ["## Out of memory", ""]
    if oom.get("skipped"):
        lines.append(f"skipped: {oom['skipped']}")
    else:
        lines += ["| check | value |", "|---|---|"] + [f"| {key} | {value} |" for key, value in oom.items()]
    lines += ["", "## Cost model", "", "| rows | tokens | measured ms | estimated ms |", "|---|---|---|---|"]
    lines += [
        f"| {p['rows']} | {p['tokens']} | {p['measured_ms']:.2f} | {p['estimated_ms']:.2f} |"
        for p in results["cost_model"]["passes"]
    ]
    lines += ["", f"total: {results['seconds']:.0f} s", ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for results.json and results.md")
    parser.add_argument("--reduced", action="store_true", help="small checkpoint only, fp32, no OOM step")
    parser.add_argument("--device", default=None, help="default: cuda (full), cpu (reduced)")
    parser.add_argument("--small-model", help="an existing small test checkpoint (default: build one)")
    parser.add_argument("--big-model", help="an existing zerank-2-shaped checkpoint (default: build one)")
    parser.add_argument("--work-dir", help="where built checkpoints go (default: a temporary folder)")
    parser.add_argument("--documents", type=int, default=None, help="documents per query (default 100; reduced 8)")
    parser.add_argument("--queries", type=int, default=None, help="queries per workload (default 3; reduced 1)")
    parser.add_argument("--long-tokens", type=int, default=None, help="tokens of a long query (1000; reduced 400)")
    parser.add_argument("--st-batch-size", type=int, default=32)
    parser.add_argument("--init-std", type=float, default=0.02, help="weight init of the big random checkpoint")
    parser.add_argument("--big-layers", type=int, default=36, help="depth of the zerank-2-shaped model (36)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: 1 on CPU)")
    args = parser.parse_args()
    started = time.perf_counter()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    device = torch.device(args.device or ("cpu" if args.reduced else "cuda"))
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: run with --reduced (CPU) or on a GPU machine", file=sys.stderr)
        return 2
    if args.threads or device.type == "cpu":  # one thread: a shared CPU oversubscribed by two spins 10x slower
        torch.set_num_threads(args.threads or 1)
    dtype = torch.float32 if args.reduced else torch.bfloat16
    documents = args.documents or (8 if args.reduced else 100)
    queries = args.queries or (1 if args.reduced else 3)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="zerank-gpu-"))

    from transformers import AutoTokenizer

    from zerank_integrations.testing import build_test_checkpoint

    small = Path(args.small_model) if args.small_model else build_test_checkpoint(work / "small", family="zerank")
    tokenizer = AutoTokenizer.from_pretrained(small)
    groups = workloads(tokenizer, documents, queries, queries, args.long_tokens or (400 if args.reduced else 1000))
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}"
    if device.type == "cuda":
        machine = f"{torch.cuda.get_device_name(device)} x{torch.cuda.device_count()}, {machine}"
    results: dict[str, Any] = {"mode": "reduced" if args.reduced else "full", "machine": machine}
    results["dtype"] = str(dtype).removeprefix("torch.")
    print("fidelity (small checkpoint)", file=sys.stderr, flush=True)
    results["fidelity"] = {"small": fidelity_small(small, device, args.reduced, groups)}
    if args.reduced:
        speed_model = small
    else:
        big = Path(args.big_model) if args.big_model else None
        if big is None:
            print("building the zerank-2-shaped checkpoint", file=sys.stderr, flush=True)
            big = build_zerank2_shaped(work / "zerank2-shape", small, device, args.init_std, args.big_layers)
        print("fidelity (zerank-2 shape)", file=sys.stderr, flush=True)
        results["fidelity"]["big"] = fidelity_big(big, device, groups)
        speed_model = big
    from transformers import AutoConfig

    width = int(AutoConfig.from_pretrained(speed_model).hidden_size)
    ceiling = matmul_ceiling(device, dtype, width, args.reduced)
    results["matmul_ceiling_tflops"] = ceiling / 1e12
    results["speed"] = speed(speed_model, device, dtype, groups, args, ceiling)
    if args.reduced or device.type != "cuda":
        results["oom"] = {"skipped": "needs a CUDA device (a memory cap is set on the GPU)"}
    else:
        print("out of memory", file=sys.stderr, flush=True)
        results["oom"] = out_of_memory(speed_model, device, dtype, groups)
    results["cost_model"] = cost_model(speed_model, device, dtype, args.reduced)
    results["seconds"] = time.perf_counter() - started
    (out / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    (out / "results.md").write_text(markdown(results), encoding="utf-8")
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
