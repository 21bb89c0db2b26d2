"""What a reranker family is, as data: prompt pieces, score head, calibration, defaults and known checkpoints.

A family is the published recipe a group of checkpoints is scored with. The scoring core interprets these
declarations (``zerank_integrations.scoring``); nothing here imports torch, so the server, remote scorers and
the vLLM helper can read a family's calibration without loading a model.

Every family builds one input per (query, document, instruction) from token pieces::

    head + query_segment + middle + document_segment + tail

Each piece is tokenized on its own, exactly as the family's reference recipe tokenizes it (``joint_segments``
marks recipes that tokenize the query and document segments as one string; the core then checks on probe
pairs that the split equals the joint tokenization). Causal-LM families read the score at the last position
through ``head``; sequence classifiers through their own classification head.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from zerank_integrations.base import Calibration


@dataclass(frozen=True)
class TokenLogit:
    """Score = the logit of one vocabulary token at the last position (sentence-transformers'
    ``LogitScore(true_token_id)``). Projected as one row of the output embedding."""

    token: str

    @property
    def tokens(self) -> tuple[str, ...]:
        return (self.token,)


@dataclass(frozen=True)
class LogitDifference:
    """Score = logit(true) - logit(false), the log-odds of a two-way softmax (``LogitScore(true, false)``).

    Still one projection: ``h · (W[true] - W[false])``, so no vocabulary-wide logits are ever computed.
    """

    true_token: str
    false_token: str

    @property
    def tokens(self) -> tuple[str, ...]:
        return (self.true_token, self.false_token)


@dataclass(frozen=True)
class ClassifierLogit:
    """A ``*ForSequenceClassification`` head: one label -> its logit; two labels -> logit[1] - logit[0]."""

    @property
    def tokens(self) -> tuple[str, ...]:
        return ()


ScoreHead = TokenLogit | LogitDifference | ClassifierLogit


@dataclass(frozen=True)
class PromptFormat:
    """How a family turns (query, document, instruction) into prompt pieces.

    ``query`` / ``with_instruction`` / ``document`` are ``str.format`` patterns (fields ``{query}``,
    ``{instruction}``, ``{document}``). Where the fixed pieces come from is ``pieces``:

    - ``"literal"``: ``head``/``middle``/``tail`` as given, each text tokenized on its own;
    - ``"chat_template"``: the tokenizer's own chat template, rendered with the query segment in the first of
      ``chat_roles`` and the document segment in the second, with ``chat_kwargs`` (the generation prompt);
      each prompt is tokenized as the rendered text would be, so text next to the slots merges as it does
      there;
    - ``"tokenizer_pair"``: the special tokens (and token type ids) of the tokenizer's own pair encoding
      ``tokenizer(query, document)``, as cross-encoders are fed.
    """

    query: str = "{query}"
    document: str = "{document}"
    with_instruction: str | None = None  # None: the family takes no instruction
    default_instruction: str | None = None  # used when the caller gives none
    head: tuple[str, ...] = ()
    middle: tuple[str, ...] = ()
    tail: tuple[str, ...] = ()
    pieces: Literal["literal", "chat_template", "tokenizer_pair"] = "literal"
    chat_roles: tuple[str, str] = ("system", "user")
    strip: bool = False  # strip query, document and instruction before formatting
    joint_segments: bool = False  # the reference tokenizes query segment + middle + document segment as one text
    chat_kwargs: tuple[tuple[str, object], ...] = (("add_generation_prompt", True),)  # for apply_chat_template
    message_format: Literal["flat", "structured"] = "flat"  # message content: a string, or typed text parts
    instruction_keyword: bool = False  # chat_template: the instruction is the template's ``instruction`` variable
    # chat_template recipes: the whole prompt the recipe renders for plain texts ({query}, {document}), against
    # which a checkpoint's own pair template is checked
    expected_text: str | None = None
    # How an over-long query segment is shortened: "text" cuts the query text at a token boundary and
    # re-renders the segment (wrappers and instructions survive); "tokens" cuts the segment's token ids.
    query_truncation: Literal["text", "tokens"] = "text"


@dataclass(frozen=True)
class KnownModel:
    """A published checkpoint of a family, for detection by hub id and the README's model table."""

    hub_id: str
    parameters: str
    license: str
    license_source: str  # where the licence was read
    checked: str  # when it was read (YYYY-MM-DD)
    aliases: tuple[str, ...] = ()  # older hub ids that redirect here


@dataclass(frozen=True)
class RerankerFamily:
    """One reranker recipe, as data. See the module docstring for how the core reads it."""

    name: str
    summary: str
    architecture: Literal["causal-lm", "sequence-classification"]
    head: ScoreHead
    calibration: Calibration
    prompt: PromptFormat = field(default_factory=PromptFormat)
    default_max_length: int | None = None  # tokens per prompt; None: the checkpoint's own limit
    max_length_counts_template: bool = True  # False: the card's max_length excludes head and tail pieces
    query_share: tuple[int, int] = (3, 4)  # the query segment may take at most this share of the content room
    models: tuple[KnownModel, ...] = ()
    hub_id_prefixes: tuple[str, ...] = ()  # other checkpoints of the family recognised by hub id
    vllm_hf_overrides: dict[str, object] | None = field(default=None, hash=False, compare=False)
    reference: str = ""  # where the recipe comes from
    # How the query message carries an instruction when a checkpoint's own ("query", "document") chat template
    # has no ``instruction`` variable; None: such a checkpoint takes instructions only through its template.
    pair_template_instruction: str | None = None
    # A publisher's own config ``model_type`` (remote code) -> the transformers model type its weights are, so
    # such a checkpoint loads as that architecture without its code ever running.
    remote_code_bases: dict[str, str] = field(default_factory=dict, hash=False, compare=False)

    @property
    def accepts_instruction(self) -> bool:
        return self.prompt.with_instruction is not None

    @property
    def default_instruction(self) -> str | None:
        return self.prompt.default_instruction

    def pair_template_format(
        self, chat_kwargs: tuple[tuple[str, object], ...], message_format: str, *, takes_instruction: bool
    ) -> PromptFormat:
        """The prompt of a checkpoint that ships a chat template for ("query", "document") messages: that
        template renders the texts as given (sentence-transformers' ``CrossEncoder`` path), with the
        publisher's settings; an instruction goes where the template takes it, else into the query message."""
        with_instruction = "{query}" if takes_instruction else self.pair_template_instruction
        return PromptFormat(
            query="{query}",
            document="{document}",
            with_instruction=with_instruction,
            pieces="chat_template",
            chat_roles=("query", "document"),
            chat_kwargs=chat_kwargs,
            message_format="structured" if message_format == "structured" else "flat",
            instruction_keyword=takes_instruction,
            query_truncation=self.prompt.query_truncation,
        )

    def known_hub_ids(self) -> tuple[str, ...]:
        return tuple(name for model in self.models for name in (model.hub_id, *model.aliases))
