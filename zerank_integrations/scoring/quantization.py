"""The opt-in int8 CPU path (``quantization="int8"``): weights quantized once, cached, reused at every start.

Two engines, each chosen by measurement on this library's own shapes (BENCHMARKS.md, "int8 CPU path"):

- **Encoders** (cross-encoders, the embedder): OpenVINO. The model is exported once with ``torch.onnx``,
  read by OpenVINO, and its linear weights compressed to int8 per output channel by NNCF
  (``compress_weights``, no calibration data); at run time OpenVINO's CPU plugin quantizes each token's
  activations per group of ``DYNAMIC_GROUP`` channels and runs the linear layers on int8 (VNNI) kernels, the rest
  in its default precision (bf16 on CPUs with native bf16, else f32). Encoders are bidirectional, so nothing is
  lost by leaving torch: batches are the same length-sorted, token-budget, right-padded rows. Measured 1.2-1.3x
  faster than ONNX Runtime's dynamic int8 on the same export, drifting less on the trained encoder.
- **Causal LMs** (zerank, Qwen3-Reranker, mxbai): torchao's int8 dynamic-activation int8-weight tensors
  (``Int8DynamicActivationInt8WeightConfig``: per-row activations, per-channel weights) replace the body's
  linear weights in place (the MLP's ``down_proj`` stays float32, see ``KEEP_FLOAT32``), so every torch code
  path stays: the ``"zerank"`` attention, prefix reuse, the single head row (kept in float32: no vocabulary
  head).

What is prepared is written once per checkpoint and engine version into ``zerank-int8/`` beside the Hugging Face
cache (``$ZERANK_INT8_CACHE`` overrides), keyed by the checkpoint's weight files (the hub's content hashes, or a
local file's size and modification time) and the engine versions, so a second start reads it back instead of
quantizing again. A checkpoint the engine cannot handle is scored in float32 after one warning.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import os
import sys
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from zerank_integrations.scoring.threads import intra_op_threads

logger = logging.getLogger(__name__)

Quantization = Literal["int8"]
QUANTIZATIONS: tuple[str, ...] = ("int8",)
CACHE_ENV = "ZERANK_INT8_CACHE"
RECIPE_VERSION = 3  # bump when what is written changes: old entries are then never read
_CACHE_FOLDER = "zerank-int8"
_INSTALL = "pip install 'zerank-integrations[int8]'"
_WARNED: set[str] = set()
_WARNED_LOCK = threading.Lock()


class QuantizationUnavailable(RuntimeError):
    """The engine cannot prepare this checkpoint: the caller scores it in float32 instead."""


def check_quantization(quantization: object) -> Quantization | None:
    """``None`` (float32, the exact default) or ``"int8"``; anything else is refused by name."""
    if quantization is None or quantization == "none":
        return None
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be None or 'int8', got {quantization!r}")
    return "int8"


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """``$ZERANK_INT8_CACHE``, else ``zerank-int8/`` beside the models: in ``cache_dir`` when one is given, else
    in ``$HF_HOME`` next to the hub cache."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    if cache_dir is not None:
        return Path(cache_dir).expanduser() / _CACHE_FOLDER
    from huggingface_hub import constants

    return Path(constants.HF_HOME).expanduser() / _CACHE_FOLDER


def engine_versions(engine: str) -> dict[str, str]:
    """The versions whose change invalidates what the engine wrote."""
    versions = {"recipe": str(RECIPE_VERSION), "torch": torch.__version__.split("+")[0]}
    if engine == "openvino":
        openvino = _import_without_telemetry("openvino")
        versions["openvino"] = openvino.get_version()
        versions["nncf"] = _installed_version("nncf")  # not imported: a cached model does not need it
    else:
        import torchao

        versions["torchao"] = torchao.__version__
    return versions


