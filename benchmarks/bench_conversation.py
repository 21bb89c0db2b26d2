"""The scorer's score cache on a conversational workload: hit rate and speedup, cache on vs off, one run.

Every judged MED query starts a conversation of four turns, each retrieving passages from a Chroma collection
(all-MiniLM-L6-v2) and reranking them with the same rerank step the integrations run:

1. ``ask``:        the question, top ``k`` retrieved;
2. ``follow-up``:  a follow-up question (the question plus a refinement), top ``k``; it re-retrieves many of
                   turn 1's passages, but a reranker score depends on the query, so they are new pairs;
3. ``more``:       "show me more sources" for the follow-up, top ``2k`` (its first ``k`` were scored in turn 2);
4. ``regenerate``: the user regenerates the first answer: turn 1 again.

Two scorers on the same checkpoint, one with ``cache_size=0`` and one with a cache, run the same turns
interleaved (the order alternates per conversation), so the speedup is a ratio measured side by side; it is
reported in process CPU time (steadier than wall time on a shared machine) and wall time, next to the work
itself (forward passes, computed tokens), which does not depend on the machine. Scores of
both are checked to agree within 1e-4 (a pair scored in another batch differs by float rounding, cache or not;
the largest gap is reported). Random-weight test checkpoint: the timings are real, the ranking is not.

    python benchmarks/bench_conversation.py [--k 25] [--conversations 30] [--hidden 256 --layers 4]
        [--cache-size 20000] [--datasets ../shared/datasets] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from zerank_integrations import ZerankScorer
from zerank_integrations.rerank import RerankStep
from zerank_integrations.retrieval import ChromaStore, load_beir
from zerank_integrations.selection import SelectionPolicy
from zerank_integrations.testing import build_test_checkpoint, find_qwen3_tokenizer

REFINEMENTS = ("in children?", "what are the risks?", "how is it treated?", "in recent studies?")


def conversation(question: str, index: int, k: int) -> list[tuple[str, str, int]]:
    """(turn name, query, depth) of one conversation."""
    follow_up = f"{question} {REFINEMENTS[index % len(REFINEMENTS)]}"
    return [("ask", question, k), ("follow-up", follow_up, k), ("more", follow_up, 2 * k), ("regenerate", question, k)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", type=Path, default=Path(__file__).resolve().parents[2] / "shared/datasets")
    parser.add_argument("--k", type=int, default=25, help="passages per turn (the 'more' turn takes 2k)")
    parser.add_argument("--conversations", type=int, default=30)
    parser.add_argument("--hidden", type=int, default=256, help="test checkpoint width")
    parser.add_argument("--layers", type=int, default=4, help="test checkpoint depth")
    parser.add_argument("--cache-size", type=int, default=20_000)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)  # fewer threads: steadier timings on a shared machine

    collection = load_beir(args.datasets / "med")
    qids = collection.judged_query_ids()[: args.conversations]
    with tempfile.TemporaryDirectory(prefix="zerank-conv-") as tmp:
        checkpoint = build_test_checkpoint(
            Path(tmp) / "model", find_qwen3_tokenizer(), hidden_size=args.hidden, num_layers=args.layers
        )
        store = ChromaStore.open("conversation", path=Path(tmp) / "chroma", create=True)
        store.upsert(collection.corpus)
        plain = ZerankScorer(str(checkpoint), cache_size=0)
        cached = ZerankScorer(str(checkpoint), cache_size=args.cache_size)
        plain.score("warm up", ["the model"])  # first-call costs out of the timings
        cached.score("warm up", ["the model"])
        before = {name: scorer.stats for name, scorer in (("off", plain), ("on", cached))}
        steps = {"off": RerankStep(plain, SelectionPolicy(top_n=5)), "on": RerankStep(cached, SelectionPolicy(top_n=5))}

        seconds: dict[tuple[str, str], float] = defaultdict(float)
        cpu: dict[tuple[str, str], float] = defaultdict(float)
        pairs: dict[str, int] = defaultdict(int)
        overlap: list[float] = []
        max_gap = 0.0
        for number, qid in enumerate(qids):
            turns = conversation(collection.queries[qid], number, args.k)
            retrieved = {(query, depth): [h.content for h in store.search(query, depth)] for _, query, depth in turns}
            first, second = (set(retrieved[(q, d)]) for _, q, d in turns[:2])
            overlap.append(len(first & second) / len(first))
            order = ("off", "on") if number % 2 == 0 else ("on", "off")
            for name, query, depth in turns:
                texts = retrieved[(query, depth)]
                pairs[name] += len(texts)
                results = {}
                for which in order:
                    t0, c0 = time.perf_counter(), time.process_time()
                    results[which] = steps[which].run(query, texts)
                    seconds[(name, which)] += time.perf_counter() - t0
                    cpu[(name, which)] += time.process_time() - c0
                scores = [dict(results[which].ranking) for which in ("off", "on")]
                gap = max(abs(scores[0][i] - scores[1][i]) for i in scores[0])
                max_gap = max(max_gap, gap)
                if gap > 1e-4:  # the core's bound for one pair scored in different batches
                    raise SystemExit(f"cached scores differ from uncached ones by {gap} ({number}, turn {name})")
        after = {"off": plain.stats - before["off"], "on": cached.stats - before["on"]}

    turn_names = [name for name, _, _ in conversation("q", 0, args.k)]
    rows = []
    for name in turn_names:
        off, on = seconds[(name, "off")], seconds[(name, "on")]
        cpu_off, cpu_on = cpu[(name, "off")], cpu[(name, "on")]
        rows.append(
            {
                "turn": name,
                "pairs": pairs[name],
                "off_s": off,
                "on_s": on,
                "cpu_off_s": cpu_off,
                "cpu_on_s": cpu_on,
                "cpu_speedup": cpu_off / cpu_on if cpu_on else None,
            }
        )
    total_off = sum(seconds[(n, "off")] for n in turn_names)
    total_on = sum(seconds[(n, "on")] for n in turn_names)
    cpu_total_off = sum(cpu[(n, "off")] for n in turn_names)
    cpu_total_on = sum(cpu[(n, "on")] for n in turn_names)
    stats = after["on"]
    lookups = stats.cache_hits + stats.cache_misses
    summary = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "checkpoint": f"random Qwen3, hidden {args.hidden}, {args.layers} layers",
        "torch_threads": args.threads or "default",
        "conversations": len(qids),
        "k": args.k,
        "hit_rate": stats.cache_hits / lookups if lookups else 0.0,
        "cache_hits": stats.cache_hits,
        "cache_misses": stats.cache_misses,
        "forward_passes_off": after["off"].forward_passes,
        "forward_passes_on": stats.forward_passes,
        "computed_tokens_off": after["off"].computed_tokens,
        "computed_tokens_on": stats.computed_tokens,
        "total_off_s": total_off,
        "total_on_s": total_on,
        "speedup": total_off / total_on if total_on else None,
        "cpu_total_off_s": cpu_total_off,
        "cpu_total_on_s": cpu_total_on,
        "cpu_speedup": cpu_total_off / cpu_total_on if cpu_total_on else None,
        "follow_up_overlap_with_first_turn": sum(overlap) / len(overlap),
        "max_score_gap_cached_vs_uncached": max_gap,
        "turns": rows,
    }
    print(json.dumps(summary, indent=2))
    print(f"\nmachine: {summary['machine']}; {summary['checkpoint']}; {len(qids)} conversations, k={args.k}")
    print("| turn | pairs | CPU s, cache off | CPU s, cache on | CPU speedup | wall s off / on |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['turn']} | {row['pairs']:,} | {row['cpu_off_s']:.2f} | {row['cpu_on_s']:.2f} "
            f"| {row['cpu_speedup']:.1f}x | {row['off_s']:.1f} / {row['on_s']:.1f} |"
        )
    print(
        f"| all | {sum(pairs.values()):,} | {cpu_total_off:.2f} | {cpu_total_on:.2f} | {summary['cpu_speedup']:.2f}x "
        f"| {total_off:.1f} / {total_on:.1f} ({summary['speedup']:.2f}x) |\n"
        f"hit rate {summary['hit_rate']:.1%} ({stats.cache_hits:,} hits, {stats.cache_misses:,} misses); "
        f"forward passes {summary['forward_passes_off']:,} -> {summary['forward_passes_on']:,}, computed tokens "
        f"{summary['computed_tokens_off']:,} -> {summary['computed_tokens_on']:,}; follow-ups re-retrieve "
        f"{summary['follow_up_overlap_with_first_turn']:.0%} of the first turn's passages; largest score gap "
        f"cached vs uncached {max_gap:.1e} (batch composition, as without a cache)"
    )
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
