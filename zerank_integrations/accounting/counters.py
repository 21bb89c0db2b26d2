"""Token counters: the LLM's own tokenizer where one is available, and whether a count is exact.

A counter counts plain text (``count``) and a whole chat request (``count_messages``) the way the LLM's server
does:

* :class:`TiktokenCounter` - OpenAI models. Text with ``encode_ordinary``; a chat request with OpenAI's
  documented rule (cookbook "How to count tokens with tiktoken"): 3 tokens per message, the tokens of every
  field's value (role, content, name), 1 more per ``name``, and 3 for the reply's priming
  (``<|start|>assistant<|message|>``). Exact when the encoding is the model's own (tiktoken's model table);
  a stand-in for anything else (Claude, Gemini), then flagged as an approximation.
* :class:`HFTokenizerCounter` - open models (Qwen, Llama, Mistral, Gemma...) served by vLLM, Ollama, TGI,
  llama.cpp or ``transformers serve``: the model's own Hugging Face tokenizer, loaded offline (a local folder,
  or a hub id already in the local cache), and its chat template for a chat request, exactly as these servers
  render it (generation prompt on). Exact.

:func:`resolve_counter` picks one from ``llm=``/``encoding=``/``tokenizer=``; well-known open model names
(Ollama tags such as ``qwen3:8b``) map to their tokenizer's hub id the way ``gpt-4o`` maps to o200k_base.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from zerank_integrations.accounting.encodings import encoding_name_for_llm, get_encoding

__all__ = [
    "OPENAI_CHAT_RULE",
    "OPEN_MODEL_TOKENIZERS",
    "HFTokenizerCounter",
    "TiktokenCounter",
    "TokenCounter",
    "TokenizerUnavailableError",
    "resolve_counter",
    "tokenizer_for_open_model",
]

Message = Mapping[str, Any]

OPENAI_CHAT_RULE = {"tokens_per_message": 3, "tokens_per_name": 1, "reply_priming": 3}
"""OpenAI's documented chat-request overhead for tiktoken chat models (gpt-3.5-turbo-0613 onwards, gpt-4,
gpt-4o, gpt-4.1, o-series), from the OpenAI cookbook "How to count tokens with tiktoken"."""

# Well-known open model names (Ollama tags, short names) -> the hub repository holding their tokenizer and
# chat template. Sizes of one family share the tokenizer; a hub id ("org/name") or a local folder is used as is.
OPEN_MODEL_TOKENIZERS: dict[str, str] = {
    "qwen3": "Qwen/Qwen3-8B",
    "qwen2.5": "Qwen/Qwen2.5-7B-Instruct",
    "qwen2.5-coder": "Qwen/Qwen2.5-Coder-7B-Instruct",
    "qwq": "Qwen/QwQ-32B",
    "llama3.1": "meta-llama/Llama-3.1-8B-Instruct",
    "llama3.2": "meta-llama/Llama-3.2-3B-Instruct",
    "llama3.3": "meta-llama/Llama-3.3-70B-Instruct",
    "llama3": "meta-llama/Meta-Llama-3-8B-Instruct",
    "mistral": "mistralai/Mistral-7B-Instruct-v0.3",
    "mistral-nemo": "mistralai/Mistral-Nemo-Instruct-2407",
    "mixtral": "mistralai/Mixtral-8x7B-Instruct-v0.1",
    "gemma3": "google/gemma-3-4b-it",
    "gemma2": "google/gemma-2-9b-it",
    "phi4": "microsoft/phi-4",
    "phi3": "microsoft/Phi-3-mini-4k-instruct",
    "deepseek-r1": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
    "gpt-oss": "openai/gpt-oss-20b",
}


class TokenizerUnavailableError(RuntimeError):
    """The LLM's tokenizer cannot be loaded here (not local, not in the cache, no chat template...)."""


@runtime_checkable
class TokenCounter(Protocol):
    """Counts text and chat requests as one LLM bills them; ``exact`` says whether it is that LLM's tokenizer."""

    @property
    def name(self) -> str: ...

    @property
    def exact(self) -> bool: ...

    def count(self, text: str) -> int: ...

    def count_messages(self, messages: Sequence[Message]) -> int: ...


class _NamedCounter:
    """What every counter reports about itself: its name and whether it is the LLM's own tokenizer."""

    _name: str
    _exact: bool

    @property
    def name(self) -> str:
        return self._name

    @property
    def exact(self) -> bool:
        return self._exact

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._name!r}, exact={self._exact})"