def _installed_version(distribution: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "not installed"


def checkpoint_fingerprint(folder: Path) -> dict[str, str]:
    """Each weight file's identity: the hub's content hash (a snapshot file links to ``blobs/<sha256>``), else
    its size and modification time (a rewritten local checkpoint gets a new entry)."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise QuantizationUnavailable(f"no safetensors weights in {folder}")
    identity = {}
    for path in files:
        target = path.resolve()
        if target.parent.name == "blobs":
            identity[path.name] = target.name
        else:
            stat = target.stat()
            identity[path.name] = f"{target}:{stat.st_size}:{stat.st_mtime_ns}"
    return identity


@dataclass(frozen=True)
class CacheEntry:
    """One prepared checkpoint: ``folder`` holds the engine's files and ``key.json`` saying what they are."""

    folder: Path
    key: dict[str, Any]

    @classmethod
    def of(cls, root: Path, checkpoint: Path, engine: str, what: str) -> CacheEntry:
        key = {
            "what": what,
            "engine": engine,
            "versions": engine_versions(engine),
            "weights": checkpoint_fingerprint(checkpoint),
        }
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
        return cls(root / f"{engine}-{digest}", key)

    def ready(self, filename: str) -> Path | None:
        path = self.folder / filename
        return path if path.is_file() and (self.folder / "key.json").is_file() else None

    def publish(self, filename: str, write: Any) -> Path:
        """Write ``filename`` through ``write(path)`` into a private folder, then move it in place whole: two
        processes preparing the same checkpoint never read half a file."""
        import shutil
        import tempfile

        self.folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.folder.parent))
        try:
            write(staging / filename)
            (staging / "key.json").write_text(json.dumps(self.key, indent=1, sort_keys=True))
            try:
                staging.rename(self.folder)
            except OSError:  # another process published it first: theirs is the same
                if self.ready(filename) is None:
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return self.folder / filename


def warn_fallback(name: str, reason: str) -> None:
    """Say once per checkpoint that int8 was asked for and float32 is what runs."""
    with _WARNED_LOCK:
        if name in _WARNED:
            return
        _WARNED.add(name)
    warnings.warn(
        f"quantization='int8' is not available for model {name!r} ({reason}); scoring it in float32 instead",
        UserWarning,
        stacklevel=2,
    )


# -- encoders: OpenVINO ---------------------------------------------------------------------------------------
#: Activations are quantized at run time per group of this many channels of one token (OpenVINO's CPU dynamic
#: quantization), so a token's int8 scale does not depend on the other rows of its batch (ONNX Runtime's dynamic
#: int8 takes one scale per batch). 64 measured as fast as 128 and drifting least of 32/64/128 (BENCHMARKS.md).
DYNAMIC_GROUP = 64


class OpenVinoEncoder(torch.nn.Module):
    """A prepared encoder run by OpenVINO, called like the transformers model it replaces: keyword tensors in, an
    object with the output (``logits`` or ``last_hidden_state``) as a torch tensor out."""

    def __init__(self, path: Path, output: str, threads: int | None = None) -> None:
        super().__init__()
        openvino = _import_without_telemetry("openvino")

        config = {
            "INFERENCE_NUM_THREADS": intra_op_threads(threads),
            "NUM_STREAMS": 1,
            "PERFORMANCE_HINT": "LATENCY",
            # pinned threads of two processes can land on the same cores; the core leases share them instead
            "ENABLE_CPU_PINNING": False,
            "DYNAMIC_QUANTIZATION_GROUP_SIZE": DYNAMIC_GROUP,
        }
        self.compiled = openvino.Core().compile_model(str(path), "CPU", config)
        self.input_names = tuple(port.any_name for port in self.compiled.inputs)
        #: what the ops outside the int8 linear layers compute in: OpenVINO's default, bf16 where the CPU has
        #: native bf16 (AVX512-BF16, AMX), else f32
        self.precision = self.compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
        logger.info("int8 OpenVINO model %s: linear layers int8, other ops %s", path.parent.name, self.precision)
        self.output = output
        self.path = path

    def forward(self, **inputs: torch.Tensor) -> Any:
        feed = {name: inputs[name].cpu().numpy() for name in self.input_names if name in inputs}
        if "token_type_ids" in self.input_names and "token_type_ids" not in feed:
            feed["token_type_ids"] = torch.zeros_like(inputs["input_ids"]).numpy()
        request = self.compiled.create_infer_request()  # one per call: a request is not shared between threads
        values = request.infer(feed)[self.compiled.output(self.output)]
        return _Output(**{self.output: torch.from_numpy(values.copy())})


@dataclass
class _Output:
    logits: torch.Tensor | None = None
    last_hidden_state: torch.Tensor | None = None


