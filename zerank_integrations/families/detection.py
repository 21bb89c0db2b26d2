"""Which family a checkpoint belongs to, from what the checkpoint says about itself.

Order: the architecture (``*ForSequenceClassification`` is a cross-encoder), then a sentence-transformers
``LogitScore`` module (its token ids name the score head, which each causal family declares), then the known
hub ids of each family. A causal LM that none of these identifies is refused: guessing a prompt format would
give silently wrong scores; so is an architecture that exists only as the checkpoint's own code. Pure
functions over what ``families.checkpoint.CheckpointFacts`` read from the checkpoint.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import PurePath

from zerank_integrations.families.base import ClassifierLogit, LogitDifference, RerankerFamily, TokenLogit
from zerank_integrations.families.checkpoint import CheckpointFacts

_CACHE_SNAPSHOT = re.compile(r"^models--(?P<owner>[^/\\]+?)--(?P<name>[^/\\]+)$")


class FamilyDetectionError(ValueError):
    """The checkpoint does not say which family it is; the message names the families and ``family=``."""


def hub_id_from_path(path: str) -> str | None:
    """``owner/name`` for a folder inside the Hugging Face cache (``.../models--owner--name/snapshots/<rev>``)."""
    parts = PurePath(path).parts
    for index, part in enumerate(parts):
        match = _CACHE_SNAPSHOT.match(part)
        if match and index + 2 < len(parts) and parts[index + 1] == "snapshots":
            return f"{match['owner']}/{match['name']}"
    return None


def family_for_hub_id(model_id: str | None, families: Iterable[RerankerFamily]) -> RerankerFamily | None:
    """The family that publishes ``model_id`` (exact id or alias first, then the family's id prefixes)."""
    if not model_id:
        return None
    families = list(families)
    lowered = model_id.lower()
    for family in families:
        if lowered in (name.lower() for name in family.known_hub_ids()):
            return family
    for family in families:
        if any(lowered.startswith(prefix.lower()) for prefix in family.hub_id_prefixes):
            return family
    return None


def family_for_logit_score(
    true_token_id: int,
    false_token_id: int | None,
    families: Iterable[RerankerFamily],
    token_ids: Callable[[str], list[int]],
) -> RerankerFamily | None:
    """The causal family whose score head reads exactly these token ids."""
    for family in families:
        head = family.head
        if isinstance(head, TokenLogit):
            expected: tuple[int | None, int | None] = (_single(token_ids(head.token)), None)
        elif isinstance(head, LogitDifference):
            expected = (_single(token_ids(head.true_token)), _single(token_ids(head.false_token)))
        else:
            continue
        if expected == (true_token_id, false_token_id):
            return family
    return None


def detect_family(
    facts: CheckpointFacts, families: Iterable[RerankerFamily], token_ids: Callable[[str], list[int]]
) -> tuple[RerankerFamily, str]:
    """(family, how it was told) for a checkpoint, from its description alone, or ``FamilyDetectionError``.

    ``token_ids`` is the checkpoint tokenizer's encoding of a string (a LogitScore head names token ids).
    """
    families = list(families)
    names = ", ".join(repr(f.name) for f in families)
    architecture = facts.architecture
    if facts.remote_code and not _transformers_knows(facts.model_type):
        for family in families:
            if facts.model_type in family.remote_code_bases:
                base = family.remote_code_bases[facts.model_type]
                return family, f"config.json model_type {facts.model_type!r} (its own code, read as {base})"
        raise FamilyDetectionError(
            f"the checkpoint's config.json names {architecture or 'a custom architecture'} (model_type "
            f"{facts.model_type!r}), which runs only with the checkpoint's own code; remote code is never run here. "
            "Use a revision of the model that loads without trust_remote_code"
        )
    if architecture.endswith("ForSequenceClassification"):
        for family in families:
            if isinstance(family.head, ClassifierLogit):
                return family, f"config.json architecture {architecture}"
    if facts.logit_score is not None:
        true_id, false_id = facts.logit_score.true_token_id, facts.logit_score.false_token_id
        family = family_for_logit_score(true_id, false_id, families, token_ids)
        if family is not None:
            return family, f"sentence-transformers LogitScore({true_id}, {false_id})"
        raise FamilyDetectionError(
            f"the checkpoint's sentence-transformers LogitScore reads token ids ({true_id}, {false_id}), which "
            f"matches no supported family's score head; pass family= (one of {names}) if its prompt is one of "
            "theirs"
        )
    family = family_for_hub_id(facts.hub_id, families)
    if family is not None:
        return family, f"known hub id {facts.hub_id}"
    kind = architecture or "an unknown architecture"
    raise FamilyDetectionError(
        f"cannot tell which reranker family this checkpoint ({kind}) belongs to: it has no sentence-transformers "
        f"LogitScore module and is not a known hub id. Pass family= (one of {names}); scoring it with a guessed "
        "prompt would give silently wrong scores"
    )


def _transformers_knows(model_type: str | None) -> bool:
    """Whether transformers itself implements ``model_type`` (its config table; no model code is imported)."""
    if not model_type:
        return False
    try:
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    except ImportError:  # pragma: no cover - transformers is a dependency
        return True
    return model_type in CONFIG_MAPPING_NAMES


def _single(ids: list[int]) -> int | None:
    return ids[0] if len(ids) == 1 else None
