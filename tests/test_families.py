"""Every family against an independent reference, on small random checkpoints with the real tokenizers.

The references share no code with the package: each writes its family's published recipe out plainly (the
rendered prompt, one full forward of the model's own head, the card's arithmetic). Where
sentence-transformers can express a family (``LogitScore`` heads, sequence classifiers) its ``CrossEncoder``
loaded straight from the checkpoint is a second reference.
"""

from __future__ import annotations

import math
import random
import shutil
from pathlib import Path

import jinja2
import pytest
import torch
from _references import VLLM_ZERANK2_TEMPLATE, MxbaiPackageReference, Qwen3CardReference, ZerankReference

from zerank_integrations import ZerankScorer
from zerank_integrations.families import FAMILIES as FAMILY_TABLE
from zerank_integrations.families import (
    FAMILY_NAMES,
    CheckpointFacts,
    KnownModel,
    LogitScoreHead,
    detect_family,
    get_family,
    hub_id_from_path,
)
from zerank_integrations.scoring import ModelLoadError
from zerank_integrations.testing import build_test_checkpoint

INSTRUCTION = "Prefer peer-reviewed clinical evidence over opinion."


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


@pytest.fixture(scope="module")
def pairs(passages: list[str]) -> list[tuple[str, str]]:
    """Short and long documents (some over the test max_length), edge cases, three queries."""
    queries = ["What causes cancer?", "  Does vitamin D help bone density?  ", "cell"]
    edge = ["", "x", "Paris", "  leading and trailing spaces  ", "Ünïcödé — «quotes», 日本語, 🙂", "a\nb\n\nc"]
    docs = passages[:12] + edge
    return [(queries[i % 3], doc) for i, doc in enumerate(docs)] + [(queries[0], passages[12] * 3)]


@pytest.fixture(scope="module")
def zerank_reference(family_checkpoints: dict[str, Path]) -> ZerankReference:
    return ZerankReference(family_checkpoints["zerank"])


@pytest.mark.parametrize(("prefix_reuse", "batch_tokens"), [(False, 160), (True, 160), (True, 100_000)])
def test_zerank_equals_reference(
    family_checkpoints: dict[str, Path],
    zerank_reference: ZerankReference,
    pairs: list[tuple[str, str]],
    prefix_reuse: bool,
    batch_tokens: int,
) -> None:
    max_length = 160
    scorer = ZerankScorer(
        str(family_checkpoints["zerank"]), max_length=max_length, batch_tokens=batch_tokens, prefix_reuse=prefix_reuse
    )
    long_query = "which treatments " + "reduce inflammation and " * 70 + "pain?"  # over the query's share
    items = [(q, d, None) for q, d in pairs] + [(q, d, INSTRUCTION) for q, d in pairs[:8]]
    items += [(long_query, d, None) for _, d in pairs[0:3]]
    random.Random(batch_tokens + prefix_reuse).shuffle(items)
    expected = [zerank_reference.raw(q, d, i, max_length) for q, d, i in items]
    with pytest.warns(UserWarning, match="shortened"):
        details = scorer.score_pairs_details(items)
    assert [d.raw for d in details] == pytest.approx(expected, abs=1e-4)
    assert [d.probability for d in details] == pytest.approx([sigmoid(e / 5) for e in expected], abs=1e-5)
    truncated = sum(len(zerank_reference.ids(q, d, i)) > max_length for q, d, i in items)
    assert truncated >= 5 and scorer.stats.truncated_pairs == truncated


def test_zerank_prompt_without_instruction_is_unchanged(
    family_checkpoints: dict[str, Path], zerank_reference: ZerankReference
) -> None:
    """No instruction (or a blank one): byte for byte the plain zerank-2 prompt."""
    scorer = ZerankScorer(str(family_checkpoints["zerank"]))
    template = scorer.loaded_model.template
    for instruction in (None, "", "   "):
        segment = template.query_segment(scorer.loaded_model.tokens, "What causes scurvy?", None, 1024)
        (pair,) = template.encode(scorer.loaded_model.tokens, [(segment, "Vitamin C.")], 1024)
        assert list(pair.row.ids) == zerank_reference.prompt("What causes scurvy?", "Vitamin C.")
        assert scorer.score("What causes scurvy?", ["Vitamin C."], instruction=instruction, raw=True) == pytest.approx(
            [zerank_reference.raw("What causes scurvy?", "Vitamin C.")], abs=1e-5
        )


