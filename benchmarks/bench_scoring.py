"""Scoring throughput: ZerankScorer vs sentence-transformers CrossEncoder vs the naive recipe, in one run.

Any family: ``--family`` picks the test checkpoint built on the fly (zerank, qwen3-reranker, mxbai-rerank-v2,
cross-encoder) at any shape (``--hidden-size --layers --heads --kv-heads --intermediate``: a random checkpoint
of a real model's shape times like the real one); sentence-transformers loads the checkpoint the way users
load the published models (``CrossEncoder(path)``: Transformer + LogitScore, or the sequence classifier).

Each (method, workload) round runs in a fresh subprocess, round-robin across methods, so a noisy machine
penalises every method alike and peak memory is measured per method. Reported: pairs/s, prompt tokens/s,
padding efficiency (real tokens / computed token slots), peak memory, model FLOPs utilisation (the model
FLOPs a method's algorithm needs per second, over a matmul ceiling measured in the same subprocess), speed
ratios, and for prefix reuse its speed-up over plain scoring next to the ratio of tokens (and FLOPs) computed.

Methods: ``ours``; ``plain`` (ours with ``prefix_reuse=False``); ``st``; ``naive`` (one pair per forward,
full vocabulary head); ``prev`` / ``prev-plain``: ours from another source tree (``--prev-src``, e.g. the
previous release unpacked with ``git archive``), to compare versions side by side in one run.

Workloads: ``short`` / ``long`` (scifact claims; with 300+ tokens of retrieved context), ``gpu`` (documents
of 300-500 prompt tokens), ``qN`` (queries of exactly N tokens: ``q16,q300,q1000,q2000``).

    python benchmarks/bench_scoring.py                       # CPU, small test checkpoint (built on the fly)
    python benchmarks/bench_scoring.py --hidden-size 256 --layers 4 --workloads q16,q300,q1000,q2000 \
        --methods ours,plain,prev,prev-plain,st,naive --prev-src /tmp/prev   # the issue #12 sweep
    python benchmarks/bench_scoring.py --model zeroentropy/zerank-2-reranker --device cuda --dtype bfloat16 \
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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SCIFACT = REPO.parent / "shared" / "datasets" / "scifact"
METHODS = ("ours", "plain", "prev", "prev-plain", "st", "naive")
OURS = ("ours", "plain", "prev", "prev-plain")  # ZerankScorer, this tree's or --prev-src's


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
    if name.startswith("q") and name[1:].isdigit():  # queries of exactly N tokens: a claim, then context
        size = int(name[1:])
        for claim in claims[:queries]:
            relevant = [corpus[d] for d in qrels.get(claim["_id"], []) if d in corpus]
            documents = (relevant + [corpus[d] for d in rng.sample(ids, docs_per_query)])[:docs_per_query]
            text = claim["text"]
            while len(tokenizer(text, add_special_tokens=False)["input_ids"]) < size:
                text += "\n\n" + corpus[rng.choice(ids)]
            query = tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"][:size])
            groups.append((query, documents))
        return groups
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

    if args.method in OURS:
        from zerank_integrations import ZerankScorer

        scorer = ZerankScorer(
            args.model,
            device=args.device,
            dtype=args.dtype,
            max_length=args.max_length,
            batch_tokens=args.batch_tokens,
            prefix_reuse="auto" if args.method in ("ours", "prev") else False,
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
    if args.method in OURS:
        done = scorer.stats - before
        counters = {"real": done.real_tokens, "computed": done.computed_tokens, "forwards": done.forward_passes}
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else rss.peak_mib
    ceiling = matmul_ceiling(torch, args.device, dtype_of(torch, args))
    prompt_tokens = prompt_shapes(args, groups)
    return {
        "pairs": pairs,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "peak_mib": peak,
        "ceiling_flops": ceiling,
        "prompts": prompt_tokens,
        **counters,
    }


def dtype_of(torch: Any, args: argparse.Namespace) -> Any:
    dtype = {"auto": None, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[args.dtype]
    return dtype or (torch.bfloat16 if args.device.startswith("cuda") else torch.float32)


def matmul_ceiling(torch: Any, device: str, dtype: Any) -> float:
    """Dense FLOP/s of a (1024 x 1024) @ (1024 x 4096) matmul here, now, with these threads: the MFU denominator."""
    a = torch.randn(1024, 1024, device=device, dtype=dtype)
    b = torch.randn(1024, 4096, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(4):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * 1024 * 1024 * 4096 / best


def prompt_shapes(args: argparse.Namespace, groups: list[tuple[str, list[str]]]) -> list[list[int]]:
    """(query group, shared prefix, rest) token counts of every scored prompt, by the template (for FLOPs)."""
    from zerank_integrations.scoring.loading import load_model

    loaded = load_model(args.model, device="cpu")
    template, tokens = loaded.template, loaded.tokens
    limit = args.max_length or loaded.default_max_length
    shapes = []
    for group, (query, docs) in enumerate(groups):
        q = template.normalize(query, "")[0]
        segment = template.query_segment(tokens, q, template.effective_instruction(None), limit)
        documents = [template.normalize_document(d) for d in docs]
        if hasattr(template, "encode"):
            pairs = template.encode(tokens, [(segment, d) for d in documents], limit)
        else:  # a --prev-src before issue #17: documents tokenized on their own, then assembled
            texts = [template.document_text(d) for d in documents]
            pairs = [template.assemble(segment, ids, limit) for ids in tokens.ids(texts)]
        shapes.extend([group, len(pair.prefix), len(pair.continuation)] for pair in pairs)
    return shapes


def _baseline(args: argparse.Namespace, tokenizer: Any) -> tuple[Any, Any]:
    import torch

    dtype = dtype_of(torch, args)
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
    parser.add_argument("--hidden-size", type=int, default=64, help="test checkpoint width")
    parser.add_argument("--layers", type=int, default=2, help="test checkpoint depth")
    parser.add_argument("--heads", type=int, default=4, help="test checkpoint attention heads")
    parser.add_argument("--kv-heads", type=int, default=2, help="test checkpoint key/value heads (causal families)")
    parser.add_argument("--intermediate", type=int, default=None, help="test checkpoint MLP width (default 2x)")
    parser.add_argument("--prev-src", help="source tree of another version of the package, for prev / prev-plain")
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
            build_test_checkpoint(
                folder,
                family=args.family,
                hidden_size=args.hidden_size,
                num_layers=args.layers,
                num_heads=args.heads,
                num_kv_heads=args.kv_heads,
                intermediate_size=args.intermediate,
            )
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
                if method.startswith("prev"):
                    if not args.prev_src:
                        parser.error(f"method {method} needs --prev-src")
                    env["PYTHONPATH"] = os.pathsep.join(filter(None, [args.prev_src, env.get("PYTHONPATH")]))
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
    from transformers import AutoConfig

    where = (
        torch.cuda.get_device_name(0)
        if args.device.startswith("cuda")
        else f"CPU, {os.cpu_count()} cores, torch {torch.__version__}"
    )
    config = AutoConfig.from_pretrained(args.model)
    parameters, per_pair = model_shape(config)
    causal = args.family != "cross-encoder"
    print(
        f"\nmodel: {args.model} ({args.family}; {parameters / 1e6:.1f}M parameters per token)  device: {args.device} "
        f"({where})  dtype: {args.dtype}  threads: {args.threads}  rounds: {args.rounds} (median)\n"
    )
    print(
        "| workload | method | pairs/s | pairs per CPU-s | tokens/s | padding eff. | forwards | peak MiB | MFU "
        "| ours is |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    notes = []
    for workload, by_method in results.items():
        rate = {m: statistics.median(r["pairs"] / r["seconds"] for r in runs) for m, runs in by_method.items()}
        flops = {}
        for method, runs in by_method.items():
            last = runs[-1]
            shapes = last["prompts"]
            reused = method in OURS and last["real"] < sum(prefix + rest for _, prefix, rest in shapes)
            flops[method] = model_flops(shapes, parameters, per_pair, reused, causal)
            mfu = statistics.median(flops[method] / r["seconds"] / r["ceiling_flops"] for r in runs)
            per_cpu = statistics.median(r["pairs"] / r["cpu_seconds"] for r in runs)
            tokens = statistics.median(r["real"] / r["seconds"] for r in runs)
            ratio = rate["ours"] / rate[method] if "ours" in rate else float("nan")
            efficiency = last["real"] / max(last["computed"], 1)
            print(
                f"| {workload} | {method} | {rate[method]:.1f} | {per_cpu:.1f} | {tokens:,.0f} | {efficiency:.3f} "
                f"| {last['forwards']} | {max(r['peak_mib'] for r in runs):,.0f} | {mfu:.1%} | {ratio:.2f}x |"
            )
        for reuse, plain in (("ours", "plain"), ("prev", "prev-plain")):
            if reuse in by_method and plain in by_method:
                speedup = rate[reuse] / rate[plain]
                token_ratio = by_method[plain][-1]["computed"] / max(by_method[reuse][-1]["computed"], 1)
                flop_ratio = flops[plain] / flops[reuse]
                notes.append(
                    f"{workload}: {reuse} over {plain}: {speedup:.2f}x faster; computes {token_ratio:.2f}x fewer "
                    f"tokens, {flop_ratio:.2f}x fewer FLOPs: {speedup / token_ratio:.0%} of the token ratio, "
                    f"{speedup / flop_ratio:.0%} of the FLOP ratio"
                )
    if notes:
        print("\nprefix reuse:\n" + "\n".join(f"- {note}" for note in notes))


def model_shape(config: Any) -> tuple[int, int]:
    """(parameters each token passes through, attention FLOPs per (token, attended position))."""
    import torch
    from transformers import AutoModel

    with torch.device("meta"):
        model = AutoModel.from_config(config)
    embeddings = sum(p.numel() for n, p in model.named_parameters() if "embed" in n)
    parameters = sum(p.numel() for p in model.parameters()) - embeddings
    heads = int(config.num_attention_heads)
    width = heads * int(getattr(config, "head_dim", None) or config.hidden_size // heads)
    return parameters, 4 * width * int(config.num_hidden_layers)


def model_flops(shapes: Sequence[Sequence[int]], parameters: int, per_pair: int, reused: bool, causal: bool) -> float:
    """FLOPs a method's algorithm needs for these (group, prefix, rest) prompts: 2 per parameter per token,
    ``per_pair`` per (token, attended position); with prefix reuse each group's prefix once."""
    total, seen = 0.0, set()
    for group, prefix, rest in shapes:
        if reused:
            if group not in seen:
                seen.add(group)
                total += 2 * parameters * prefix + per_pair * prefix * (prefix + 1) / 2
            total += 2 * parameters * rest + per_pair * rest * (prefix + (rest + 1) / 2)
        else:
            n = prefix + rest
            total += 2 * parameters * n + per_pair * (n * (n + 1) / 2 if causal else n * n)
    return total


if __name__ == "__main__":
    raise SystemExit(main())
