"""Model id or path -> tokenizer, transformer body and "Yes" row on a device, once per process.

Loading zerank-2 costs ~8 GB and tens of seconds, so every scorer and integration that asks for the same
(model, revision, device, dtype) shares one ``LoadedModel``. Weights load from safetensors only and
``trust_remote_code`` stays off: a model repo cannot run code on the user's machine.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from zerank_integrations.scoring.prompts import PromptTemplate, PromptTemplateError, render_prompt

logger = logging.getLogger(__name__)

YES_TOKEN = "Yes"
_PROBE = ("zerank load check", "Checks that the fast path equals the model's own logits.")


class ModelLoadError(RuntimeError):
    """A reranker model could not be loaded; the message names it and says what to try."""


@dataclass(frozen=True)
class ModelKey:
    model: str
    revision: str | None
    device: str
    dtype: str


@dataclass
class LoadedModel:
    """Everything scoring needs from one checkpoint. Shared between threads: forwards take ``lock``."""

    key: ModelKey
    tokenizer: Any
    body: torch.nn.Module  # the transformer without its vocabulary head
    yes_row: torch.Tensor  # float32 row of the output embedding for "Yes" (hidden_size,)
    yes_bias: float
    yes_token_id: int
    template: PromptTemplate
    pad_token_id: int
    device: torch.device
    dtype: torch.dtype
    lock: threading.Lock = field(default_factory=threading.Lock)
    tokenizer_lock: threading.Lock = field(default_factory=threading.Lock)


_CACHE: dict[ModelKey, LoadedModel] = {}
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
    revision: str | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    local_files_only: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    token: str | None = None,
) -> LoadedModel:
    """The process-wide ``LoadedModel`` for these settings, loading it on first use."""
    if not isinstance(model, str) or not model.strip():
        raise ValueError(f"model must be a Hugging Face id or a local directory, got {model!r}")
    resolved_device = resolve_device(device)
    resolved_dtype = resolve_dtype(dtype, resolved_device)
    key = ModelKey(_model_identity(model), revision, str(resolved_device), str(resolved_dtype))
    with _CACHE_LOCK:
        if key in _CACHE:
            return _CACHE[key]
        key_lock = _KEY_LOCKS.setdefault(key, threading.Lock())
    with key_lock:  # two threads asking for one new model load it once
        with _CACHE_LOCK:
            if key in _CACHE:
                return _CACHE[key]
        loaded = _load(key, resolved_device, resolved_dtype, local_files_only, cache_dir, token)
        with _CACHE_LOCK:
            _CACHE[key] = loaded
        return loaded


def loaded_models() -> list[ModelKey]:
    """Keys of the models this process holds."""
    with _CACHE_LOCK:
        return list(_CACHE)


def clear_model_cache() -> None:
    """Forget every loaded model (scorers already built keep theirs alive until they are dropped)."""
    with _CACHE_LOCK:
        _CACHE.clear()
        _KEY_LOCKS.clear()


def _load(
    key: ModelKey,
    device: torch.device,
    dtype: torch.dtype,
    local_files_only: bool,
    cache_dir: str | os.PathLike[str] | None,
    token: str | None,
) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name = key.model
    common: dict[str, Any] = {
        "revision": key.revision,
        "local_files_only": local_files_only,
        "cache_dir": cache_dir,
        "trust_remote_code": False,
    }
    if token is not None:
        common["token"] = token
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, **common)
        causal_lm = AutoModelForCausalLM.from_pretrained(
            name, dtype=dtype, use_safetensors=True, attn_implementation="sdpa", **common
        )
    except (OSError, ValueError, ImportError) as error:
        raise ModelLoadError(_load_hint(name, key.revision, error)) from error
    causal_lm.eval().requires_grad_(False)
    causal_lm.to(device)
    causal_lm.config.use_cache = False

    yes_ids = tokenizer(YES_TOKEN, add_special_tokens=False)["input_ids"]
    if len(yes_ids) != 1:
        raise ModelLoadError(f"model {name!r}: the tokenizer splits {YES_TOKEN!r} into {yes_ids}; not a zerank model")
    yes_token_id = int(yes_ids[0])
    head = causal_lm.get_output_embeddings()
    body = getattr(causal_lm, causal_lm.base_model_prefix, None)
    if head is None or body is None:
        raise ModelLoadError(f"model {name!r} ({type(causal_lm).__name__}) has no separable output head")
    bias = getattr(head, "bias", None)
    try:
        template = PromptTemplate.from_tokenizer(tokenizer)
    except PromptTemplateError as error:
        raise ModelLoadError(f"model {name!r}: {error}") from error
    pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    loaded = LoadedModel(
        key=key,
        tokenizer=tokenizer,
        body=body,
        yes_row=head.weight[yes_token_id].detach().float().clone(),
        yes_bias=float(bias[yes_token_id]) if bias is not None else 0.0,
        yes_token_id=yes_token_id,
        template=template,
        pad_token_id=int(pad_token_id or 0),
        device=device,
        dtype=dtype,
    )
    _check_fast_path(loaded, causal_lm, name)
    logger.info("loaded reranker %s (revision=%s) on %s as %s", name, key.revision, device, dtype)
    return loaded


def _check_fast_path(loaded: LoadedModel, causal_lm: torch.nn.Module, name: str) -> None:
    """Refuse models whose logits are not ``head(body(x))`` (soft-capping, scaling): scores would be wrong."""
    from zerank_integrations.scoring.forward import yes_logits_full

    text = render_prompt(loaded.tokenizer, *_PROBE)
    ids = loaded.tokenizer(text, add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        expected = causal_lm(torch.tensor([ids], device=loaded.device)).logits[0, -1, loaded.yes_token_id].item()
        got = yes_logits_full(loaded, [ids])[0]
    tolerance = 1e-3 if loaded.dtype == torch.float32 else 0.1 + 0.02 * abs(expected)
    if abs(got - expected) > tolerance:
        raise ModelLoadError(
            f"model {name!r}: projecting the last hidden state on the {YES_TOKEN!r} row gives {got:.4f}, "
            f"the model's own logit is {expected:.4f}; this architecture is not supported"
        )


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "~", os.sep)) or name.count("/") > 1 or "\\" in name


def _load_hint(name: str, revision: str | None, error: BaseException) -> str:
    where = f"{name!r}" + (f" (revision {revision!r})" if revision else "")
    path = Path(name).expanduser()
    if _looks_like_path(name) and not path.exists():
        return f"could not load reranker model {where}: no such directory"
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
    message += (
        ". If this machine is offline, download the model where there is network (e.g. `hf download "
        f"{name}`) and pass its local directory instead of the hub id"
    )
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}:
        message += " (HF_HUB_OFFLINE is set, so the hub was not contacted)"
    return message
