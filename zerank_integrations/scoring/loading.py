"""Model id or path -> tokenizer, prompt and forward pass on a device, once per process.

Loading a reranker costs gigabytes and tens of seconds, so every scorer and integration that asks for the same
(model, revision, device, dtype, family) shares one ``LoadedModel``. The steps, one module each:

- ``source``: where the checkpoint comes from (a folder or a hub id; safetensors only, no remote code);
- ``families.checkpoint``: what the checkpoint says about itself, read once (``CheckpointFacts``);
- ``families.detection``: which family that description names (or ``family=``);
- ``prompt_source``: the prompt it is scored with (its own pair template, or the family's recipe);
- ``building``: its weights and forward pass on each device, checked against the model's own logits.
"""

from __future__ import annotations

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
    CheckpointFacts,
    FamilyDetectionError,
    RerankerFamily,
    detect_family,
    get_family,
)
from zerank_integrations.scoring.batching import CostModel
from zerank_integrations.scoring.building import build_model, check_fast_path
from zerank_integrations.scoring.devices import resolve_device, resolve_devices, resolve_dtype
from zerank_integrations.scoring.forward import Forward
from zerank_integrations.scoring.prompt_source import choose_template
from zerank_integrations.scoring.prompts import PromptTemplate, Tokens
from zerank_integrations.scoring.quantization import check_int8_placement, check_quantization, quantize_forward
from zerank_integrations.scoring.source import CheckpointSource, ModelLoadError
from zerank_integrations.testing import is_random_weights

logger = logging.getLogger(__name__)

__all__ = [
    "LoadedModel",
    "ModelKey",
    "ModelLoadError",
    "clear_model_cache",
    "load_model",
    "load_replicas",
    "loaded_models",
    "resolve_device",
    "resolve_devices",
    "resolve_dtype",
]


@dataclass(frozen=True)
class ModelKey:
    model: str
    revision: str | None
    device: str
    dtype: str
    family: str
    replica: int = 0  # a second copy on the same device (device=["cpu", "cpu"]) is a second model
    quantization: str = "none"  # "int8": the CPU int8 path (``scoring.quantization``)


@dataclass
class LoadedModel:
    """Everything scoring needs from one checkpoint; shared between threads (the forward holds its own lock)."""

    key: ModelKey
    family: RerankerFamily
    detected_by: str  # how the family was told: "family=", "sentence-transformers LogitScore(...)", ...
    facts: CheckpointFacts  # what the checkpoint says about itself
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
    quantization: str | None = None  # "int8" when the int8 engine runs it; None: float32 (also after a fallback)
    lock: threading.Lock = field(default_factory=threading.Lock)


_CACHE: dict[ModelKey, LoadedModel] = {}
_DETECTED: dict[tuple[str, str | None], str] = {}  # (model identity, revision) -> family name
_CACHE_LOCK = threading.Lock()
_KEY_LOCKS: dict[ModelKey, threading.Lock] = {}


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
    quantization: str | None = None,
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
        quantization=quantization,
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
    quantization: str | None = None,
) -> tuple[LoadedModel, ...]:
    """One process-wide ``LoadedModel`` per device in ``devices`` (see :func:`resolve_devices`).

    The checkpoint is resolved, and its family told, once; each replica holds its own weights on its device.
    ``quantization="int8"`` (CPU, float32 activations) prepares the int8 engine's weights once, from its cache.
    """
    if not isinstance(model, str) or not model.strip():
        raise ValueError(f"model must be a Hugging Face id or a local directory, got {model!r}")
    chosen = get_family(family) if family is not None else None
    resolved_dtype = resolve_dtype(dtype, devices[0])
    quantization = check_quantization(quantization)
    if quantization is not None:
        check_int8_placement(devices, resolved_dtype)
    identity = _model_identity(model)
    seen: dict[str, int] = {}
    places: list[tuple[torch.device, int]] = []  # (device, replica index on that device)
    for device in devices:
        places.append((device, seen.get(str(device), 0)))
        seen[str(device)] = places[-1][1] + 1

    def key_for(name: str, device: torch.device, replica: int) -> ModelKey:
        return ModelKey(identity, revision, str(device), str(resolved_dtype), name, replica, quantization or "none")

    with _CACHE_LOCK:
        known = chosen.name if chosen is not None else _DETECTED.get((identity, revision))
        if known is not None and all(key_for(known, *place) in _CACHE for place in places):
            return tuple(_CACHE[key_for(known, *place)] for place in places)
    source = CheckpointSource.resolve(model, revision, local_files_only, cache_dir, token)
    facts = source.facts()
    tokenizer = source.tokenizer(facts)
    tokens = Tokens(tokenizer)
    named_by_caller = chosen is not None
    if chosen is not None:
        detected_by = "family="
    else:
        chosen, detected_by = _detect(facts, tokens)
        with _CACHE_LOCK:
            _DETECTED[(identity, revision)] = chosen.name
    template = choose_template(source.name, chosen, facts, tokens, named_by_caller=named_by_caller)
    read = _Read(source, facts, tokenizer, tokens, template, detected_by)
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
                cached = _load(key, read, device, resolved_dtype, quantization)
                with _CACHE_LOCK:
                    _CACHE[key] = cached
        replicas.append(cached)
    return tuple(replicas)


