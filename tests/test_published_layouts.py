"""Every supported model's published layout (and each plausible variant of it) loads, and scores exactly as its
publisher's own code scores it.

The layouts, file by file, and where each fact comes from, are data in ``zerank_integrations.layouts`` (its
module docstring and each layout's ``sources`` and ``unconfirmed``); these tests build each one small with
random weights. The publisher's code is the reference: ``sentence_transformers.CrossEncoder(folder).predict``
where the layout ships sentence-transformers files or is a plain sequence classifier, else the model card's or
package's recipe written out in ``_references`` (zerank-1's card, Qwen3-Reranker's card, the mxbai-rerank
package) or, for a zerank-2 copy without sentence-transformers files, its own chat template rendered as the
card's generation prompt asks. 60+ pairs per layout, texts with surrounding spaces and newlines, an empty
document, non-ASCII text, an instruction where the family takes one; batch size 1 and many; with and without
prefix reuse; fp32, within 1e-5.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _references import MxbaiPackageReference, Qwen3CardReference, ZerankReference

from zerank_integrations import ZerankScorer
from zerank_integrations.families import FAMILIES
from zerank_integrations.layouts import LAYOUTS, PublishedLayout, layouts_for
from zerank_integrations.testing import build_test_checkpoint

TOLERANCE = 1e-5
INSTRUCTION = "Prefer peer-reviewed clinical evidence over opinion."
QUERIES = ("What causes cancer?", "  Does vitamin D help bone density?  ", "\nwhy do cells divide?\n")
EDGE_DOCUMENTS = (
    "",
    "x",
    " leading space",
    "trailing newline\n",
    "\n\nleading blank lines then text",
    "  spaces on both sides  ",
    "Ünïcödé — «quotes», 日本語のテキスト, 🙂",
    "a\nb\n\nc",
    "tab\tseparated\tcolumns",
    "\r\nwindows line end\r\n",
)


@pytest.fixture(scope="module")
def documents(passages: list[str]) -> list[str]:
    """Real passages (kept under the test models' limits) and edge cases: 22 documents."""
    return [p[:300] for p in passages[:12]] + list(EDGE_DOCUMENTS)


@pytest.fixture(scope="module")
def pairs(documents: list[str]) -> list[tuple[str, str]]:
    return [(query, document) for query in QUERIES for document in documents]  # 66 pairs


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, qwen3_tokenizer_dir: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("layouts")
    return {
        name: build_test_checkpoint(root / name.replace("/", "--"), qwen3_tokenizer_dir, layout=name)
        for name in LAYOUTS
    }


def reference_scores(layout: PublishedLayout, path: Path, items: list[tuple[str, str, str | None]]) -> list[float]:
    """Raw scores of (query, document, instruction) items, computed by the publisher's own code."""
    if layout.reference == "sentence-transformers":
        from sentence_transformers import CrossEncoder

        model = CrossEncoder(str(path))
        scores = []
        for instruction in dict.fromkeys(i for _, _, i in items):
            group = [(q, d) for q, d, i in items if i == instruction]
            kwargs = {}
            if instruction is not None and layout.family == "zerank":  # the recommended wrapping, done by the user
                group = [(f"<query>{q}</query>\n<instruction>{instruction}</instruction>", d) for q, d in group]
            elif instruction is not None:  # a template that takes the instruction itself
                kwargs = {"processing_kwargs": {"chat_template": {"instruction": instruction}}}
            values = model.predict(group, activation_fn=torch.nn.Identity(), batch_size=7, **kwargs)
            scores.append(iter([float(v) for v in values]))
        by_instruction = dict(zip(dict.fromkeys(i for _, _, i in items), scores, strict=True))
        return [next(by_instruction[i]) for _, _, i in items]
    if layout.reference in ("chat-template", "zerank-card"):
        zerank = ZerankReference(path)
        return [zerank.raw(q, d, i) for q, d, i in items]
    if layout.reference == "qwen3-card":
        qwen3 = Qwen3CardReference(path)
        out = []
        for q, d, i in items:
            raw, _ = qwen3.scores([(q, d)], i, 100_000)
            out.extend(raw)
        return out
    mxbai = MxbaiPackageReference(path)
    return [mxbai.raw([(q, d)], i, 8192)[0] for q, d, i in items]


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_layout_scores_as_its_publisher(
    built: dict[str, Path], pairs: list[tuple[str, str]], documents: list[str], name: str
) -> None:
    layout, path = LAYOUTS[name], built[name]
    reference_path = path
    if name == "zerank-1/remote-code":  # the card's code needs that layout's own code; the same weights, plainly
        reference_path = built["zerank-1"]
        assert (path / "model.safetensors").read_bytes() == (reference_path / "model.safetensors").read_bytes()
    items: list[tuple[str, str, str | None]] = [(q, d, None) for q, d in pairs]
    if FAMILIES[layout.family].accepts_instruction:
        items += [(QUERIES[0], d, INSTRUCTION) for d in documents[:8] + documents[12:]]
    expected = reference_scores(layout, reference_path, items)
    many = ZerankScorer(str(path), prefix_reuse=False, batch_tokens=100_000)
    assert many.family == layout.family  # read from the checkpoint: the loader refuses none of them
    assert many.score_pairs(items, raw=True) == pytest.approx(expected, abs=TOLERANCE)
    if layout.family != "cross-encoder":
        reuse = ZerankScorer(str(path), prefix_reuse=True, batch_tokens=100_000)
        assert reuse.score_pairs(items, raw=True) == pytest.approx(expected, abs=TOLERANCE)
        assert reuse.stats.forward_passes < len(items) // 4  # shared prefixes, batched continuations
    singles = [many.score(q, [d], instruction=i, raw=True)[0] for q, d, i in items[::5]]  # batch size 1
    assert singles == pytest.approx(expected[::5], abs=TOLERANCE)


def test_whitespace_reaches_the_model_as_the_template_renders_it(built: dict[str, Path]) -> None:
    """zerank-2-reranker's own template inserts texts as given: padded texts score as padded (sentence-
    transformers' path), unlike the stripping recipe of checkpoints without such a template (zerank-1)."""
    published = ZerankScorer(str(built["zerank-2-reranker"]))
    plain, padded = published.score("what is x?", ["x is a letter.", "x is a letter.\n"], raw=True)
    assert published.loaded_model.template.source == "the checkpoint's chat template"
    assert abs(plain - padded) > 1e-3
    card = ZerankScorer(str(built["zerank-1"]))
    assert card.loaded_model.template.source == "the family's recipe"
    plain, padded = card.score("what is x?", ["x is a letter.", "x is a letter.\n"], raw=True)
    assert plain == pytest.approx(padded, abs=1e-6)


@pytest.mark.parametrize("name", ["zerank-2-reranker", "zerank-2-reranker/unconditional-header"])
def test_truncated_pairs_keep_the_suffix(built: dict[str, Path], pairs: list[tuple[str, str]], name: str) -> None:
    """Over-long pairs follow the family's rule (query to its share, then the document cut before the template's
    suffix), whitespace-padded texts included, with and without prefix reuse."""
    reference = ZerankReference(built[name])
    max_length = 64
    long_query = "  which " + "long question words " * 40 + "?\n"
    items = [*pairs[::3], (long_query, pairs[0][1]), (long_query, "\n\n" + pairs[1][1])]
    expected = [reference.raw(q, d, None, max_length) for q, d in items]
    assert sum(len(reference.ids(q, d)) > max_length for q, d in items) >= 10
    for prefix_reuse in (False, True):
        scorer = ZerankScorer(str(built[name]), max_length=max_length, prefix_reuse=prefix_reuse)
        with pytest.warns(UserWarning, match="shortened"):
            details = scorer.score_pairs_details(items)
        assert [d.raw for d in details] == pytest.approx(expected, abs=TOLERANCE)
        assert all(d.tokens <= max_length for d in details)


def test_remote_code_is_read_not_run(built: dict[str, Path]) -> None:
    """zerank's remote-code layout (model_type "zeroentropy", its own tokenizer class) loads as the Qwen3 model its
    weights are; modeling_zeranker.py is never imported."""
    import sys

    scorer = ZerankScorer(str(built["zerank-1/remote-code"]))
    assert scorer.loaded_model.detected_by == "config.json model_type 'zeroentropy' (its own code, read as qwen3)"
    assert not any("modeling_zeranker" in module for module in sys.modules)


def test_every_supported_model_has_a_layout() -> None:
    for family in FAMILIES.values():
        for model in family.models:
            assert layouts_for(model.hub_id), f"{model.hub_id} has no published layout to test"


def test_what_the_zerank2_layout_says_is_read_once(built: dict[str, Path]) -> None:
    from zerank_integrations.families import CheckpointFacts, LogitScoreHead

    path = built["zerank-2-reranker"]
    facts = CheckpointFacts.read(str(path), None, lambda f: (path / f).read_text() if (path / f).is_file() else None)
    assert facts.architectures == ("Qwen3ForCausalLM",) and facts.sentence_transformers
    assert facts.logit_score == LogitScoreHead(9454, None)
    assert facts.chat is not None and facts.chat.as_dict() == {"add_generation_prompt": True}
    assert facts.chat.message_format == "flat" and facts.chat.source == "sentence_bert_config.json"


def test_a_template_without_its_generation_prompt_setting_is_refused(built: dict[str, Path], tmp_path: Path) -> None:
    """zerank-2's template opens the assistant turn only with add_generation_prompt: without the setting that asks
    for it, the prompt truly differs from zerank's, and the message shows where."""
    import json
    import shutil

    from zerank_integrations.scoring import ModelLoadError

    target = tmp_path / "no-setting"
    shutil.copytree(built["zerank-2-reranker"], target)
    config = json.loads((target / "sentence_bert_config.json").read_text())
    del config["processing_kwargs"]
    (target / "sentence_bert_config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="renders a different prompt than the zerank recipe") as error:
        ZerankScorer(str(target))
    assert "the template renders '', the zerank recipe '<|im_start|>assistant\\n'" in str(error.value)


def test_the_publishers_maximum_length_is_the_default(built: dict[str, Path]) -> None:
    """bge-reranker-v2-m3 ships max_seq_length 1024 (where CrossEncoder truncates); gte-reranker says nothing
    beyond its tokenizer's 8192."""
    assert ZerankScorer(str(built["bge-reranker-v2-m3"])).max_length == 1024
    assert ZerankScorer(str(built["gte-reranker-modernbert-base"])).max_length == 8192


def test_adapters_score_the_published_zerank2_as_sentence_transformers(built: dict[str, Path]) -> None:
    """LangChain and LlamaIndex adapters over the published layout: relevance scores are CrossEncoder's raw
    "Yes" logits through zerank's calibration, sigmoid(logit / 5), whitespace-padded documents included."""
    import math

    from langchain_core.documents import Document
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
    from sentence_transformers import CrossEncoder

    from zerank_integrations.langchain import ZerankRerank as LangChainRerank
    from zerank_integrations.llama_index import ZerankRerank as LlamaIndexRerank

    path = str(built["zerank-2-reranker"])
    query, texts = "what is x?", ["x is a letter.\n", "  x marks the spot", "\n\nunrelated text"]
    raw = CrossEncoder(path).predict([(query, t) for t in texts], activation_fn=torch.nn.Identity())
    expected = {t: 1 / (1 + math.exp(-float(r) / 5)) for t, r in zip(texts, raw, strict=True)}
    documents = [Document(page_content=t) for t in texts]
    for document in LangChainRerank(model=path, top_n=3).compress_documents(documents, query):
        assert document.metadata["relevance_score"] == pytest.approx(expected[document.page_content], abs=1e-6)
    nodes = [NodeWithScore(node=TextNode(text=t), score=0.0) for t in texts]
    for node in LlamaIndexRerank(model=path, top_n=3).postprocess_nodes(nodes, QueryBundle(query)):
        assert node.score == pytest.approx(expected[node.node.get_content()], abs=1e-6)
