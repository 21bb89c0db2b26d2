"""Errors a user can act on: the CLI prints the message on one line and exits non-zero, no traceback."""

from __future__ import annotations


class RetrievalError(Exception):
    """Base class: the message alone says what is wrong and what to do about it."""


class CorpusError(RetrievalError, ValueError):
    """A corpus, query or qrels file is missing, unreadable or malformed (message names file and line)."""


class ChromaConnectionError(RetrievalError, ConnectionError):
    """The Chroma server cannot be reached, or the local Chroma folder cannot be opened."""


class CollectionNotFoundError(RetrievalError, LookupError):
    """The named collection does not exist (message lists the ones that do)."""


class EmbedderMismatchError(RetrievalError, ValueError):
    """A collection is queried or extended with a different embedding model than it was built with."""


class EmbeddingModelError(RetrievalError, RuntimeError):
    """The embedding model cannot be loaded (wrong name, missing files, no network for a hub id)."""


class CollectionNameError(RetrievalError, ValueError):
    """A collection name Chroma would refuse (message says which rule it breaks)."""


class EvaluationSetupError(RetrievalError, ValueError):
    """A collection cannot be evaluated as asked (e.g. it holds documents from elsewhere); nothing was written."""
