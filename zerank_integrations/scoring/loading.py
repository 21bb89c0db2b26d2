"""Model id or path -> tokenizer, prompt template and forward pass on a device, once per process.

Loading a reranker costs gigabytes and tens of seconds, so every scorer and integration that asks for the same
(model, revision, device, dtype, family) shares one ``LoadedModel``. Weights load from safetensors only and
``trust_remote_code`` stays off: a model repo cannot run code on the user's machine.

Before anything is downloaded a hub id is checked with one request (no retries): a model that does not exist,
is gated, or cannot be reached fails within seconds with one clear ``ModelLoadError``. With the Hub out of
reach, a copy in the local Hugging Face cache is used instead.

The family comes from ``family=``, else from the checkpoint (``families.detection``), else from known hub
ids; a causal LM nobody can place is refused rather than scored with a guessed prompt.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from zerank_integrations.families import (
    FAMILIES,
    ClassifierLogit,
    FamilyDetectionError,
    RerankerFamily,
    detect_family,
    get_family,
    hub_id_from_path,
    logit_score_config,
)
from zerank_integrations.scoring import attention
from zerank_integrations.scoring.batching import CostModel, device_speed
from zerank_integrations.scoring.forward import CausalHeadForward, ClassifierForward, Forward
from zerank_integrations.scoring.prompts import PromptTemplate, PromptTemplateError, Tokens
from zerank_integrations.testing import is_random_weights

logger = logging.getLogger(__name__)

HUB_PROBE_TIMEOUT_S = 10.0
_PROBE = ("zerank load check", "Checks that the fast path equals the model's own logits.")
_SANE_TOKENIZER_LIMIT = 1_000_000  # tokenizers without a limit report ~1e30


class ModelLoadError(RuntimeError):
    """A reranker model could not be loaded; the message names it and says what to try."""


@dataclass(frozen=True)
class ModelKey:
    model: str
    revision: str | None
    device: str
    dtype: str
    family: str
    replica: int = 0  # a second copy on the same device (device=["cpu", "cpu"]) is a second model


@dataclass
class LoadedModel:
    """Everything scoring needs from one checkpoint; shared between threads (the forward holds its own lock)."""

    key: ModelKey
    family: RerankerFamily
    detected_by: str  # how the family was told: "family=", "sentence-transformers LogitScore(...)", ...
    tokenizer: Any
    tokens: Tokens
    template: PromptTemplate
    forward: Forward
    device: torch.device
    dtype: torch.dtype
    position_limit: int | None  # the most tokens the model can attend to, if it says
    default_max_length: int
    random_weights: bool
    cost: CostModel  # estimated seconds of a forward pass: what batch planning and prefix reuse weigh
    lock: threading.Lock = field(default_factory=threading.Lock)


_CACHE: dict[ModelKey, LoadedModel] = {}
_DETECTED: dict[tuple[str, str | None], str] = {}  # (model identity, revision) -> family name
_CACHE_LOCK = threading.Lock()
_KEY_LOCKS: dict[ModelKey, threading.Lock] = {}


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``/"auto" picks CUDA, then Apple MPS, then CPU."""
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device {device!r} is not a torch device (try 'cuda', 'cuda:0', 'mps', 'cpu')") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was requested but CUDA is not available on this machine")
    return resolved


def resolve_devices(device: str | torch.device | Sequence[str | torch.device] | None) -> list[torch.device]:
    """Where the replicas go: one per device.

    ``"cuda"`` (and ``None``/``"auto"`` when CUDA is picked) on a machine with several GPUs means every GPU;
    a list (or a comma-separated string such as ``"cuda:0,cuda:1"``) names the devices, one replica each (a
    device named twice holds two replicas). Anything else is one device, as :func:`resolve_device` reads it.
    """
    if isinstance(device, str) and "," in device:
        device = [part.strip() for part in device.split(",")]
    if isinstance(device, (list, tuple)):
        if not device:
            raise ValueError("device list is empty: name at least one device")
        devices = [resolve_device(one) for one in device]
        if len({one.type for one in devices}) > 1:
            raise ValueError(
                f"replicas must all be on one kind of device (got {', '.join(map(str, devices))}): their dtypes "
                "and therefore their scores would differ"
            )
        return devices
    resolved = resolve_device(device)
    everything = device is None or device == "auto" or (isinstance(device, str) and device.strip() == "cuda")
    if resolved.type == "cuda" and resolved.index is None and everything and torch.cuda.device_count() > 1:
        return [torch.device("cuda", index) for index in range(torch.cuda.device_count())]
    return [resolved]


