"""Keep transformers' "Loading weights" progress bars out of apps, servers and logs unless someone asks.

``from_pretrained`` draws a bar per load; inside a LangChain or LlamaIndex app, a server log or a CLI piped to a
file that is noise about a step the user did not start by hand. :func:`quiet_loading` hides those bars for the
duration of a load and puts transformers' switch back afterwards. Bars are shown when asked for:
``$ZERANK_SHOW_PROGRESS=1`` or the ``zerank_integrations`` logger enabled at DEBUG. Download bars of
``huggingface_hub`` are left alone (a multi-GB download should show its progress). No torch import here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator

__all__ = ["SHOW_PROGRESS_ENV", "quiet_loading", "show_loading_progress"]

SHOW_PROGRESS_ENV = "ZERANK_SHOW_PROGRESS"
_TRUE = {"1", "true", "yes", "on"}

#: Loggers that speak while transformers imports its optional quantizers: with torchao installed (the [int8]
#: extra), every model load imports it, and it reports the GPU kernels a CPU wheel lacks plus torch's pytree
#: deprecation notes. Not news to anyone loading a model, so they are held to errors during loads.
_IMPORT_NOISE_LOGGERS = ("torchao", "torch.utils._pytree")

_lock = threading.Lock()
_depth = 0  # loads in progress inside quiet_loading (several threads may load at once)
_was_enabled = False  # transformers' switch before the first of them started (None: bars left alone)
_saved_levels: dict[str, int] = {}


def show_loading_progress() -> bool:
    """Whether the user asked for weight-loading bars (``$ZERANK_SHOW_PROGRESS`` or DEBUG logging)."""
    if os.environ.get(SHOW_PROGRESS_ENV, "").strip().lower() in _TRUE:
        return True
    return logging.getLogger("zerank_integrations").isEnabledFor(logging.DEBUG)


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """Hide transformers' progress bars inside the block (unless :func:`show_loading_progress`), and the
    optional quantizers' import chatter always.

    Re-entrant and thread-safe: overlapping blocks share one switch, restored when the last one ends, so a
    load in one thread never turns the bars back on under another's.
    """
    global _depth, _was_enabled
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover - every loader here depends on transformers
        hf_logging = None
    with _lock:
        if _depth == 0:
            for name in _IMPORT_NOISE_LOGGERS:
                _saved_levels[name] = logging.getLogger(name).level
                logging.getLogger(name).setLevel(logging.ERROR)
            _was_enabled = hf_logging is not None and not show_loading_progress()
            if _was_enabled:
                _was_enabled = hf_logging.is_progress_bar_enabled()
                hf_logging.disable_progress_bar()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                for name, level in _saved_levels.items():
                    logging.getLogger(name).setLevel(level)
                if _was_enabled and hf_logging is not None:
                    hf_logging.enable_progress_bar()