def test_zerank_instruction_equals_vllm_template(
    family_checkpoints: dict[str, Path], zerank_reference: ZerankReference, pairs: list[tuple[str, str]]
) -> None:
    template = jinja2.Environment().from_string(VLLM_ZERANK2_TEMPLATE)
    scorer = ZerankScorer(str(family_checkpoints["zerank"]))
    for query, document in pairs[:10]:  # texts as given: the checkpoint's own template inserts them so
        messages = [{"role": "query", "content": query}, {"role": "document", "content": document}]
        ids = zerank_reference.encode(template.render(messages=messages, instruction=INSTRUCTION))
        expected = zerank_reference.logit(ids, "Yes")
        assert scorer.score(query, [document], instruction=INSTRUCTION, raw=True) == pytest.approx([expected], abs=1e-4)


# -- Qwen3-Reranker -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("instruction", [None, INSTRUCTION])
def test_qwen3_reranker_equals_model_card(
    family_checkpoints: dict[str, Path], pairs: list[tuple[str, str]], instruction: str | None
) -> None:
    max_length = 200
    reference = Qwen3CardReference(family_checkpoints["qwen3-reranker"])
    raw_expected, probability_expected = reference.scores(pairs, instruction, max_length)
    for prefix_reuse, batch_tokens in ((False, 200), (True, 100_000)):
        scorer = ZerankScorer(
            str(family_checkpoints["qwen3-reranker"]),
            max_length=max_length,
            prefix_reuse=prefix_reuse,
            batch_tokens=batch_tokens,
        )
        order = list(range(len(pairs)))
        random.Random(batch_tokens).shuffle(order)
        items = [(*pairs[i], instruction) for i in order]
        with pytest.warns(UserWarning, match="shortened"):
            details = scorer.score_pairs_details(items)
        assert [d.raw for d in details] == pytest.approx([raw_expected[i] for i in order], abs=1e-4)
        assert [d.probability for d in details] == pytest.approx([probability_expected[i] for i in order], abs=1e-5)
        assert any(d.truncated for d in details)


# -- mxbai-rerank-v2 ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("instruction", [None, INSTRUCTION])
def test_mxbai_equals_official_package_recipe(
    family_checkpoints: dict[str, Path], pairs: list[tuple[str, str]], instruction: str | None
) -> None:
    reference = MxbaiPackageReference(family_checkpoints["mxbai-rerank-v2"])
    content_length = 120
    long_query = "query words " * 120  # beyond the package's 3/4 cap: cut, and the document still gets room
    items = [*pairs, (long_query, pairs[0][1]), (long_query, pairs[1][1])]
    expected = reference.raw(items, instruction, content_length)
    max_length = content_length + reference.fixed_length()  # ours counts the fixed pieces too
    for prefix_reuse in (False, True):
        scorer = ZerankScorer(
            str(family_checkpoints["mxbai-rerank-v2"]),
            max_length=max_length,
            prefix_reuse=prefix_reuse,
            batch_tokens=300,
        )
        with pytest.warns(UserWarning, match="shortened"):
            details = scorer.score_pairs_details([(q, d, instruction) for q, d in items])
        assert [d.raw for d in details] == pytest.approx(expected, abs=1e-4)
        assert [d.probability for d in details] == pytest.approx([sigmoid(e) for e in expected], abs=1e-5)
    assert expected[-1] != pytest.approx(expected[-2], abs=1e-3)  # the capped query left room for the documents


def test_mxbai_default_length_is_the_packages(family_checkpoints: dict[str, Path]) -> None:
    """The package's max_length (8192) excludes the fixed pieces; ours counts them, so the default adds them
    (and stays within the model's positions)."""
    reference = MxbaiPackageReference(family_checkpoints["mxbai-rerank-v2"])
    scorer = ZerankScorer(str(family_checkpoints["mxbai-rerank-v2"]))
    assert scorer.max_length == min(8192 + reference.fixed_length(), 8192)  # the test checkpoint has 8192 positions


# -- cross-encoders -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_label_cross_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_test_checkpoint(tmp_path_factory.mktemp("ce2"), family="cross-encoder", num_labels=2, seed=3)


