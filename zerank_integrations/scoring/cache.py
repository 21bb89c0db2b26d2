"""A bounded LRU of scores, keyed by a digest of everything that decides a score.

Conversational RAG re-retrieves overlapping chunks for every follow-up question; pipelines re-rank the same
candidates after a retry. Scores are deterministic for a given model, family, settings, instruction, query and
document, so a repeated pair can skip the model entirely. Keys are 16-byte BLAKE2b digests (the texts
themselves are not kept), so memory is bounded by the entry count whatever the document sizes.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import Generic, TypeVar

V = TypeVar("V")


class ScoreCache(Generic[V]):
    """Thread-safe LRU ``digest -> value`` with at most ``size`` entries (``size`` 0 stores nothing)."""

    def __init__(self, size: int, namespace: str) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError(f"cache_size must be an int >= 0, got {size!r}")
        self.size = size
        self._namespace = namespace.encode("utf-8", "surrogatepass")
        self._entries: OrderedDict[bytes, V] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def key(self, *parts: str | None) -> bytes:
        """Digest of the namespace (model, revision, family, settings) and the texts; ``None`` differs from ""."""
        digest = hashlib.blake2b(digest_size=16)
        digest.update(len(self._namespace).to_bytes(8, "little") + self._namespace)
        for part in parts:
            if part is None:
                digest.update(b"\xff" * 8)
                continue
            data = part.encode("utf-8", "surrogatepass")
            digest.update(len(data).to_bytes(8, "little") + data)
        return digest.digest()

    def get(self, key: bytes) -> V | None:
        if not self.size:
            return None
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            return value

    def put_many(self, items: Iterable[tuple[bytes, V]]) -> None:
        if not self.size:
            return
        with self._lock:
            for key, value in items:
                self._entries[key] = value
                self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
