"""The prompt an application builds around the documents, so the ledger can count the whole LLM input.

A :class:`PromptShape` renders (question, documents' text) into the chat messages the LLM receives, from

* a plain format string (``"Context:\\n{context}\\n\\nQuestion: {question}"``), sent as one user message after
  an optional system message;
* a LangChain ``ChatPromptTemplate`` or ``PromptTemplate`` (a string prompt reaches a chat model as one
  user message, as ``ChatOpenAI`` sends it);
* a LlamaIndex prompt such as a query engine's ``text_qa_template`` (variables ``context_str`` and
  ``query_str``; a selector prompt picks the chat or completion form for the ``llm`` it is given).

The variable that receives the documents must be in the template: a template without it would count a
prompt that never changes with reranking, a silent wrong figure.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DEFAULT_RAG_PROMPT", "DEFAULT_RAG_SYSTEM", "PromptShape", "prompt_shape"]

Messages = list[dict[str, str]]

DEFAULT_RAG_SYSTEM = "Answer the question using only the context. If the context does not answer it, say so."
DEFAULT_RAG_PROMPT = "Context:\n{context}\n\nQuestion: {question}"
"""The prompt ``eval``/``demo`` send with ``--llm-url`` (after :data:`DEFAULT_RAG_SYSTEM`)."""

_ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool", "function": "function"}


@dataclass(frozen=True)
class PromptShape:
    """How (question, documents' text) becomes the LLM's input messages."""

    render_messages: Callable[[str, str], Messages]
    documents_variable: str
    query_variable: str | None
    description: str
    variables: Mapping[str, Any] = field(default_factory=dict)

    def render(self, query: str, context: str) -> Messages:
        """The messages sent for ``query`` with ``context`` (the documents, joined as the prompt joins them)."""
        return self.render_messages(query, context)

    # -- constructors --------------------------------------------------------------------------------
    @classmethod
    def from_format_string(
        cls,
        template: str,
        *,
        documents_variable: str = "context",
        query_variable: str | None = "question",
        system: str | None = None,
        **variables: Any,
    ) -> PromptShape:
        """A ``str.format`` template sent as one user message (after ``system`` when given)."""
        if not isinstance(template, str):
            raise TypeError(f"template must be a str, got {type(template).__name__}")
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name}
        _require(documents_variable, names, "format string")
        expected = names - {documents_variable, query_variable}
        missing = sorted(expected - set(variables))
        if missing:
            raise ValueError(f"the format string also needs values for {missing}: pass them as keyword arguments")

        def render(query: str, context: str) -> Messages:
            values = _values(variables, documents_variable, context, query_variable, query)
            messages = [{"role": "system", "content": system}] if system is not None else []
            return [*messages, {"role": "user", "content": template.format(**values)}]

        return cls(render, documents_variable, query_variable, "format string", dict(variables))

    @classmethod
    def from_langchain(
        cls,
        template: Any,
        *,
        documents_variable: str = "context",
        query_variable: str | None = "question",
        **variables: Any,
    ) -> PromptShape:
        """A LangChain ``ChatPromptTemplate``/``PromptTemplate`` (anything with ``format_prompt``)."""
        if not callable(getattr(template, "format_prompt", None)):
            raise TypeError(f"expected a LangChain prompt template, got {type(template).__name__}")
        _require(documents_variable, set(template.input_variables), type(template).__name__)

        def render(query: str, context: str) -> Messages:
            values = _values(variables, documents_variable, context, query_variable, query)
            return [_langchain_message(m) for m in template.format_prompt(**values).to_messages()]

        return cls(render, documents_variable, query_variable, type(template).__name__, dict(variables))

    @classmethod
    def from_llama_index(
        cls,
        template: Any,
        *,
        llm: Any = None,
        documents_variable: str = "context_str",
        query_variable: str | None = "query_str",
        **variables: Any,
    ) -> PromptShape:
        """A LlamaIndex prompt (``text_qa_template``); ``llm`` selects a selector prompt's form, as the engine does."""
        if not callable(getattr(template, "format_messages", None)):
            raise TypeError(f"expected a LlamaIndex prompt template, got {type(template).__name__}")
        selected = template.select(llm) if llm is not None and callable(getattr(template, "select", None)) else template
        _require(documents_variable, set(selected.template_vars), type(template).__name__)

        def render(query: str, context: str) -> Messages:
            values = _values(variables, documents_variable, context, query_variable, query)
            return [_llama_index_message(m) for m in selected.format_messages(**values)]

        return cls(render, documents_variable, query_variable, type(selected).__name__, dict(variables))


def prompt_shape(template: Any, **options: Any) -> PromptShape:
    """A :class:`PromptShape` from a format string, a LangChain or a LlamaIndex template (or a shape as is)."""
    if isinstance(template, PromptShape):
        if options:
            raise ValueError("options apply to templates, not to a PromptShape")
        return template
    if isinstance(template, str):
        return PromptShape.from_format_string(template, **options)
    module = type(template).__module__
    if module.startswith("langchain"):
        return PromptShape.from_langchain(template, **options)
    if module.startswith("llama_index"):
        return PromptShape.from_llama_index(template, **options)
    raise TypeError(
        f"prompt must be a format string, a LangChain or a LlamaIndex prompt template, got {type(template).__name__}"
    )


def _values(
    fixed: Mapping[str, Any], documents_variable: str, context: str, query_variable: str | None, query: str
) -> dict[str, Any]:
    """The template's variables for one call: the fixed ones, the documents and (when it has one) the question."""
    values = {**fixed, documents_variable: context}
    if query_variable is not None:
        values[query_variable] = query
    return values


def _require(variable: str, names: set[str], what: str) -> None:
    if variable not in names:
        raise ValueError(
            f"the {what} has no variable {variable!r} for the documents (its variables: {sorted(names)}); pass "
            "documents_variable= naming the one that receives them"
        )


def _langchain_message(message: Any) -> dict[str, str]:
    role = getattr(message, "role", None) if message.type == "chat" else _ROLES.get(message.type)
    return {"role": str(role or message.type), "content": _text_content(message.content)}


def _llama_index_message(message: Any) -> dict[str, str]:
    role = getattr(message.role, "value", message.role)
    return {"role": str(role), "content": _text_content(message.content)}


def _text_content(content: Any) -> str:
    if isinstance(content, str):
        return content
    raise TypeError(f"only text prompts can be counted, got message content of type {type(content).__name__}")