@pytest.mark.parametrize("labels", [1, 2])
def test_cross_encoder_equals_sentence_transformers(
    family_checkpoints: dict[str, Path], two_label_cross_encoder: Path, pairs: list[tuple[str, str]], labels: int
) -> None:
    from sentence_transformers import CrossEncoder

    path = family_checkpoints["cross-encoder"] if labels == 1 else two_label_cross_encoder
    cross_encoder = CrossEncoder(str(path), max_length=128)
    logits = cross_encoder.predict(pairs, activation_fn=torch.nn.Identity(), batch_size=5)
    expected = [float(x) for x in logits] if labels == 1 else [float(b - a) for a, b in logits]
    for batch_tokens in (200, 100_000):
        scorer = ZerankScorer(str(path), max_length=128, batch_tokens=batch_tokens)
        assert scorer.family == "cross-encoder"
        with pytest.warns(UserWarning, match="shortened"):
            details = scorer.score_pairs_details(pairs)
        assert [d.raw for d in details] == pytest.approx(expected, abs=1e-4)
        assert [d.probability for d in details] == pytest.approx([sigmoid(e) for e in expected], abs=1e-5)
        assert sum(d.truncated for d in details) >= 3
    if labels == 2:  # probability = softmax over the two labels, as sentence-transformers' apply_softmax gives
        softmax = cross_encoder.predict(pairs, apply_softmax=True, activation_fn=torch.nn.Identity())
        assert [d.probability for d in details] == pytest.approx([float(p[1]) for p in softmax], abs=1e-5)


def test_cross_encoder_takes_no_instruction(family_checkpoints: dict[str, Path]) -> None:
    scorer = ZerankScorer(str(family_checkpoints["cross-encoder"]))
    before = scorer.stats
    with pytest.raises(ValueError, match=r"the cross-encoder family .* takes no instruction"):
        scorer.score("q", ["d"], instruction="be strict")
    with pytest.raises(ValueError, match="pair at index 1: the cross-encoder family"):
        scorer.score_pairs([("q", "d"), ("q", "d", "be strict")])
    assert scorer.stats == before  # refused before the model ran
    assert scorer.score("q", ["d"], instruction="  ") == scorer.score("q", ["d"])  # blank = none


# -- behaviour every family shares ----------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_long_query_never_empties_the_document(family_checkpoints: dict[str, Path], family: str) -> None:
    scorer = ZerankScorer(str(family_checkpoints[family]), max_length=96)
    huge_query = "why " * 400
    with pytest.warns(UserWarning, match="shortened"):
        details = scorer.score_details(huge_query, ["alpha beta gamma", "completely different words here"])
    assert all(d.truncated for d in details) and all(d.tokens <= 96 for d in details)
    assert details[0].raw != pytest.approx(details[1].raw, abs=1e-4)  # the documents were still read
    template = scorer.loaded_model.template
    segment = template.query_segment(scorer.loaded_model.tokens, huge_query, template.effective_instruction(None), 96)
    assert template.document_room(segment, 96) >= template.content_room(96) // 4 - len(template.middle)


@pytest.mark.parametrize("family", ["zerank", "qwen3-reranker", "mxbai-rerank-v2"])
def test_llm_families_keep_the_fast_path(family_checkpoints: dict[str, Path], passages: list[str], family: str) -> None:
    """Token-budget batches and shared-prefix reuse for every causal family: same scores, less work."""
    long_query = "how does " + "very " * 150 + "long context change the answer"
    reuse = ZerankScorer(str(family_checkpoints[family]), max_length=1024, prefix_reuse=True)
    plain = ZerankScorer(str(family_checkpoints[family]), max_length=1024, prefix_reuse=False)
    r0, p0 = reuse.stats, plain.stats
    with_reuse = reuse.score(long_query, passages[:10], raw=True)
    without = plain.score(long_query, passages[:10], raw=True)
    assert with_reuse == pytest.approx(without, abs=1e-4)
    work_reuse, work_plain = reuse.stats - r0, plain.stats - p0
    assert work_plain.forward_passes < 10  # batched, not one pass per pair
    template = reuse.loaded_model.template
    segment = template.query_segment(reuse.loaded_model.tokens, long_query, template.effective_instruction(None), 1024)
    prefix = len(segment.prefix)
    assert prefix > 150
    # The shared prefix is computed once instead of ten times (padding aside).
    assert work_plain.computed_tokens - work_reuse.computed_tokens >= 8 * prefix


