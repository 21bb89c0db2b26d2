"""What a checkpoint says about itself, read once from its files: its architecture, its sentence-transformers
modules (score head, chat-template settings, maximum length) and its chat template.

Detection (``families.detection``) and the prompt the core builds read only this description, so a new
published layout is a change here (which file says what), not in the loader. Nothing here imports torch or
transformers: the files are read through a ``read_text(filename) -> str | None`` callable (a local folder or
the Hub), and every value is kept as the publisher wrote it.

Sources for the sentence-transformers files: sentence-transformers 6.3 ``base/modules/transformer.py``
(``sentence_bert_config.json``: ``transformer_task``, ``modality_config``, ``processing_kwargs``) and
``cross_encoder/modules/logit_score.py`` (``1_LogitScore/config.json``: ``true_token_id``, ``false_token_id``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

LOGIT_SCORE_TYPE = "LogitScore"
# Keys of ``processing_kwargs["chat_template"]`` that sentence-transformers takes for itself instead of passing
# them to ``apply_chat_template`` (transformer.py: the size kwargs move to the tokenizer call; restore_suffix
# is its own truncation flag).
_NOT_TEMPLATE_KWARGS = frozenset({"padding", "truncation", "max_length", "return_tensors", "restore_suffix"})
# sentence-transformers switches messages to the structured form ({"type": "text", "text": ...} parts) when the
# template reads any of these (base/modality.py, ``_infer_format``).
_STRUCTURED_PATTERNS = ("content[0]", ".type", "'type'", '"type"', "item.type", "message.content[")

MessageFormat = Literal["flat", "structured"]


class CheckpointReadError(ValueError):
    """A file of the checkpoint exists but cannot be read as what its name says."""


@dataclass(frozen=True)
class LogitScoreHead:
    """A sentence-transformers ``LogitScore`` module: score = logit(true) [- logit(false)] at the last position."""

    true_token_id: int
    false_token_id: int | None


@dataclass(frozen=True)
class ChatSettings:
    """How the checkpoint's publisher renders a (query, document) pair with its chat template."""

    kwargs: tuple[tuple[str, Any], ...]  # passed to apply_chat_template (e.g. add_generation_prompt=True)
    message_format: MessageFormat  # message content as a string ("flat") or a list of typed parts
    source: str  # where these settings were read

    def as_dict(self) -> dict[str, Any]:
        return dict(self.kwargs)


@dataclass(frozen=True)
class CheckpointFacts:
    """Everything the loader and detection need to know from a checkpoint's files, before any weights."""

    name: str  # how the caller named it (path or hub id)
    hub_id: str | None  # the hub id it is known by (a hub id, or a Hugging Face cache snapshot's owner/name)
    architectures: tuple[str, ...] = ()
    model_type: str | None = None
    remote_code: bool = False  # config.json has an ``auto_map`` (its code is never run here)
    sentence_transformers: bool = False  # ships modules.json
    logit_score: LogitScoreHead | None = None
    chat: ChatSettings | None = None  # how a pair is rendered, when the checkpoint says (sentence-transformers)
    max_seq_length: int | None = None  # sentence_bert_config.json: where sentence-transformers truncates
    tokenizer_remote_code: bool = False  # tokenizer_config.json names a class of the checkpoint's own code
    config: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)  # config.json as written

    @property
    def architecture(self) -> str:
        return self.architectures[0] if self.architectures else ""

    @classmethod
    def read(cls, name: str, hub_id: str | None, read_text: Callable[[str], str | None]) -> CheckpointFacts:
        """Read the description through ``read_text`` (``None`` for a file the checkpoint does not have)."""

        def load(filename: str) -> Any:
            text = read_text(filename)
            if text is None:
                return None
            try:
                return json.loads(text)
            except ValueError as error:
                raise CheckpointReadError(f"cannot read {filename}: {error}") from error

        config = _mapping(load("config.json"), "config.json")
        modules = load("modules.json")
        if modules is not None and not isinstance(modules, list):
            raise CheckpointReadError("modules.json is not a list of modules")
        logit_module = _logit_score_module(modules)
        logit_config = None
        if logit_module is not None:
            path = f"{logit_module.get('path') or ''}/config.json".lstrip("/")
            logit_config = _mapping(load(path), path)
        sentence_bert = _mapping(load("sentence_bert_config.json"), "sentence_bert_config.json")
        tokenizer_config = _mapping(load("tokenizer_config.json"), "tokenizer_config.json")
        template = read_text("chat_template.jinja") or _inline_template(tokenizer_config.get("chat_template"))
        modality = _mapping(sentence_bert.get("modality_config"), "sentence_bert_config.json modality_config")
        message = modality.get("message")
        chat = None
        if modules is not None and isinstance(message, Mapping):  # pairs become ("query", "document") messages
            processing = _mapping(sentence_bert.get("processing_kwargs"), "processing_kwargs")
            kwargs = _mapping(processing.get("chat_template"), "processing_kwargs.chat_template")
            chat = ChatSettings(
                kwargs=tuple(sorted((k, v) for k, v in kwargs.items() if k not in _NOT_TEMPLATE_KWARGS)),
                message_format=_message_format(message.get("format"), template),
                source="sentence_bert_config.json",
            )
        max_seq_length = sentence_bert.get("max_seq_length")
        return cls(
            name=name,
            hub_id=hub_id,
            architectures=tuple(str(a) for a in config.get("architectures") or ()),
            model_type=str(config["model_type"]) if config.get("model_type") else None,
            remote_code=bool(config.get("auto_map")),
            sentence_transformers=modules is not None,
            logit_score=_logit_score(logit_config) if logit_module is not None else None,
            chat=chat,
            max_seq_length=max_seq_length if isinstance(max_seq_length, int) and max_seq_length > 0 else None,
            tokenizer_remote_code=bool(tokenizer_config.get("auto_map")),
            config=config,
        )


def _mapping(value: Any, what: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise CheckpointReadError(f"{what} is not a JSON object")
    return value


def _logit_score_module(modules: list[Any] | None) -> Mapping[str, Any] | None:
    for module in modules or []:
        if isinstance(module, Mapping) and str(module.get("type", "")).rsplit(".", 1)[-1] == LOGIT_SCORE_TYPE:
            return module
    return None


def _logit_score(config: Mapping[str, Any]) -> LogitScoreHead:
    # sentence-transformers' LogitScore defaults: without a config the module reads "yes" / "no"; a config
    # that names ids must name them as integers.
    true_id, false_id = config.get("true_token_id"), config.get("false_token_id")
    if not isinstance(true_id, int) or not (false_id is None or isinstance(false_id, int)):
        raise CheckpointReadError(
            f"the LogitScore config names token ids ({true_id!r}, {false_id!r}); they must be integers "
            "(the false one may be null)"
        )
    return LogitScoreHead(true_id, false_id)


def _inline_template(value: Any) -> str | None:
    """tokenizer_config.json's ``chat_template``: a string, or named templates (the "default" one)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        named = {item.get("name"): item.get("template") for item in value if isinstance(item, Mapping)}
        found = named.get("default")
        return found if isinstance(found, str) else None
    return None


def _message_format(declared: Any, template: str | None) -> MessageFormat:
    if declared in ("flat", "structured"):
        return declared
    if template and any(pattern in template for pattern in _STRUCTURED_PATTERNS):
        return "structured"
    return "flat"