def int8_openvino(
    model: torch.nn.Module,
    inputs: tuple[str, ...],
    output: str,
    checkpoint: Path,
    root: Path,
    threads: int | None = None,
) -> OpenVinoEncoder:
    """``model`` (a transformers encoder) as an int8 OpenVINO model: exported, converted and its linear weights
    compressed to int8 on first use, read from the cache afterwards."""
    try:
        openvino = _import_without_telemetry("openvino")
    except ImportError as error:
        raise QuantizationUnavailable(f"openvino is not installed: {_INSTALL}") from error
    entry = CacheEntry.of(root, checkpoint, "openvino", f"{type(model).__name__}:{output}:{','.join(inputs)}")
    path = entry.ready("model.xml")
    if path is None:

        def write(target: Path) -> None:
            try:
                nncf = _import_without_telemetry("nncf")
            except ImportError as error:
                raise QuantizationUnavailable(f"nncf is not installed: {_INSTALL}") from error
            exported = target.with_name("model.fp32.onnx")
            _export(model, inputs, output, exported)
            nncf_logger = logging.getLogger("nncf")
            level = nncf_logger.level
            nncf_logger.setLevel(logging.ERROR)  # its per-layer tables are not the user's business
            try:  # its progress bar goes to stderr, never into a command's stdout (``search --json``)
                with contextlib.redirect_stdout(sys.stderr):
                    compressed = nncf.compress_weights(
                        # read_model, not convert_model: the converter sends usage events unless opted out
                        openvino.Core().read_model(str(exported)),
                        mode=nncf.CompressWeightsMode.INT8_SYM,
                    )
            finally:
                nncf_logger.setLevel(level)
            openvino.save_model(compressed, str(target), compress_to_fp16=False)
            exported.unlink()
            for extra in target.parent.glob("*.data"):  # external data of the float32 export
                extra.unlink()

        logger.info("preparing the int8 OpenVINO model of %s (once; cached in %s)", checkpoint, entry.folder)
        try:
            path = entry.publish("model.xml", write)
        except (QuantizationUnavailable, OSError):
            raise
        except Exception as error:  # the exporter's and converter's failures are many and unlisted
            raise QuantizationUnavailable(f"export to OpenVINO failed: {type(error).__name__}: {error}") from error
    try:
        return OpenVinoEncoder(path, output, threads)
    except RuntimeError as error:  # OpenVINO's own errors, e.g. a CPU plugin without one of the settings
        raise QuantizationUnavailable(f"OpenVINO cannot compile the int8 model: {error}") from error


_IMPORT_LOCK = threading.Lock()
#: What OpenVINO's and NNCF's usage telemetry read, once, when they are imported: with these set they send
#: nothing (``CI=true``: openvino-telemetry's "running in CI"; ``NNCF_CI``: NNCF's own switch).
_NO_TELEMETRY = {"CI": "true", "NNCF_CI": "1"}


def _import_without_telemetry(name: str) -> Any:
    """Import ``openvino`` or ``nncf`` with their usage events off.

    Both send anonymous usage events to Google Analytics by default (``import openvino`` sends one; so does each
    NNCF call) unless the user opted out with OpenVINO's ``opt_in_out --opt_out``. A user who asked this library
    for int8 scoring did not ask for that, so the switches they honour are set around the import, and only
    then. A process that imported them itself keeps its own choice.
    """
    import importlib

    with _IMPORT_LOCK:
        if name not in sys.modules:
            previous = {key: os.environ.get(key) for key in _NO_TELEMETRY}
            os.environ.update(_NO_TELEMETRY)
            try:
                importlib.import_module(name)
            finally:
                for key, value in previous.items():
                    if value is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = value
        return sys.modules[name]


def _export(model: torch.nn.Module, inputs: tuple[str, ...], output: str, path: Path) -> None:
    """Export with the TorchScript exporter (dynamic batch and length axes); its deprecation noise is hushed.

    A copy with eager attention is exported (plain MatMul/Softmax, without the ``sdpa`` export's masking guards);
    the caller's model is left as it is.
    """
    model = copy.deepcopy(model)
    with contextlib.suppress(AttributeError, ValueError):  # a model without that choice is exported as it is
        model.set_attn_implementation("eager")
    example = {name: torch.ones((2, 8), dtype=torch.long) for name in inputs}
    if "token_type_ids" in example:
        example["token_type_ids"] = torch.zeros((2, 8), dtype=torch.long)

    class _Named(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, *args: torch.Tensor) -> torch.Tensor:
            return getattr(self.inner(**dict(zip(inputs, args, strict=True))), output)

    axes = {name: {0: "batch", 1: "length"} for name in inputs}
    axes[output] = {0: "batch"} if output == "logits" else {0: "batch", 1: "length"}
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _Named().eval(),
            tuple(example[name] for name in inputs),
            str(path),
            input_names=list(inputs),
            output_names=[output],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )


# -- causal LMs: torchao ------------------------------------------------------------------------------------
_WEIGHTS_FILE = "linear-int8.safetensors"
#: Linear layers left in float32: the MLP's output projection reads the gated product, whose outlier channels
#: per-token int8 clips worst; keeping it halves the drift for a fifth of the speed-up (measured on the
#: Qwen3-Reranker-0.6B shape: max |Δprobability| 0.0157 -> 0.0087, 2.4x -> 1.8x float32; BENCHMARKS.md).
KEEP_FLOAT32: tuple[str, ...] = ("down_proj",)