def test_calibration_is_the_familys() -> None:
    assert get_family("zerank").calibration.probability(5.0) == pytest.approx(sigmoid(1.0))
    for name in ("qwen3-reranker", "mxbai-rerank-v2", "cross-encoder"):
        calibration = get_family(name).calibration
        assert calibration.probability(1.5) == pytest.approx(sigmoid(1.5))
        assert calibration.raw(calibration.probability(-3.25)) == pytest.approx(-3.25)
    zerank = get_family("zerank").calibration
    assert zerank.raw(zerank.probability(7.5)) == pytest.approx(7.5)
    assert math.isnan(zerank.probability(math.nan)) and zerank.raw(0.0) == -math.inf and zerank.raw(1.0) == math.inf


# -- which family -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_family_is_read_from_the_checkpoint(family_checkpoints: dict[str, Path], family: str) -> None:
    scorer = ZerankScorer(str(family_checkpoints[family]))
    assert scorer.family == family and scorer.calibration == get_family(family).calibration
    how = scorer.loaded_model.detected_by
    expected = {  # what each family's published layout says (see zerank_integrations.layouts)
        "zerank": "sentence-transformers LogitScore(9454, None)",
        "qwen3-reranker": "known hub id Qwen/Qwen3-Reranker-0.6B",
        "mxbai-rerank-v2": "known hub id mixedbread-ai/mxbai-rerank-base-v2",
        "cross-encoder": "config.json architecture BertForSequenceClassification",
    }
    assert how == expected[family]
    assert scorer.random_weights