_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
}


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``None``/"auto": bf16 on CUDA where supported, else fp16 on accelerators; fp32 on CPU."""
    if dtype is None or dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if device.type == "mps":
            return torch.float16
        return torch.float32
    if isinstance(dtype, torch.dtype):
        if dtype not in _DTYPES.values():
            raise ValueError(f"dtype {dtype} is not supported (use float32, bfloat16 or float16)")
        return dtype
    if isinstance(dtype, str) and dtype.lower().removeprefix("torch.") in _DTYPES:
        return _DTYPES[dtype.lower().removeprefix("torch.")]
    raise ValueError(f"dtype {dtype!r} is not supported (use 'auto', 'float32', 'bfloat16' or 'float16')")


def _model_identity(model: str) -> str:
    """A local directory is keyed by its absolute path; a hub id as written."""
    path = Path(model).expanduser()
    return str(path.resolve()) if path.is_dir() else model


def load_model(
    model: str,
    *,
    family: str | RerankerFamily | None = None,
    revision: str | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    local_files_only: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    token: str | None = None,
) -> LoadedModel:
    """The process-wide ``LoadedModel`` for these settings on one device, loading it on first use."""
    (loaded,) = load_replicas(
        model,
        family=family,
        revision=revision,
        devices=[resolve_device(device)],
        dtype=dtype,
        local_files_only=local_files_only,
        cache_dir=cache_dir,
        token=token,
    )
    return loaded


def load_replicas(
    model: str,
    *,
    family: str | RerankerFamily | None = None,
    revision: str | None = None,
    devices: Sequence[torch.device],
    dtype: str | torch.dtype | None = None,
    local_files_only: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    token: str | None = None,
) -> tuple[LoadedModel, ...]:
    """One process-wide ``LoadedModel`` per device in ``devices`` (see :func:`resolve_devices`).

    The checkpoint is resolved, and its family told, once; each replica holds its own weights on its device.
    """
    if not isinstance(model, str) or not model.strip():
        raise ValueError(f"model must be a Hugging Face id or a local directory, got {model!r}")
    chosen = get_family(family) if family is not None else None
    resolved_dtype = resolve_dtype(dtype, devices[0])
    identity = _model_identity(model)
    seen: dict[str, int] = {}
    places: list[tuple[torch.device, int]] = []  # (device, replica index on that device)
    for device in devices:
        places.append((device, seen.get(str(device), 0)))
        seen[str(device)] = places[-1][1] + 1

    def key_for(name: str, device: torch.device, replica: int) -> ModelKey:
        return ModelKey(identity, revision, str(device), str(resolved_dtype), name, replica)

    with _CACHE_LOCK:
        known = chosen.name if chosen is not None else _DETECTED.get((identity, revision))
        if known is not None and all(key_for(known, *place) in _CACHE for place in places):
            return tuple(_CACHE[key_for(known, *place)] for place in places)
    checkpoint = _Checkpoint.resolve(model, revision, local_files_only, cache_dir, token)
    tokenizer = checkpoint.tokenizer()
    tokens = Tokens(tokenizer)
    config = checkpoint.json("config.json") or {}
    if chosen is not None:
        detected_by = "family="
    else:
        chosen, detected_by = _detect(checkpoint, config, tokens)
        with _CACHE_LOCK:
            _DETECTED[(identity, revision)] = chosen.name
    replicas = []
    for device, replica in places:
        key = key_for(chosen.name, device, replica)
        with _CACHE_LOCK:
            if key in _CACHE:
                replicas.append(_CACHE[key])
                continue
            key_lock = _KEY_LOCKS.setdefault(key, threading.Lock())
        with key_lock:  # two threads asking for one new model load it once
            with _CACHE_LOCK:
                cached = _CACHE.get(key)
            if cached is None:
                cached = _load(key, chosen, detected_by, checkpoint, config, tokenizer, tokens, device, resolved_dtype)
                with _CACHE_LOCK:
                    _CACHE[key] = cached
        replicas.append(cached)
    return tuple(replicas)


def loaded_models() -> list[ModelKey]:
    """Keys of the models this process holds."""
    with _CACHE_LOCK:
        return list(_CACHE)


def clear_model_cache() -> None:
    """Forget every loaded model (scorers already built keep theirs alive until they are dropped)."""
    with _CACHE_LOCK:
        _CACHE.clear()
        _KEY_LOCKS.clear()
        _DETECTED.clear()


# -- where the checkpoint comes from ------------------------------------------------------------------------
@dataclass
class _Checkpoint:
    """A local folder or a hub id, with the loader options that reach it."""

    name: str
    local_dir: Path | None
    hub_id: str | None
    revision: str | None
    local_files_only: bool
    cache_dir: str | os.PathLike[str] | None
    token: str | None

    @classmethod
    def resolve(
        cls,
        model: str,
        revision: str | None,
        local_files_only: bool,
        cache_dir: str | os.PathLike[str] | None,
        token: str | None,
    ) -> _Checkpoint:
        path = Path(model).expanduser()
        if path.is_dir():
            return cls(str(path), path, hub_id_from_path(str(path.resolve())), revision, True, cache_dir, token)
        if _looks_like_path(model) or path.exists():
            what = "not a directory" if path.exists() else "no such directory"
            raise ModelLoadError(f"could not load reranker model {model!r}: {what}")
        offline = local_files_only or _hub_offline()
        if not offline:
            offline = _probe_hub(model, revision, cache_dir, token)
        if offline and not _cached(model, revision, cache_dir):
            why = "local_files_only=True" if local_files_only else "HF_HUB_OFFLINE is set"
            if not (local_files_only or _hub_offline()):
                why = "the Hugging Face Hub cannot be reached"
            raise ModelLoadError(
                f"could not load reranker model {_where(model, revision)}: it is not in the local Hugging Face cache "
                f"and {why}. Download it where there is network (`hf download {model}`) and pass its local "
                "directory instead of the hub id"
            )
        return cls(model, None, model, revision, offline, cache_dir, token)

    def options(self) -> dict[str, Any]:
        options: dict[str, Any] = {
            "revision": self.revision,
            "local_files_only": self.local_files_only,
            "cache_dir": self.cache_dir,
            "trust_remote_code": False,
        }
        if self.token is not None:
            options["token"] = self.token
        return options

    def file(self, filename: str) -> Path | None:
        """A file of the checkpoint, downloaded if needed; ``None`` when the checkpoint has no such file."""
        if self.local_dir is not None:
            candidate = self.local_dir / filename
            return candidate if candidate.is_file() else None
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

        try:
            return Path(
                hf_hub_download(
                    self.name,
                    filename,
                    revision=self.revision,
                    cache_dir=self.cache_dir,
                    token=self.token,
                    local_files_only=self.local_files_only,
                )
            )
        except (EntryNotFoundError, LocalEntryNotFoundError):
            return None

    def json(self, filename: str) -> Any:
        path = self.file(filename)
        if path is None:
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ModelLoadError(f"model {self.name!r}: cannot read {filename}: {error}") from error

    def tokenizer(self) -> Any:
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(self.name, **self.options())
        except (OSError, ValueError, ImportError) as error:
            raise ModelLoadError(_load_hint(self.name, self.revision, error)) from error


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _cached(model: str, revision: str | None, cache_dir: str | os.PathLike[str] | None) -> bool:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(model, "config.json", cache_dir=cache_dir, revision=revision)
    return isinstance(found, str)


def _probe_hub(model: str, revision: str | None, cache_dir: str | os.PathLike[str] | None, token: str | None) -> bool:
    """One request to the Hub, no retries. Returns True when it is out of reach (use the local cache)."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        HfApi().model_info(model, revision=revision, timeout=HUB_PROBE_TIMEOUT_S, token=token)
    except GatedRepoError:
        raise ModelLoadError(
            f"could not load reranker model {_where(model, revision)}: it is gated on the Hugging Face Hub; accept "
            "its terms on the model page and pass token= (or set HF_TOKEN)"
        ) from None
    except RepositoryNotFoundError:
        raise ModelLoadError(
            f"could not load reranker model {model!r}: no such model on the Hugging Face Hub (if it is private, "
            "pass token= or set HF_TOKEN; if it is a local folder, check the path)"
        ) from None
    except RevisionNotFoundError:
        raise ModelLoadError(
            f"could not load reranker model {model!r}: the Hub has no revision {revision!r} for it"
        ) from None
    except HFValidationError as error:
        raise ModelLoadError(f"could not load reranker model {model!r}: not a valid hub id ({error})") from None
    except HfHubHTTPError as error:
        status = getattr(getattr(error, "response", None), "status_code", None)
        if status in (401, 403, 404):
            raise ModelLoadError(
                f"could not load reranker model {_where(model, revision)}: the Hugging Face Hub answered HTTP "
                f"{status} (no such model, or a private one: pass token= or set HF_TOKEN)"
            ) from None
        return _unreachable(model, error)
    except Exception as error:  # transport errors of whatever HTTP client huggingface_hub uses
        return _unreachable(model, error)
    return False