def int8_torchao(body: torch.nn.Module, checkpoint: Path, root: Path) -> None:
    """Replace every linear weight of ``body`` by torchao's int8 tensor, in place; the int8 weights and their
    scales are read from the cache when an earlier start wrote them."""
    try:
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_
    except ImportError as error:
        raise QuantizationUnavailable(f"torchao is not installed: {_INSTALL}") from error
    linears = {
        name: module
        for name, module in body.named_modules()
        if isinstance(module, torch.nn.Linear) and not name.endswith(KEEP_FLOAT32)
    }
    if not linears:
        raise QuantizationUnavailable("the model has no linear layers to quantize")
    entry = CacheEntry.of(root, checkpoint, "torchao", f"{type(body).__name__}:da8w8:float32-{'-'.join(KEEP_FLOAT32)}")
    path = entry.ready(_WEIGHTS_FILE)
    if path is not None:
        _load_torchao(linears, path)
        return
    logger.info("quantizing %s to int8 with torchao (once; cached in %s)", checkpoint, entry.folder)
    quantize_(body, Int8DynamicActivationInt8WeightConfig(), filter_fn=lambda module, name: name in linears)
    tensors: dict[str, torch.Tensor] = {}
    for name, module in linears.items():
        tensors[f"{name}.qdata"] = module.weight.qdata.contiguous()
        tensors[f"{name}.scale"] = module.weight.scale.contiguous()

    def write(target: Path) -> None:
        from safetensors.torch import save_file

        save_file(tensors, str(target))

    try:
        entry.publish(_WEIGHTS_FILE, write)
    except OSError as error:  # the model is quantized in memory already: score with it, prepare again next time
        logger.warning("could not cache the int8 weights in %s (%s); they will be prepared again", entry.folder, error)


def _load_torchao(linears: dict[str, torch.nn.Linear], path: Path) -> None:
    from safetensors.torch import load_file
    from torchao.quantization import Int8Tensor
    from torchao.quantization.granularity import PerRow
    from torchao.quantization.quantize_.workflows.int8.int8_tensor import QuantizeTensorToInt8Kwargs

    stored = load_file(str(path))
    act = QuantizeTensorToInt8Kwargs(granularity=PerRow())
    for name, module in linears.items():
        qdata, scale = stored[f"{name}.qdata"], stored[f"{name}.scale"]
        if tuple(qdata.shape) != tuple(module.weight.shape):
            raise QuantizationUnavailable(f"cached int8 weights of {name} do not fit the model: {path}")
        weight = Int8Tensor(qdata, scale, [1, qdata.shape[1]], module.weight.dtype, act_quant_kwargs=act)
        module.weight = torch.nn.Parameter(weight, requires_grad=False)


# -- what the loader calls -------------------------------------------------------------------------------------
def check_int8_placement(devices: Any, dtype: torch.dtype) -> None:
    """int8 is the CPU path: refuse other devices and half precision by name, before any weight loads."""
    others = sorted({str(device) for device in devices if torch.device(device).type != "cpu"})
    if others:
        raise ValueError(f"quantization='int8' is the CPU path; device={', '.join(others)} is not a CPU")
    if dtype != torch.float32:
        raise ValueError(f"quantization='int8' computes around float32; dtype={str(dtype).removeprefix('torch.')}")


def quantize_forward(forward: Any, source: Any) -> bool:
    """Put ``forward`` (a ``ClassifierForward`` or ``CausalHeadForward``) on its int8 engine; ``False`` after
    one warning when the engine cannot handle the checkpoint (``forward`` is then untouched, float32)."""
    from zerank_integrations.scoring.forward import CausalHeadForward

    try:
        folder = source.local_dir
        if folder is None:
            config = source.file("config.json")
            if config is None:
                raise QuantizationUnavailable("the checkpoint has no config.json")
            folder = Path(config).parent
        root = cache_root(source.cache_dir)
        if isinstance(forward, CausalHeadForward):
            int8_torchao(forward.body, Path(folder), root)
        else:
            inputs = ("input_ids", "attention_mask") + (("token_type_ids",) if forward.takes_token_types else ())
            forward.model = int8_openvino(forward.model, inputs, "logits", Path(folder), root)
    except (QuantizationUnavailable, OSError) as error:
        warn_fallback(source.name, str(error))
        return False
    return True