class TiktokenCounter(_NamedCounter):
    """A tiktoken encoding; chat requests by OpenAI's documented per-message rule."""

    def __init__(self, encoding: str, *, exact: bool) -> None:
        self._name = encoding
        self._encoding = get_encoding(encoding)
        self._exact = bool(exact)
        self.pattern = getattr(self._encoding, "_pat_str", None)
        """The pre-tokenizer regex (lets the ledger sum cached per-text counts where that is provably exact)."""

    def count(self, text: str) -> int:
        return len(self._encoding.encode_ordinary(text))

    def count_messages(self, messages: Sequence[Message]) -> int:
        rule = OPENAI_CHAT_RULE
        total = rule["reply_priming"]
        for index, message in enumerate(messages):
            total += rule["tokens_per_message"]
            for key, value in message.items():
                if not isinstance(value, str):
                    raise TypeError(f"message {index}: {key!r} is {type(value).__name__}, expected str")
                total += self.count(value)
                if key == "name":
                    total += rule["tokens_per_name"]
        return total


_TOKENIZERS: dict[str, Any] = {}
_tokenizer_lock = threading.Lock()


def _load_hf_tokenizer(source: str) -> Any:
    """``AutoTokenizer`` from a local folder or the local hub cache only: never downloads, never hangs."""
    with _tokenizer_lock:
        if source in _TOKENIZERS:
            return _TOKENIZERS[source]
        try:
            from transformers import AutoTokenizer
        except ImportError as exc:  # pragma: no cover - transformers comes with the reranker
            raise TokenizerUnavailableError(f"counting with tokenizer {source!r} needs transformers") from exc
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True, trust_remote_code=False)
        except Exception as exc:
            raise TokenizerUnavailableError(
                f"cannot load the tokenizer {source!r} offline ({type(exc).__name__}: {str(exc).splitlines()[0]}). "
                "Pass a local folder holding tokenizer files, or download it once (`hf download "
                f"{source} --include 'tokenizer*' '*.json' '*.txt' '*.jinja'`); counts are never guessed"
            ) from None
        _TOKENIZERS[source] = tokenizer
        return tokenizer


class HFTokenizerCounter(_NamedCounter):
    """A Hugging Face tokenizer (hub id, local folder or loaded tokenizer); chat requests by its chat template."""

    def __init__(self, tokenizer: Any, *, exact: bool = True, chat_template_kwargs: Mapping[str, Any] | None = None):
        if isinstance(tokenizer, (str, os.PathLike)):
            source = os.fspath(tokenizer)
            path = Path(source).expanduser()
            if path.is_dir():
                source = str(path.resolve())
            self._name = source
            self._tokenizer = _load_hf_tokenizer(source)
        elif callable(getattr(tokenizer, "apply_chat_template", None)):
            self._tokenizer = tokenizer
            self._name = str(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__)
        else:
            raise TypeError(
                f"tokenizer must be a hub id, a folder or a transformers tokenizer, not {type(tokenizer).__name__}"
            )
        self._exact = bool(exact)
        self._chat_kwargs = dict(chat_template_kwargs or {})
        self._lock = threading.Lock()  # a Rust tokenizer object is not safe to share across threads

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    def count(self, text: str) -> int:
        with self._lock:
            return len(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    def count_messages(self, messages: Sequence[Message]) -> int:
        if not getattr(self._tokenizer, "chat_template", None):
            raise TokenizerUnavailableError(
                f"tokenizer {self._name!r} has no chat template, so a chat request cannot be counted; use a chat "
                "model's tokenizer, or count a completion prompt"
            )
        with self._lock:  # as chat servers do: the template with the generation prompt, tokenized
            ids = self._tokenizer.apply_chat_template(
                [dict(m) for m in messages],
                add_generation_prompt=True,
                tokenize=True,
                return_dict=True,
                **self._chat_kwargs,
            )
        return len(ids["input_ids"])


def tokenizer_for_open_model(llm: str) -> str | None:
    """The tokenizer source of an open model name: a local folder or hub id as is, an Ollama tag via the table."""
    if Path(llm).expanduser().is_dir():
        return llm
    if "/" in llm and not llm.startswith(("/", ".")):
        return llm  # a hub id: the model repository holds its tokenizer
    family = llm.split(":", 1)[0].lower()
    return OPEN_MODEL_TOKENIZERS.get(family)


def resolve_counter(llm: str | None = None, *, encoding: str | None = None, tokenizer: Any = None) -> TokenCounter:
    """The counter for an LLM: ``tokenizer`` (HF id, folder, tokenizer or counter) > ``encoding`` (tiktoken) >
    ``llm`` (tiktoken's model table, then open models' tokenizers). ``encoding`` for an LLM it does not belong
    to is a stand-in: flagged inexact."""
    if tokenizer is not None:
        if isinstance(tokenizer, TokenCounter):
            return tokenizer
        return HFTokenizerCounter(tokenizer)
    if encoding is not None:
        own = None
        if llm is not None:
            try:
                own = encoding_name_for_llm(llm)
            except ValueError:
                own = None
        return TiktokenCounter(encoding, exact=own == encoding)
    if llm is None:
        raise ValueError("a token counter needs llm=, encoding= or tokenizer=")
    try:
        return TiktokenCounter(encoding_name_for_llm(llm), exact=True)
    except ValueError as not_openai:
        source = tokenizer_for_open_model(llm)
        if source is None:
            raise not_openai from None
        return HFTokenizerCounter(source)