def _unreachable(model: str, error: BaseException) -> bool:
    reason = str(error).splitlines()[0] if str(error) else ""
    logger.warning(
        "the Hugging Face Hub cannot be reached (%s: %s); trying the local cache for %s",
        type(error).__name__,
        reason,
        model,
    )
    return True


def _detect(checkpoint: _Checkpoint, config: dict[str, Any], tokens: Tokens) -> tuple[RerankerFamily, str]:
    module = logit_score_config(checkpoint.json("modules.json"))
    logit_score = checkpoint.json(f"{module.get('path') or ''}/config.json".lstrip("/")) if module else None
    try:
        family, how = detect_family(
            config=config,
            families=FAMILIES.values(),
            model_id=checkpoint.hub_id,
            logit_score=logit_score,
            token_ids=lambda text: tokens.ids([text])[0],
        )
    except FamilyDetectionError as error:
        raise ModelLoadError(f"model {checkpoint.name!r}: {error}") from None
    logger.info("model %s: family %s (from %s)", checkpoint.name, family.name, how)
    return family, how


# -- loading the weights -------------------------------------------------------------------------------------
def _load(
    key: ModelKey,
    family: RerankerFamily,
    detected_by: str,
    checkpoint: _Checkpoint,
    config: dict[str, Any],
    tokenizer: Any,
    tokens: Tokens,
    device: torch.device,
    dtype: torch.dtype,
) -> LoadedModel:
    name = checkpoint.name
    try:
        template = PromptTemplate.build(family, tokens)
    except PromptTemplateError as error:
        raise ModelLoadError(f"model {name!r} as family {family.name!r}: {error}") from error
    if "LogitScore" in detected_by:
        _confirm_pair_template(name, family, template, tokens)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    causal_lm = None
    if family.architecture == "sequence-classification":
        forward, model_config = _load_classifier(name, family, checkpoint, template, int(pad_id or 0), device, dtype)
    else:
        forward, causal_lm = _load_causal(name, family, checkpoint, tokens, int(pad_id or 0), device, dtype)
        model_config = causal_lm.config
    position_limit = _position_limit(model_config, tokenizer, family)
    cost = _cost_model(forward, model_config, device, dtype, causal=causal_lm is not None)
    loaded = LoadedModel(
        key=key,
        family=family,
        detected_by=detected_by,
        tokenizer=tokenizer,
        tokens=tokens,
        template=template,
        forward=forward,
        device=device,
        dtype=dtype,
        position_limit=position_limit,
        default_max_length=_default_max_length(family, template, position_limit, name),
        random_weights=checkpoint.local_dir is not None and is_random_weights(checkpoint.local_dir),
        cost=cost,
    )
    if causal_lm is not None:
        _check_fast_path(loaded, causal_lm, name)
    logger.info(
        "loaded reranker %s (revision=%s, family %s) on %s as %s", name, key.revision, family.name, device, dtype
    )
    return loaded


