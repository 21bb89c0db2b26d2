"""Per-user folders, one rule per platform: where the embedded database lives and where unpacked files are cached."""

from __future__ import annotations

import os
import sys
from pathlib import Path

APP_FOLDER = "zerank-integrations"


def _base(kind: str) -> Path:
    """Linux: ``$XDG_DATA_HOME`` / ``$XDG_CACHE_HOME`` (``~/.local/share``, ``~/.cache``); macOS:
    ``~/Library/Application Support`` / ``~/Library/Caches``; Windows: ``%LOCALAPPDATA%`` for both."""
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    if sys.platform == "darwin":
        return Path.home() / "Library" / ("Caches" if kind == "cache" else "Application Support")
    if kind == "cache":
        return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")


def user_data_dir() -> Path:
    """This package's per-user data folder (e.g. ``~/.local/share/zerank-integrations``)."""
    return _base("data") / APP_FOLDER


def user_cache_dir() -> Path:
    """This package's per-user cache folder (e.g. ``~/.cache/zerank-integrations``)."""
    return _base("cache") / APP_FOLDER
