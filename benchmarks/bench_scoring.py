"""Scoring throughput: ZerankScorer vs sentence-transformers CrossEncoder vs the naive recipe, in one run.

Any family: ``--family`` picks the test checkpoint built on the fly (zerank, qwen3-reranker, mxbai-rerank-v2,
cross-encoder); sentence-transformers loads the checkpoint the way users load the published models
(``CrossEncoder(path)``: Transformer + LogitScore, or the sequence classifier).

Each (method, workload) round runs in a fresh subprocess, round-robin across methods, so a noisy machine
penalises every method alike and peak memory is measured per method. Reported: pairs/s, prompt tokens/s,
padding efficiency (real tokens / computed token slots) and peak memory, plus speed ratios.

    python benchmarks/bench_scoring.py                       # CPU, small test checkpoint (built on the fly)
    python benchmarks/bench_scoring.py --model zeroentropy/zerank-2 --device cuda --dtype bfloat16 \
        --workloads gpu --methods ours,st                    # the H100 procedure in BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SCIFACT = REPO.parent / "shared" / "datasets" / "scifact"
METHODS = ("ours", "st", "naive")


# -- workloads ----------------------------------------------------------------------------------------------
def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def build_workload(
    name: str, queries: int, docs_per_query: int, data: Path, tokenizer: Any
) -> list[tuple[str, list[str]]]:
    """(query, documents) groups. Documents: the query's relevant abstracts plus seeded random ones."""
    corpus = {row["_id"]: row["title"] + "\n" + row["text"] for row in _read_jsonl(data / "corpus.jsonl")}
    ids = sorted(corpus)
    claims = _read_jsonl(data / "queries.jsonl")
    qrels: dict[str, list[str]] = {}
    for line in (data / "qrels.tsv").read_text().splitlines()[1:]:
        qid, did, _ = line.split("\t")
        qrels.setdefault(qid, []).append(did)
    rng = random.Random(13)
    groups = []
    if name == "gpu":  # 100 documents of 300-500 prompt tokens per query
        sized = [d for d in ids if 300 <= len(tokenizer(corpus[d])["input_ids"]) + 30 <= 500]
        for claim in claims[:queries]:
            groups.append((claim["text"], [corpus[d] for d in rng.sample(sized, docs_per_query)]))
        return groups
    for claim in claims[:queries]:
        relevant = [corpus[d] for d in qrels.get(claim["_id"], []) if d in corpus]
        others = [corpus[d] for d in rng.sample(ids, docs_per_query)]
        documents = (relevant + others)[:docs_per_query]
        query = claim["text"]
        if name == "long":  # a claim with retrieved context, as agents send: 300+ tokens
            context = [corpus[d] for d in rng.sample(ids, 3)]
            query = query + "\n\nContext:\n" + "\n\n".join(context)
            while len(tokenizer(query)["input_ids"]) < 300:
                query += "\n\n" + corpus[rng.choice(ids)]
        groups.append((query, documents))
    return groups


# -- one measured round (runs in a subprocess) -----------------------------------------------------------------
class RssSampler:
    """Peak resident memory above the pre-run level, sampled every few ms (ru_maxrss would report loading)."""

    def __init__(self) -> None:
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.base = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _rss(self) -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * self.page

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, self._rss())

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def peak_mib(self) -> float:
        return (self.peak - self.base) / 2**20