def _from_pretrained(auto_class: Any, name: str, checkpoint: _Checkpoint, dtype: torch.dtype, **extra: Any) -> Any:
    """Load safetensors weights only; refuse checkpoints whose weights do not fit the architecture."""
    try:
        model, info = auto_class.from_pretrained(
            name, dtype=dtype, use_safetensors=True, output_loading_info=True, **extra, **checkpoint.options()
        )
    except (OSError, ValueError, ImportError) as error:
        raise ModelLoadError(_load_hint(name, checkpoint.revision, error)) from error
    missing = [k for k in info.get("missing_keys", []) if not k.endswith("position_ids")]
    if missing:
        raise ModelLoadError(
            f"model {name!r}: the checkpoint lacks weights the {type(model).__name__} architecture needs "
            f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}); it was saved for another "
            "architecture: check family="
        )
    return model.eval().requires_grad_(False)


def _load_causal(
    name: str,
    family: RerankerFamily,
    checkpoint: _Checkpoint,
    tokens: Tokens,
    pad_id: int,
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[CausalHeadForward, Any]:
    """The body and the family's head row; the full causal LM is returned for the load-time check only."""
    from transformers import AutoModelForCausalLM

    causal_lm = _from_pretrained(AutoModelForCausalLM, name, checkpoint, dtype, attn_implementation="sdpa")
    causal_lm.to(device)
    causal_lm.config.use_cache = False
    own_attention = _use_zerank_attention(causal_lm)
    head = causal_lm.get_output_embeddings()
    body = getattr(causal_lm, causal_lm.base_model_prefix, None)
    if head is None or body is None:
        raise ModelLoadError(f"model {name!r} ({type(causal_lm).__name__}) has no separable output head")
    weights = head.weight.detach().float()
    bias = getattr(head, "bias", None)
    bias_values = bias.detach().float() if bias is not None else None
    ids = _head_token_ids(name, family, tokens)
    row = weights[ids[0]].clone() if len(ids) == 1 else weights[ids[0]] - weights[ids[1]]
    offset = 0.0
    if bias_values is not None:
        offset = float(bias_values[ids[0]]) if len(ids) == 1 else float(bias_values[ids[0]] - bias_values[ids[1]])
    forward = CausalHeadForward(
        body=body,
        row=row.to(device),
        bias=offset,
        pad_id=pad_id,
        device=device,
        supports_prefix_reuse=own_attention,
        packed=own_attention and _packs_rows(device, dtype),
    )
    return forward, causal_lm


def _use_zerank_attention(causal_lm: Any) -> bool:
    """Switch the model to the ``"zerank"`` attention (copy-free prefix reuse, packed rows) where it can run.

    It needs transformers' attention interface and plain causal attention: models with sliding-window layers
    keep SDPA (their masks are built by transformers) and are scored without prefix reuse, exactly.
    """
    config = causal_lm.config
    layer_types = getattr(config, "layer_types", None)
    sliding = "sliding_attention" in layer_types if layer_types else bool(getattr(config, "use_sliding_window", False))
    if sliding:
        return False
    causal_lm.set_attn_implementation(attention.register())
    return causal_lm.config._attn_implementation == attention.ATTENTION_NAME


def _packs_rows(device: torch.device, dtype: torch.dtype) -> bool:
    """Padding-free (varlen) rows: on CUDA in half precision with the flash-attn package; SDPA otherwise."""
    return device.type == "cuda" and dtype != torch.float32 and attention.flash_attn_varlen() is not None


def _cost_model(
    forward: Forward, model_config: Any, device: torch.device, dtype: torch.dtype, *, causal: bool
) -> CostModel:
    """The estimated cost of a forward pass of this model on this device (see ``batching.CostModel``)."""
    module = forward.body if isinstance(forward, CausalHeadForward) else forward.model
    embeddings = sum(
        p.numel() for m in module.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters(recurse=False)
    )
    parameters = sum(p.numel() for p in module.parameters()) - embeddings
    heads = int(getattr(model_config, "num_attention_heads", 1) or 1)
    head_dim = getattr(model_config, "head_dim", None) or int(model_config.hidden_size) // heads
    multiprocessors = 0
    if device.type == "cuda":
        multiprocessors = torch.cuda.get_device_properties(device).multi_processor_count
    speed = device_speed(device.type, half=dtype != torch.float32, multiprocessors=multiprocessors)
    return CostModel.estimate(
        speed,
        parameters=parameters,
        weight_bytes=parameters * torch.finfo(dtype).bits // 8,
        layers=int(getattr(model_config, "num_hidden_layers", 1) or 1),
        hidden_size=int(model_config.hidden_size),
        attention_width=heads * int(head_dim),
        causal=causal,
        packed=forward.packed,
    )


def _head_token_ids(name: str, family: RerankerFamily, tokens: Tokens) -> tuple[int, ...]:
    """The vocabulary ids the family's head reads: (token,) or (true, false)."""
    ids = []
    for text in family.head.tokens:
        encoded = tokens.ids([text])[0]
        if len(encoded) != 1:
            raise ModelLoadError(
                f"model {name!r}: the tokenizer splits {text!r} into {encoded}; not a {family.name} checkpoint"
            )
        ids.append(encoded[0])
    return tuple(ids)


def _load_classifier(
    name: str,
    family: RerankerFamily,
    checkpoint: _Checkpoint,
    template: PromptTemplate,
    pad_id: int,
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[ClassifierForward, Any]:
    import inspect

    from transformers import AutoModelForSequenceClassification

    if not template.middle.ids and not template.head.ids:
        raise ModelLoadError(
            f"model {name!r}: the tokenizer's pair encoding puts no special tokens around query and document, "
            "so this is not a cross-encoder tokenizer (a decoder LLM converted to a classifier?). Load the "
            "original causal checkpoint with its family instead"
        )
    model = _from_pretrained(AutoModelForSequenceClassification, name, checkpoint, dtype)
    num_labels = int(model.config.num_labels)
    if num_labels not in (1, 2):
        raise ModelLoadError(
            f"model {name!r} classifies into {num_labels} labels; a reranker has one (relevance) or two "
            "(not relevant, relevant)"
        )
    model.to(device)
    takes_types = "token_type_ids" in inspect.signature(model.forward).parameters
    forward = ClassifierForward(model, num_labels, pad_id, device, takes_types)
    return forward, model.config


def _position_limit(model_config: Any, tokenizer: Any, family: RerankerFamily) -> int | None:
    limits = []
    positions = getattr(model_config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        limits.append(positions)
    tokenizer_limit = getattr(tokenizer, "model_max_length", None)
    sane = isinstance(tokenizer_limit, int) and 0 < tokenizer_limit < _SANE_TOKENIZER_LIMIT
    if isinstance(family.head, ClassifierLogit) and sane:
        limits.append(tokenizer_limit)
    return min(limits) if limits else None


def _default_max_length(family: RerankerFamily, template: PromptTemplate, limit: int | None, name: str) -> int:
    default = family.default_max_length
    if default is not None and not family.max_length_counts_template:
        default += len(template.head) + len(template.tail)
    if default is None:
        if limit is None:
            raise ModelLoadError(f"model {name!r} states no maximum length; pass max_length=")
        return limit
    return min(default, limit) if limit is not None else default


def _confirm_pair_template(name: str, family: RerankerFamily, template: PromptTemplate, tokens: Tokens) -> None:
    """A checkpoint detected by its LogitScore head must also render the family's prompt.

    sentence-transformers checkpoints carry a chat template for ("query", "document") messages; where it
    renders a probe pair, the result must equal the family's own prompt, or another recipe shares the head.
    """
    query, document = "What is the boiling point of water?", "Water boils at 100 °C at sea level."
    messages = [{"role": "query", "content": query}, {"role": "document", "content": document}]
    try:
        rendered = tokens.tokenizer.apply_chat_template(messages, tokenize=False)
    except Exception:  # no template, or one that cannot render these roles: nothing to compare
        return
    if not isinstance(rendered, str) or query not in rendered or document not in rendered:
        return
    if rendered != template.reference_text(tokens, query, document, template.effective_instruction(None)):
        raise ModelLoadError(
            f"model {name!r}: its sentence-transformers score head matches the {family.name} family, but its "
            f"chat template renders a different prompt than the {family.name} recipe; pass family= if you are "
            "sure, or use sentence-transformers for this model"
        )


def _check_fast_path(loaded: LoadedModel, causal_lm: torch.nn.Module, name: str) -> None:
    """Refuse models whose logits are not ``head(body(x))`` (soft-capping, scaling): scores would be wrong."""
    forward = loaded.forward
    assert isinstance(forward, CausalHeadForward)
    ids = _head_token_ids(name, loaded.family, loaded.tokens)
    template = loaded.template
    query, document = template.normalize(*_PROBE)
    segment = template.query_segment(loaded.tokens, query, template.effective_instruction(None), 1 << 30)
    pair = template.assemble(segment, loaded.tokens.ids([template.document_text(document)])[0], 1 << 30)
    with torch.inference_mode():
        logits = causal_lm(torch.tensor([list(pair.row.ids)], device=loaded.device)).logits[0, -1].float()
        expected = float(logits[ids[0]] - (logits[ids[1]] if len(ids) == 2 else 0.0))
    got = forward.full([pair.row])[0]
    tolerance = 1e-3 if loaded.dtype == torch.float32 else 0.1 + 0.02 * abs(expected)
    if abs(got - expected) > tolerance:
        raise ModelLoadError(
            f"model {name!r}: projecting the last hidden state on the {loaded.family.name} head gives {got:.4f}, "
            f"the model's own logits give {expected:.4f}; this architecture is not supported"
        )


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "~", os.sep)) or name.count("/") > 1 or "\\" in name


def _where(name: str, revision: str | None) -> str:
    return f"{name!r}" + (f" (revision {revision!r})" if revision else "")


def _load_hint(name: str, revision: str | None, error: BaseException) -> str:
    where = _where(name, revision)
    path = Path(name).expanduser()
    reason = str(error).strip().splitlines()[0].rstrip(".") if str(error).strip() else type(error).__name__
    message = f"could not load reranker model {where}: {reason}"
    if path.is_dir():
        if not (path / "config.json").is_file():  # the loader's own error names a tokenizer class, not this
            return (
                f"could not load reranker model {where}: the folder has no config.json, so it is not a "
                "Hugging Face model folder (point at the folder holding config.json, the tokenizer files and "
                "*.safetensors)"
            )
        if not list(path.glob("*.safetensors")) and (list(path.glob("*.bin")) or list(path.glob("*.pt"))):
            message += ". Only .safetensors weights are loaded (pickled weights can run code); convert them first"
        return message
    return message + (
        ". If this machine is offline, download the model where there is network (e.g. `hf download "
        f"{name}`) and pass its local directory instead of the hub id"
    )
