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

_lock = threading.Lock()
_depth = 0  # loads in progress inside quiet_loading (several threads may load at once)
_was_enabled = False  # transformers' switch before the first of them started


def show_loading_progress() -> bool:
    """Whether the user asked for weight-loading bars (``$ZERANK_SHOW_PROGRESS`` or DEBUG logging)."""
    if os.environ.get(SHOW_PROGRESS_ENV, "").strip().lower() in _TRUE:
        return True
    return logging.getLogger("zerank_integrations").isEnabledFor(logging.DEBUG)


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """Hide transformers' progress bars inside the block (unless :func:`show_loading_progress`).

    Re-entrant and thread-safe: overlapping blocks share one switch, restored when the last one ends, so a
    load in one thread never turns the bars back on under another's.
    """
    global _depth, _was_enabled
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover - every loader here depends on transformers
        yield
        return
    if show_loading_progress():
        yield
        return
    with _lock:
        if _depth == 0:
            _was_enabled = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _was_enabled:
                hf_logging.enable_progress_bar()
