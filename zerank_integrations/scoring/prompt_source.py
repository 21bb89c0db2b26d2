"""Which prompt a checkpoint is scored with: its publisher's own pair template, or its family's recipe.

A checkpoint that ships a chat template for ("query", "document") messages (zerank-2-reranker for
sentence-transformers 5.4+) is scored as that template renders the texts, with the publisher's settings
(``sentence_bert_config.json``'s ``processing_kwargs``): that is what ``CrossEncoder(...).predict``, the path its
model card documents, computes, surrounding whitespace included. The template must still render the family's
prompt for plain texts; one that renders another prompt is refused, showing where the two part, unless the
caller named the family (then the family's recipe is used). Checkpoints without such a template (zerank-1,
Qwen3-Reranker's and mxbai-rerank's hub repositories, cross-encoders) are scored with the family's published
recipe.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from zerank_integrations.families import ChatSettings, CheckpointFacts, PromptFormat, RerankerFamily
from zerank_integrations.scoring.prompts import PromptTemplate, PromptTemplateError, Tokens, render_chat
from zerank_integrations.scoring.source import ModelLoadError

logger = logging.getLogger(__name__)

CHECKPOINT_TEMPLATE = "the checkpoint's chat template"
FAMILY_RECIPE = "the family's recipe"
# What the family's prompt must be for plain texts, and (all probes) for texts with surrounding whitespace.
_PLAIN_PROBES = (
    ("What is the boiling point of water?", "Water boils at 100 °C at sea level.", None),
    ("q", "", None),
)
_PADDED_PROBES = (
    ("  padded query ", "\n\nA document with a leading blank line.\n", None),
    ("\tWhy?\n", "  two spaces, then text  ", None),
)
_SHOWN = 40  # characters shown on each side of a mismatch


def choose_template(
    name: str, family: RerankerFamily, facts: CheckpointFacts, tokens: Tokens, *, named_by_caller: bool
) -> PromptTemplate:
    """The prompt template ``family`` scores this checkpoint with (see the module docstring)."""
    if family.prompt.pieces == "tokenizer_pair":  # cross-encoders: the tokenizer's own pair encoding, always
        return _build(name, family, tokens)
    found = _pair_template(family, facts, tokens)
    if found is None:
        return _build(name, family, tokens)
    pair_format, settings = found
    try:
        own: PromptTemplate | None = PromptTemplate.build(family, tokens, pair_format, source=CHECKPOINT_TEMPLATE)
    except PromptTemplateError:
        own = None  # the template changes the texts (strips them, say): it is the family's recipe or nothing
    # A recipe defined through a chat template states its text; the others render it (built once, here).
    recipe = _build(name, family, tokens) if family.prompt.expected_text is None else None
    probes = _PLAIN_PROBES if own is not None else _PLAIN_PROBES + _PADDED_PROBES
    for query, document, instruction in probes:
        theirs = render_chat(tokens.tokenizer, pair_format, query, document, instruction)
        ours = _recipe_text(family, recipe, tokens, query, document)
        if theirs != ours:
            return _mismatch(name, family, tokens, named_by_caller, theirs, ours, recipe)
    if own is not None:
        logger.info("model %s: scored with its own chat template (%s)", name, settings.source)
        return own
    return recipe or _build(name, family, tokens)


def _pair_template(
    family: RerankerFamily, facts: CheckpointFacts, tokens: Tokens
) -> tuple[PromptFormat, ChatSettings] | None:
    """The checkpoint's own prompt, when its chat template takes ("query", "document") messages, rendered as its
    publisher says (sentence-transformers settings; without them, with the generation prompt)."""
    template = getattr(tokens.tokenizer, "chat_template", None)
    if not template:
        return None
    settings = facts.chat or ChatSettings(
        kwargs=(("add_generation_prompt", True),), message_format="flat", source="no sentence-transformers files"
    )
    pair_format = family.pair_template_format(
        settings.kwargs, settings.message_format, takes_instruction=_declares_instruction(template)
    )
    query, document = "\ue010probe-query\ue011", "\ue012probe-document\ue013"
    try:
        rendered = render_chat(tokens.tokenizer, pair_format, query, document)
    except Exception:  # a template that cannot render these roles (the stock Qwen3 one raises): none
        return None
    if not (isinstance(rendered, str) and query in rendered and document in rendered):
        return None
    return pair_format, settings


def _recipe_text(
    family: RerankerFamily, recipe: PromptTemplate | None, tokens: Tokens, query: str, document: str
) -> str:
    """The family's prompt for (query, document) as text, as its published recipe renders it."""
    fmt = family.prompt
    if fmt.strip:
        query, document = query.strip(), document.strip()
    if recipe is None:
        assert fmt.expected_text is not None
        return fmt.expected_text.format(query=query, document=document)
    text = recipe.reference_text(tokens, query, document, recipe.effective_instruction(None))
    assert text is not None
    return text


def _build(name: str, family: RerankerFamily, tokens: Tokens) -> PromptTemplate:
    try:
        return PromptTemplate.build(family, tokens, source=FAMILY_RECIPE)
    except PromptTemplateError as error:
        raise ModelLoadError(f"model {name!r} as family {family.name!r}: {error}") from error


def _mismatch(
    name: str,
    family: RerankerFamily,
    tokens: Tokens,
    named_by_caller: bool,
    theirs: str,
    ours: str,
    recipe: PromptTemplate | None,
) -> PromptTemplate:
    at = next((i for i, (a, b) in enumerate(zip(theirs, ours, strict=False)) if a != b), min(len(theirs), len(ours)))
    where = (
        f"from character {at} the template renders {theirs[at : at + _SHOWN]!r}, the {family.name} recipe "
        f"{ours[at : at + _SHOWN]!r} (after {theirs[max(0, at - _SHOWN) : at]!r})"
    )
    if named_by_caller:
        logger.warning(
            "model %s: its chat template renders a different prompt than the %s recipe (%s); scoring with the "
            "recipe, as family= asks",
            name,
            family.name,
            where,
        )
        return recipe or _build(name, family, tokens)
    raise ModelLoadError(
        f"model {name!r}: it reads as a {family.name} checkpoint, but its chat template renders a different prompt "
        f"than the {family.name} recipe: {where}. Pass family= to score it with the recipe anyway, or use "
        "sentence-transformers for this model"
    )


def _declares_instruction(template: str) -> bool:
    """Whether the chat template reads an ``instruction`` variable (vLLM's and sentence-transformers' keyword)."""
    import jinja2
    import jinja2.meta

    try:
        environment = jinja2.Environment(extensions=["jinja2.ext.loopcontrols"])
        variables: Iterable[str] = jinja2.meta.find_undeclared_variables(environment.parse(template))
    except jinja2.TemplateError:
        return False
    return "instruction" in set(variables)