@pytest.fixture(scope="module")
def bare_causal_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A causal LM that says nothing about its family (no sentence-transformers files, unknown name)."""
    return build_test_checkpoint(tmp_path_factory.mktemp("bare") / "my-llm", sentence_transformers_config=False)


def test_unknown_causal_lm_is_refused(bare_causal_lm: Path) -> None:
    with pytest.raises(ModelLoadError) as error:
        ZerankScorer(str(bare_causal_lm))
    message = str(error.value)
    assert "cannot tell which reranker family" in message and "family=" in message
    for name in FAMILY_NAMES:
        assert repr(name) in message
    scorer = ZerankScorer(str(bare_causal_lm), family="qwen3-reranker")  # the caller can say
    assert scorer.family == "qwen3-reranker" and scorer.loaded_model.detected_by == "family="


def test_hub_id_of_a_cached_snapshot_tells_the_family(bare_causal_lm: Path, tmp_path: Path) -> None:
    snapshot = tmp_path / "hub" / "models--Qwen--Qwen3-Reranker-0.6B" / "snapshots" / "0123abcd"
    shutil.copytree(bare_causal_lm, snapshot)
    assert hub_id_from_path(str(snapshot)) == "Qwen/Qwen3-Reranker-0.6B"
    scorer = ZerankScorer(str(snapshot))
    assert (
        scorer.family == "qwen3-reranker" and "known hub id Qwen/Qwen3-Reranker-0.6B" in scorer.loaded_model.detected_by
    )


def test_detection_rules_as_data() -> None:
    families = list(FAMILY_TABLE.values())
    ids = {"Yes": [9454], "yes": [9693], "no": [2152], "1": [16], "0": [15]}

    def detect(architecture: str, model_id: str | None, logit: tuple[int, int | None] | None = None, **facts) -> str:
        described = CheckpointFacts(
            name="x",
            hub_id=model_id,
            architectures=(architecture,),
            logit_score=LogitScoreHead(*logit) if logit else None,
            **facts,
        )
        return detect_family(described, families, lambda t: ids[t])[0].name

    causal = "Qwen3ForCausalLM"
    assert detect(causal, "zeroentropy/zerank-2") == "zerank"  # the old id redirects to zerank-2-reranker
    assert detect(causal, "zeroentropy/zerank-2-reranker") == "zerank"
    assert detect(causal, "zeroentropy/zerank-1-small") == "zerank"
    assert detect("Qwen2ForCausalLM", "mixedbread-ai/mxbai-rerank-large-v2") == "mxbai-rerank-v2"
    assert detect("XLMRobertaForSequenceClassification", "BAAI/bge-reranker-v2-m3") == "cross-encoder"
    # The checkpoint wins over the name: a LogitScore(yes, no) head under a zerank-looking name is Qwen3-Reranker.
    assert detect(causal, "zeroentropy/zerank-2", (9693, 2152)) == "qwen3-reranker"
    assert detect(causal, None, (16, 15)) == "mxbai-rerank-v2"
    with pytest.raises(ValueError, match=r"LogitScore reads token ids \(16, None\), which matches no"):
        detect(causal, "zeroentropy/zerank-2", (16, None))
    with pytest.raises(ValueError, match="cannot tell which reranker family"):
        detect(causal, "someone/some-llm")
    # An architecture only the checkpoint's own code implements is not mistaken for a cross-encoder: zerank's own
    # model type is read as the Qwen3 model its weights are; an unknown one is named and refused.
    zeroentropy = {"model_type": "zeroentropy", "remote_code": True}
    assert detect("ZeroEntropyForSequenceClassification", None, **zeroentropy) == "zerank"
    with pytest.raises(ValueError, match=r"AcmeForSequenceClassification \(model_type 'acme'\).*own code"):
        detect("AcmeForSequenceClassification", "acme/ranker", model_type="acme", remote_code=True)


def test_mismatched_pair_template_is_refused(family_checkpoints: dict[str, Path], tmp_path: Path) -> None:
    """A LogitScore("Yes") head whose chat template renders another prompt is not zerank: refused, not guessed;
    the message shows where the two prompts part. family= scores it with the recipe instead."""
    target = tmp_path / "odd"
    shutil.copytree(family_checkpoints["zerank"], target)
    odd = (
        "{%- for m in messages -%}{%- if m['role'] == 'query' -%}{{ '<|im_start|>system\\nQ: ' + m['content'] }}"
        "{%- elif m['role'] == 'document' -%}"
        "{{ '<|im_end|>\\n<|im_start|>user\\nD: ' + m['content'] + '<|im_end|>\\n' }}"
        "{%- else -%}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{%- endif -%}"
        "{%- endfor -%}{{ '<|im_start|>assistant\\n' }}"
    )
    (target / "chat_template.jinja").write_text(odd)
    with pytest.raises(ModelLoadError, match="renders a different prompt than the zerank recipe") as error:
        ZerankScorer(str(target))
    assert "from character 19 the template renders 'Q: What is the boiling point" in str(error.value)
    forced = ZerankScorer(str(target), family="zerank")
    assert forced.loaded_model.template.source == "the family's recipe"


@pytest.mark.parametrize(
    ("family", "forced", "match"),
    [
        ("zerank", "cross-encoder", "puts no special tokens around query and document"),
        ("cross-encoder", "zerank", "has no chat template"),
        ("cross-encoder", "qwen3-reranker", "lacks weights|splits"),
    ],
)
def test_forcing_the_wrong_family_is_refused(
    family_checkpoints: dict[str, Path], family: str, forced: str, match: str
) -> None:
    with pytest.raises(ModelLoadError, match=match):
        ZerankScorer(str(family_checkpoints[family]), family=forced)
    with pytest.raises(ValueError, match="unknown reranker family 'colbert'"):
        ZerankScorer(str(family_checkpoints[family]), family="colbert")


def test_one_loaded_model_per_family(family_checkpoints: dict[str, Path]) -> None:
    path = str(family_checkpoints["zerank"])
    detected = ZerankScorer(path)
    named = ZerankScorer(path, family="zerank")
    other = ZerankScorer(path, family="qwen3-reranker")  # same weights read with another recipe: another model
    assert detected.loaded_model is named.loaded_model
    assert other.loaded_model is not detected.loaded_model and other.loaded_model.key.family == "qwen3-reranker"


def test_known_models_table_is_complete() -> None:
    """The README's model table comes from here: every family lists its checkpoints with a licence and source."""
    seen: list[KnownModel] = [model for family in FAMILY_TABLE.values() for model in family.models]
    assert {m.hub_id for m in seen} >= {
        "zeroentropy/zerank-2-reranker",
        "zeroentropy/zerank-1-small",
        "Qwen/Qwen3-Reranker-0.6B",
        "mixedbread-ai/mxbai-rerank-base-v2",
        "BAAI/bge-reranker-v2-m3",
        "cross-encoder/ms-marco-MiniLM-L6-v2",
        "Alibaba-NLP/gte-reranker-modernbert-base",
    }
    by_id = {m.hub_id: m for m in seen}
    assert by_id["zeroentropy/zerank-2-reranker"].license == "CC-BY-NC-4.0"
    assert all(m.license and m.license_source and m.checked for m in seen)
