"""Files that ship inside the package, unpacked on demand: the Qwen3 tokenizer behind ``make-test-model``.

The tokenizer is stored compressed (``data/tokenizers/qwen3.tar.xz``, ~1.3 MB instead of 4.4 MB) and unpacked
once per user into a cache folder named after the archive's hash. Unpacking goes to a private temporary folder
beside the target and is published with one ``os.rename``, so concurrent threads and processes either win the
rename or find the finished folder: nobody ever sees half a tokenizer.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile
import tempfile
import threading
from importlib import resources
from pathlib import Path

from zerank_integrations.paths import user_cache_dir

CACHE_DIR_ENV = "ZERANK_CACHE_DIR"
QWEN3_TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json")
_QWEN3_ARCHIVE = "qwen3.tar.xz"
_lock = threading.Lock()


def cache_dir() -> Path:
    """The per-user cache folder: ``$ZERANK_CACHE_DIR``, else the platform's cache folder + ``zerank-integrations``."""
    env = os.environ.get(CACHE_DIR_ENV)
    if env:
        return Path(env).expanduser()
    return user_cache_dir()


def _archive_bytes() -> bytes:
    return resources.files("zerank_integrations").joinpath("data", "tokenizers", _QWEN3_ARCHIVE).read_bytes()


def qwen3_tokenizer(root: str | os.PathLike[str] | None = None) -> Path:
    """The folder of the bundled Qwen3 tokenizer (Apache-2.0), unpacked under ``root`` (default :func:`cache_dir`).

    Safe to call from many threads and processes at once; later calls return the existing folder at once.
    """
    data = _archive_bytes()
    digest = hashlib.sha256(data).hexdigest()[:16]
    base = Path(root).expanduser() if root is not None else cache_dir()
    target = base / "tokenizers" / f"qwen3-{digest}"
    if _complete(target):
        return target
    with _lock:
        if _complete(target):
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".qwen3-", dir=target.parent))
        try:
            _unpack(data, staging)
            try:
                os.rename(staging, target)
            except OSError:
                if not _complete(target):  # someone else's rename won only if their folder is whole
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in QWEN3_TOKENIZER_FILES)


def _unpack(data: bytes, into: Path) -> None:
    """Extract exactly the expected plain files (no paths, links or anything else an archive could smuggle)."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:xz") as archive:
        for member in archive.getmembers():
            if member.name not in QWEN3_TOKENIZER_FILES or not member.isfile():
                raise ValueError(f"unexpected entry {member.name!r} in the bundled tokenizer archive")
            source = archive.extractfile(member)
            assert source is not None
            with open(into / member.name, "wb") as out:
                shutil.copyfileobj(source, out)
    missing = [name for name in QWEN3_TOKENIZER_FILES if not (into / name).is_file()]
    if missing:
        raise ValueError(f"the bundled tokenizer archive lacks {', '.join(missing)}")