def loaded_models() -> list[ModelKey]:
    """Keys of the models this process holds."""
    with _CACHE_LOCK:
        return list(_CACHE)


def clear_model_cache(*, quantized_only: bool = False) -> None:
    """Forget every loaded model (scorers already built keep theirs alive until they are dropped), or only the
    int8 ones (``quantized_only``: a fresh start of the int8 engine that leaves float32 models shared)."""
    with _CACHE_LOCK:
        if quantized_only:
            for key in [key for key in _CACHE if key.quantization != "none"]:
                del _CACHE[key]
                _KEY_LOCKS.pop(key, None)
            return
        _CACHE.clear()
        _KEY_LOCKS.clear()
        _DETECTED.clear()


def _detect(facts: CheckpointFacts, tokens: Tokens) -> tuple[RerankerFamily, str]:
    try:
        family, how = detect_family(facts, FAMILIES.values(), lambda text: tokens.ids([text])[0])
    except FamilyDetectionError as error:
        raise ModelLoadError(f"model {facts.name!r}: {error}") from None
    logger.info("model %s: family %s (from %s)", facts.name, family.name, how)
    return family, how


@dataclass(frozen=True)
class _Read:
    """What one load learnt about the checkpoint before any weights: shared by all its replicas."""

    source: CheckpointSource
    facts: CheckpointFacts
    tokenizer: Any
    tokens: Tokens
    template: PromptTemplate
    detected_by: str


def _load(
    key: ModelKey, read: _Read, device: torch.device, dtype: torch.dtype, quantization: str | None = None
) -> LoadedModel:
    source, facts, template, tokenizer, tokens = read.source, read.facts, read.template, read.tokenizer, read.tokens
    built = build_model(source, facts, template, tokenizer, tokens, device, dtype)
    if built.causal_lm is not None:
        check_fast_path(built, template, tokens, source.name)
    if quantization is not None and not quantize_forward(built.forward, source):
        quantization = None  # warned once: float32 runs
    loaded = LoadedModel(
        key=key,
        family=template.family,
        detected_by=read.detected_by,
        facts=facts,
        tokenizer=tokenizer,
        tokens=tokens,
        template=template,
        forward=built.forward,
        device=device,
        dtype=dtype,
        position_limit=built.position_limit,
        default_max_length=built.default_max_length,
        random_weights=source.local_dir is not None and is_random_weights(source.local_dir),
        cost=built.cost,
        quantization=quantization,
    )
    logger.info(
        "loaded reranker %s (revision=%s, family %s, prompt from %s) on %s as %s%s",
        source.name,
        key.revision,
        template.family.name,
        template.source,
        device,
        dtype,
        " (int8)" if quantization else "",
    )
    return loaded