def run_round(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from transformers import AutoTokenizer

    torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    groups = build_workload(args.workload, args.queries, args.docs, Path(args.data), tokenizer)
    if args.method == "naive":  # one pair per forward: budget the pairs, not the groups
        flat = [(q, d) for q, docs in groups for d in docs][: args.naive_pairs]
        groups = [(q, [d]) for q, d in flat]
    pairs = sum(len(docs) for _, docs in groups)
    cuda = args.device.startswith("cuda")
    counters = {"real": 0, "computed": 0, "forwards": 0}

    if args.method == "ours":
        from zerank_integrations import ZerankScorer

        scorer = ZerankScorer(
            args.model, device=args.device, dtype=args.dtype, max_length=args.max_length, batch_tokens=args.batch_tokens
        )
        assert scorer.family == args.family, f"{args.model} is a {scorer.family} checkpoint, not {args.family}"
        scorer.score(groups[0][0], groups[0][1][:4])

        def work() -> None:
            for query, docs in groups:
                scorer.score(query, docs, raw=True)

        before = scorer.stats
    else:
        hf_model, forward = _baseline(args, tokenizer)

        def count(module: Any, inputs: Any, kwargs: dict[str, Any]) -> None:
            ids = kwargs.get("input_ids") if kwargs.get("input_ids") is not None else inputs[0]
            mask = kwargs.get("attention_mask")
            counters["forwards"] += 1
            counters["computed"] += ids.numel()
            counters["real"] += int(mask.sum()) if mask is not None else ids.numel()

        forward(groups[0][0], groups[0][1][:4])
        hf_model.register_forward_pre_hook(count, with_kwargs=True)

        def work() -> None:
            for query, docs in groups:
                forward(query, docs)

    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    with RssSampler() as rss:
        start, cpu_start = time.perf_counter(), time.process_time()
        work()
        if cuda:
            torch.cuda.synchronize()
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    if args.method == "ours":
        done = scorer.stats - before
        counters = {"real": done.real_tokens, "computed": done.computed_tokens, "forwards": done.forward_passes}
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else rss.peak_mib
    return {"pairs": pairs, "seconds": seconds, "cpu_seconds": cpu_seconds, "peak_mib": peak, **counters}


def _baseline(args: argparse.Namespace, tokenizer: Any) -> tuple[Any, Any]:
    import torch

    dtype = {"auto": None, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[args.dtype]
    if dtype is None:
        dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    if args.method == "st":
        from sentence_transformers import CrossEncoder

        cross_encoder = CrossEncoder(
            args.model, device=args.device, model_kwargs={"dtype": dtype}, max_length=args.max_length
        )

        def forward(query: str, docs: list[str]) -> None:
            cross_encoder.predict(
                [(query, d) for d in docs], batch_size=args.st_batch_size, activation_fn=torch.nn.Identity()
            )

        return cross_encoder[0].model.base_model, forward  # ST calls .forward() directly: hook the body

    from zerank_integrations import ZerankScorer

    # The textbook recipe: the family's prompt, one pair per forward, the model's full head. The prompt's token
    # ids come from the scorer's template (checked against the family's rendered prompt when it loads).
    template = ZerankScorer(args.model, device="cpu", max_length=args.max_length).loaded_model
    if args.family == "cross-encoder":
        from transformers import AutoModelForSequenceClassification

        model = AutoModelForSequenceClassification.from_pretrained(args.model, dtype=dtype).to(args.device).eval()

        @torch.inference_mode()
        def naive(query: str, docs: list[str]) -> None:
            for doc in docs:
                limit = args.max_length or template.default_max_length
                encoded = tokenizer(query, doc, truncation="only_second", max_length=limit, return_tensors="pt")
                model(**encoded.to(args.device)).logits[0].tolist()

        return model.base_model, naive

    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype).to(args.device).eval()
    prompt = template.template
    head_ids = [tokenizer(t, add_special_tokens=False)["input_ids"][0] for t in template.family.head.tokens]

    @torch.inference_mode()
    def naive(query: str, docs: list[str]) -> None:
        for doc in docs:
            q, d = prompt.normalize(query, doc)
            ids = prompt.reference_ids(template.tokens, q, d, prompt.effective_instruction(None)).ids
            logits = model(input_ids=torch.tensor([ids], device=args.device)).logits[0, -1]
            [logits[i].item() for i in head_ids]

    return model.model, naive


# -- orchestration -------------------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model id or directory (default: build the small test checkpoint)")
    parser.add_argument(
        "--family",
        default="zerank",
        choices=["zerank", "qwen3-reranker", "mxbai-rerank-v2", "cross-encoder"],
        help="reranker family (of the test checkpoint; a --model must be of this family)",
    )
    parser.add_argument("--hidden-size", type=int, default=64, help="test checkpoint width (64-256)")
    parser.add_argument("--layers", type=int, default=2, help="test checkpoint depth (2-4)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    parser.add_argument("--workloads", default="short,long")
    parser.add_argument("--methods", default="ours,st,naive")
    parser.add_argument("--queries", type=int, default=10)
    parser.add_argument("--docs", type=int, default=50)
    parser.add_argument("--naive-pairs", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads per run (1 avoids oversubscription on a shared CPU)"
    )
    parser.add_argument("--max-length", type=int, default=None, help="tokens per pair (default: the family's)")
    parser.add_argument("--st-batch-size", type=int, default=32)
    parser.add_argument("--batch-tokens", type=int, default=None, help="ZerankScorer token budget per forward")
    parser.add_argument("--data", default=str(SCIFACT))
    parser.add_argument("--out", help="write the results as JSON here")
    parser.add_argument("--_round", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--method", help=argparse.SUPPRESS)
    parser.add_argument("--workload", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._round:
        print(json.dumps(run_round(args)))
        return 0

    if args.model is None:
        from zerank_integrations.testing import build_test_checkpoint

        folder = Path(tempfile.mkdtemp(prefix="zerank-bench-"))
        args.model = str(
            build_test_checkpoint(folder, family=args.family, hidden_size=args.hidden_size, num_layers=args.layers)
        )
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    methods = args.methods.split(",")
    for workload in args.workloads.split(","):
        results[workload] = {m: [] for m in methods}
        for round_index in range(args.rounds):
            for method in methods if round_index % 2 == 0 else methods[::-1]:
                command = [sys.executable, __file__, "--_round", "--method", method, "--workload", workload]
                keys = ("model", "family", "device", "dtype", "queries", "docs", "naive_pairs", "max_length", "data")
                keys += ("threads",)
                for key in keys:
                    if getattr(args, key) is not None:
                        command += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
                command += ["--st-batch-size", str(args.st_batch_size)]
                if args.batch_tokens:
                    command += ["--batch-tokens", str(args.batch_tokens)]
                env = {
                    **os.environ,
                    "TOKENIZERS_PARALLELISM": "false",
                    "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
                }
                done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
                if done.returncode != 0:
                    print(done.stderr[-3000:], file=sys.stderr)
                    return 1
                results[workload][method].append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(
                    f"{workload:>5} {method:>5} round {round_index}: {results[workload][method][-1]}", file=sys.stderr
                )
    report(results, args)
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "results": results}, indent=1))
    return 0


def report(results: dict[str, dict[str, list[dict[str, Any]]]], args: argparse.Namespace) -> None:
    import torch

    where = (
        torch.cuda.get_device_name(0)
        if args.device.startswith("cuda")
        else f"CPU, {os.cpu_count()} cores, torch {torch.__version__}"
    )
    print(
        f"\nmodel: {args.model} ({args.family})  device: {args.device} ({where})  dtype: {args.dtype}  "
        f"rounds: {args.rounds} (median)\n"
    )
    print("| workload | method | pairs/s | pairs per CPU-s | tokens/s | padding eff. | forwards | peak MiB | ours is |")
    print("|---|---|---|---|---|---|---|---|---|")
    for workload, by_method in results.items():
        rate = {m: statistics.median(r["pairs"] / r["seconds"] for r in runs) for m, runs in by_method.items()}
        for method, runs in by_method.items():
            last = runs[-1]
            per_cpu = statistics.median(r["pairs"] / r["cpu_seconds"] for r in runs)
            tokens = statistics.median(r["real"] / r["seconds"] for r in runs)
            ratio = rate["ours"] / rate[method] if "ours" in rate else float("nan")
            efficiency = last["real"] / max(last["computed"], 1)
            print(
                f"| {workload} | {method} | {rate[method]:.1f} | {per_cpu:.1f} | {tokens:,.0f} | {efficiency:.3f} "
                f"| {last['forwards']} | {max(r['peak_mib'] for r in runs):,.0f} | {ratio:.2f}x |"
            )


if __name__ == "__main__":
    raise SystemExit(main())
