"""Drop two known, harmless messages that optional packages print when transformers imports them.

With torchao installed (the ``[int8]`` extra), transformers imports it on every model load; a CPU wheel of
torchao then logs "Failed to load …/_C_….so" for each GPU kernel it ships, and torch logs that torchao's Enum
registrations are deprecated. Neither is news to anyone loading a model, and both land in CLI output, server
logs and pipes. A filter on exactly those records (nothing else from those loggers is touched) is installed
when ``zerank_integrations`` is imported. No torch import here.
"""

from __future__ import annotations

import logging

__all__ = ["install_import_noise_filter"]

_NOISE: dict[str, tuple[str, ...]] = {
    "torchao": ("Failed to load ",),
    "torch.utils._pytree": ("is an Enum subclass and is now natively supported",),
}


class _KnownNoise(logging.Filter):
    """Drop records below ERROR whose message contains one of ``fragments``."""

    def __init__(self, fragments: tuple[str, ...]) -> None:
        super().__init__()
        self._fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return True
        text = str(record.msg)
        return not any(fragment in text for fragment in self._fragments)


def install_import_noise_filter() -> None:
    """Attach the filter once per logger (idempotent)."""
    for name, fragments in _NOISE.items():
        logger = logging.getLogger(name)
        if not any(isinstance(existing, _KnownNoise) for existing in logger.filters):
            logger.addFilter(_KnownNoise(fragments))
