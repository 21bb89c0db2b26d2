"""Where a model runs: torch devices (one replica each) and the dtype they compute in."""

from __future__ import annotations

from collections.abc import Sequence

import torch


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
