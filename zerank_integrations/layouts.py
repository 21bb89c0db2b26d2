"""The files each supported model's hub repository ships, as data, so that test checkpoints mirror them.

A test checkpoint (``testing.build_test_checkpoint(..., layout=NAME)``) is small and has random weights, but
its configs, sentence-transformers files, chat template and tokenizer settings are the published ones, so the
loader meets exactly what a user downloads. Every fact names its source (``sources``); where a detail could
not be confirmed from public copies, each plausible variant is its own layout (``unconfirmed`` says which
detail). The facts were read on 2026-12-02 from: the zerank-2 repository's commit d3fb332 ("Integrate with
Sentence Transformers v5.4 (#8)") and its blob pages; the zerank-1 / zerank-1-small tree pages; the
Qwen3-Reranker-4B API record and sentence-transformers' documentation of its ``refs/pr/11`` layout; the
mxbai-rerank-large-v2 tree and config (via a declared duplicate); the cross-encoder repositories' trees and
configs; sentence-transformers 6.3.0's own ``save_pretrained`` output and loading code.

Tokenizers: the causal layouts use the real Qwen3 tokenizer (zerank and Qwen3-Reranker ship it; mxbai-rerank-v2
ships Qwen2.5's, whose vocabulary is the same byte-level BPE but lacks Qwen3's four ``<think>``/tool tokens).
The encoder layouts use the real BERT WordPiece vocabulary (ms-marco-MiniLM ships it); bge-reranker-v2-m3
(XLM-R SentencePiece) and gte-reranker-modernbert (ModernBERT BPE) get it as a stand-in, since their
tokenizers cannot be had offline: their architectures, configs and sentence-transformers files are theirs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

# -- chat templates --------------------------------------------------------------------------------------------
# zerank-2-reranker's chat_template.jinja (11 lines in commit d3fb332) renders role "query" as the system turn
# and role "document" as the user turn, and opens the assistant turn only with add_generation_prompt (measured
# by the public vLLM port: without it the header is missing). Its text is not in any public copy; the rendered
# pair prompt is (byte-identical to apply_chat_template(add_generation_prompt=True) in that port's parity run).
# Unconfirmed: whether it trims the texts, whether the header is conditional, and what other roles render as.


def _zerank_pair_template(*, trim: bool, conditional_header: bool, others: Literal["chatml", "qwen3"]) -> str:
    content = "message['content']" + (" | trim" if trim else "")
    header = "{{- '<|im_start|>assistant\\n' -}}"
    if conditional_header:
        header = "{%- if add_generation_prompt -%}" + header + "{%- endif -%}"
    if others == "chatml":  # one loop for every role: query/document as the pair, others as plain ChatML turns
        return (
            "{%- for message in messages -%}\n"
            "{%- if message['role'] == 'query' -%}\n"
            "{{- '<|im_start|>system\\n' + " + content + " + '<|im_end|>\\n' -}}\n"
            "{%- elif message['role'] == 'document' -%}\n"
            "{{- '<|im_start|>user\\n' + " + content + " + '<|im_end|>\\n' -}}\n"
            "{%- else -%}\n"
            "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}\n"
            "{%- endif -%}\n"
            "{%- endfor -%}\n" + header + "\n"
        )
    # the reading: a ("query", "document") branch in front of the stock Qwen3 template (QWEN3_STOCK)
    query = "(messages | selectattr('role', 'eq', 'query') | map(attribute='content') | first)"
    document = "(messages | selectattr('role', 'eq', 'document') | map(attribute='content') | first)"
    if trim:
        query, document = f"({query} | trim)", f"({document} | trim)"
    return (
        "{%- if messages | selectattr('role', 'eq', 'query') | list | length > 0 -%}"
        "{{- '<|im_start|>system\\n' + " + query + " + '<|im_end|>\\n<|im_start|>user\\n' + " + document + ""
        " + '<|im_end|>\\n' -}}" + header + "{%- else -%}" + QWEN3_STOCK + "{%- endif -%}"
    )


QWEN3_STOCK = "{stock}"  # placeholder: the tokenizer's own Qwen3 chat template, filled in by the builder

# Qwen3-Reranker's sentence-transformers layout (refs/pr/11; also the cross-encoder-testing copies) carries a
# template that renders the model card's prompt; its text is not public either. This one renders the card's
# prompt exactly (the vLLM qwen3_reranker score template's text), taking the instruction as a keyword with the
# card's default; the suffix is unconditional (that layout sets no processing_kwargs).
QWEN3_RERANKER_PAIR = (
    "{%- set i = instruction if instruction is defined and instruction else 'Given a web search query, retrieve "
    "relevant passages that answer the query' -%}"
    "{%- set q = messages | selectattr('role', 'eq', 'query') | map(attribute='content') | first -%}"
    "{%- set d = messages | selectattr('role', 'eq', 'document') | map(attribute='content') | first -%}"
    "{{- '<|im_start|>system\\nJudge whether the Document meets the requirements based on the Query and the "
    'Instruct provided. Note that the answer can only be \\"yes\\" or \\"no\\".<|im_end|>\\n<|im_start|>user\\n'
    "<Instruct>: ' + i + '\\n<Query>: ' + q + '\\n<Document>: ' + d + '<|im_end|>\\n<|im_start|>assistant\\n"
    "<think>\\n\\n</think>\\n\\n' -}}"
)

# -- sentence-transformers files ---------------------------------------------------------------------------------
_TRANSFORMER = "sentence_transformers.base.modules.transformer.Transformer"
_LOGIT_SCORE = "sentence_transformers.cross_encoder.modules.logit_score.LogitScore"
_CAUSAL_MODULES = [
    {"idx": 0, "name": "0", "path": "", "type": _TRANSFORMER},
    {"idx": 1, "name": "1", "path": "1_LogitScore", "type": _LOGIT_SCORE},
]
_CAUSAL_MODALITIES = {
    "text": {"method": "forward", "method_output_name": "logits"},
    "message": {"method": "forward", "method_output_name": "logits", "format": "flat"},
}

ZERANK2_ST_FILES: dict[str, Any] = {  # commit d3fb332, verbatim
    "modules.json": _CAUSAL_MODULES,
    "sentence_bert_config.json": {
        "transformer_task": "text-generation",
        "modality_config": _CAUSAL_MODALITIES,
        "module_output_name": "causal_logits",
        "processing_kwargs": {"chat_template": {"add_generation_prompt": True}},
    },
    "config_sentence_transformers.json": {
        "__version__": {"sentence_transformers": "5.4.0"},
        "activation_fn": "torch.nn.modules.linear.Identity",
        "default_prompt_name": None,
        "model_type": "CrossEncoder",
        "prompts": {},
    },
    "1_LogitScore/config.json": {"true_token_id": 9454, "false_token_id": None},
}
QWEN3_RERANKER_ST_FILES: dict[str, Any] = {  # as sentence-transformers' docs print the refs/pr/11 modules
    "modules.json": _CAUSAL_MODULES,
    "sentence_bert_config.json": {
        "transformer_task": "text-generation",
        "modality_config": _CAUSAL_MODALITIES,
        "module_output_name": "causal_logits",
    },
    "config_sentence_transformers.json": {
        "__version__": {"sentence_transformers": "5.4.0"},
        "activation_fn": "torch.nn.modules.activation.Sigmoid",
        "default_prompt_name": None,
        "model_type": "CrossEncoder",
        "prompts": {},
    },
    "1_LogitScore/config.json": {"true_token_id": 9693, "false_token_id": 2152, "module_input_name": "causal_logits"},
}

ZERANK_SOURCES = (
    "huggingface.co/zeroentropy/zerank-2/commit/d3fb3320b99762de2c520d9c74449cd26e0925e3 (files, diff)",
    "huggingface.co/zeroentropy/zerank-2-reranker blob main: sentence_bert_config.json, "
    "config_sentence_transformers.json",
    "github.com/polaria-tech/zerank-2-reranker-vllm convert.py (architectures, tied embeddings, LogitScore config)",
    "vllm-project/vllm examples/pooling/score/template/zerank2.jinja (rendered prompt; instruction wrapping)",
)


@dataclass(frozen=True)
class PublishedLayout:
    """One hub repository's layout (or one plausible variant of it), as the test-checkpoint builder writes it."""

    name: str
    family: str
    models: tuple[str, ...]  # the supported-models rows it stands for
    architecture: str  # config.json "architectures"
    sources: tuple[str, ...]
    chat_template: str | None = None  # chat_template.jinja (QWEN3_STOCK marks the tokenizer's own template)
    inline_template: bool = False  # the stock template inside tokenizer_config.json instead of a .jinja file
    st_files: dict[str, Any] | None = field(default=None, hash=False, compare=False)
    config_extra: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    tokenizer_extra: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    extra_files: dict[str, str] = field(default_factory=dict, hash=False, compare=False)
    num_labels: int = 1
    hub_cache_id: str | None = None  # without files that name the family, the hub id tells it (HF cache path)
    unconfirmed: str = ""  # the detail this variant assumes
    reference: Literal["sentence-transformers", "chat-template", "zerank-card", "qwen3-card", "mxbai-package"] = (
        "sentence-transformers"
    )


_MODELING_ZERANKER = (
    "# zerank-1 and zerank-1-small ship modeling_zeranker.py (6.4 kB, for trust_remote_code=True). Its text is not\n"
    "# reproduced here; the file is present so the loader meets it, and never runs it.\n"
)


def _zerank2(
    variant: str,
    unconfirmed: str,
    *,
    trim: bool = False,
    conditional_header: bool = True,
    others: Literal["chatml", "qwen3"] = "chatml",
    **fields: Any,
) -> PublishedLayout:
    """zerank-2-reranker as published (commit d3fb332), with one reading of its unseen template text."""
    return PublishedLayout(
        "zerank-2-reranker" + (f"/{variant}" if variant else ""),
        "zerank",
        ("zeroentropy/zerank-2-reranker",),
        "Qwen3ForCausalLM",
        ZERANK_SOURCES,
        chat_template=_zerank_pair_template(trim=trim, conditional_header=conditional_header, others=others),
        st_files=fields.pop("st_files", ZERANK2_ST_FILES),
        config_extra={"tie_word_embeddings": True},
        unconfirmed=unconfirmed,
        **fields,
    )


LAYOUTS: dict[str, PublishedLayout] = {
    layout.name: layout
    for layout in (
        _zerank2("", "template text: no trim, header on add_generation_prompt, other roles as ChatML turns"),
        _zerank2(
            "qwen3-fallback",
            "template text: a pair branch before the stock Qwen3 template (the issue's reading)",
            others="qwen3",
        ),
        _zerank2(
            "unconditional-header",
            "template text: the assistant header whatever add_generation_prompt says",
            conditional_header=False,
            others="qwen3",
        ),
        _zerank2(
            "trimmed", "template text: query and document trimmed (as the old remote code stripped them)", trim=True
        ),
        _zerank2(
            "no-sentence-transformers",
            "a copy without the sentence-transformers files (the template alone says the prompt)",
            st_files=None,
            hub_cache_id="zeroentropy/zerank-2-reranker",
            reference="chat-template",
        ),
        PublishedLayout(
            "zerank-1",
            "zerank",
            ("zeroentropy/zerank-1", "zeroentropy/zerank-1-small"),
            "Qwen3ForCausalLM",
            (
                "huggingface.co/zeroentropy/zerank-1/tree/main and zerank-1-small/tree/main (file list)",
                "zerank-1-small Go and ONNX ports (prompt: system = query, user = document, generation prompt)",
            ),
            chat_template=QWEN3_STOCK,
            inline_template=True,
            extra_files={"modeling_zeranker.py": _MODELING_ZERANKER},
            config_extra={"tie_word_embeddings": True},
            hub_cache_id="zeroentropy/zerank-1-small",
            reference="zerank-card",
            unconfirmed="config.json as a plain Qwen3ForCausalLM config (its 860 bytes were not seen)",
        ),
        PublishedLayout(
            "zerank-1/remote-code",
            "zerank",
            ("zeroentropy/zerank-1", "zeroentropy/zerank-1-small"),
            "Qwen3ForCausalLM",
            (
                "huggingface.co/zeroentropy/zerank-1/tree/main (modeling_zeranker.py, custom_code tag)",
                "zerank-2's first upload (commit b269504) as its mlx port reads it: model_type 'zeroentropy', "
                "ZeroEntropyForSequenceClassification, auto_map, yes_token_id 9454, ZeroEntropyTokenizer",
            ),
            chat_template=QWEN3_STOCK,
            inline_template=True,
            extra_files={"modeling_zeranker.py": _MODELING_ZERANKER},
            config_extra={
                "tie_word_embeddings": True,
                "model_type": "zeroentropy",
                "architectures": ["ZeroEntropyForSequenceClassification"],
                "auto_map": {
                    "AutoConfig": "modeling_zeranker.ZeroEntropyConfig",
                    "AutoModelForSequenceClassification": "modeling_zeranker.ZeroEntropyForSequenceClassification",
                },
                "yes_token_id": 9454,
            },
            tokenizer_extra={
                "tokenizer_class": "ZeroEntropyTokenizer",
                "auto_map": {"AutoTokenizer": ["modeling_zeranker.ZeroEntropyTokenizer", None]},
            },
            reference="zerank-card",
            unconfirmed="config.json and tokenizer_config.json as zerank-2's first, remote-code upload wrote them",
        ),
        PublishedLayout(
            "qwen3-reranker",
            "qwen3-reranker",
            ("Qwen/Qwen3-Reranker-0.6B", "Qwen/Qwen3-Reranker-4B", "Qwen/Qwen3-Reranker-8B"),
            "Qwen3ForCausalLM",
            ("huggingface.co/api/models/Qwen/Qwen3-Reranker-4B (config, tokenizer_config chat template)",),
            chat_template=QWEN3_STOCK,
            inline_template=True,
            config_extra={"tie_word_embeddings": True},
            hub_cache_id="Qwen/Qwen3-Reranker-0.6B",
            reference="qwen3-card",
        ),
        PublishedLayout(
            "qwen3-reranker/sentence-transformers",
            "qwen3-reranker",
            ("Qwen/Qwen3-Reranker-0.6B", "Qwen/Qwen3-Reranker-4B", "Qwen/Qwen3-Reranker-8B"),
            "Qwen3ForCausalLM",
            (
                'sbert.net cross_encoder/usage/custom_models: CrossEncoder("Qwen/Qwen3-Reranker-0.6B", '
                'revision="refs/pr/11")',
            ),
            chat_template=QWEN3_RERANKER_PAIR,
            st_files=QWEN3_RERANKER_ST_FILES,
            config_extra={"tie_word_embeddings": True},
            unconfirmed="the sentence-transformers files of refs/pr/11 merged; template text (the card's prompt)",
        ),
        PublishedLayout(
            "mxbai-rerank-v2",
            "mxbai-rerank-v2",
            ("mixedbread-ai/mxbai-rerank-base-v2", "mixedbread-ai/mxbai-rerank-large-v2"),
            "Qwen2ForCausalLM",
            (
                "mxbai-rerank-large-v2 tree and config.json (Qwen2ForCausalLM, tied embeddings, no ST files)",
                "mixedbread-ai/mxbai-rerank mxbai_rerank/mxbai_rerank_v2.py (prompt, '1'/'0' head)",
            ),
            chat_template=QWEN3_STOCK,
            inline_template=True,
            config_extra={"tie_word_embeddings": True},
            hub_cache_id="mixedbread-ai/mxbai-rerank-base-v2",
            reference="mxbai-package",
        ),
        PublishedLayout(
            "ms-marco-MiniLM-L6-v2",
            "cross-encoder",
            ("cross-encoder/ms-marco-MiniLM-L6-v2",),
            "BertForSequenceClassification",
            ("huggingface.co/cross-encoder/ms-marco-MiniLM-L6-v2 tree and config.json",),
            config_extra={"sentence_transformers": {"activation_fn": "torch.nn.modules.linear.Identity"}},
            tokenizer_extra={"model_max_length": 512, "do_lower_case": True},
            unconfirmed="activation kept in config.json's sentence_transformers block (ST >= 4 re-upload)",
        ),
        PublishedLayout(
            "ms-marco-MiniLM-L6-v2/legacy",
            "cross-encoder",
            ("cross-encoder/ms-marco-MiniLM-L6-v2",),
            "BertForSequenceClassification",
            ("huggingface.co/cross-encoder/ms-marco-MiniLM-L-6-v2 commit 5ada194 (config.json 794 B)",),
            config_extra={"sbert_ce_default_activation_function": "torch.nn.modules.linear.Identity"},
            tokenizer_extra={"model_max_length": 512, "do_lower_case": True},
            unconfirmed="the legacy activation key in config.json",
        ),
        PublishedLayout(
            "bge-reranker-v2-m3",
            "cross-encoder",
            ("BAAI/bge-reranker-v2-m3",),
            "XLMRobertaForSequenceClassification",
            ("huggingface.co/BAAI/bge-reranker-v2-m3 tree at 8357406 ('Add Sentence Transformers config')",),
            st_files={"sentence_bert_config.json": {"max_seq_length": 1024, "do_lower_case": False}},
            tokenizer_extra={"model_max_length": 8192},
            unconfirmed="sentence_bert_config.json's max_seq_length: 1024 (8192 fits its 54 bytes too)",
        ),
        PublishedLayout(
            "gte-reranker-modernbert-base",
            "cross-encoder",
            ("Alibaba-NLP/gte-reranker-modernbert-base",),
            "ModernBertForSequenceClassification",
            ("huggingface.co/Alibaba-NLP/gte-reranker-modernbert-base tree main (no ST files), card (8192 tokens)",),
            config_extra={"classifier_pooling": "mean"},
            tokenizer_extra={"model_max_length": 8192},
            unconfirmed="classifier_pooling 'mean' (the config's value was not seen)",
        ),
    )
}


def layouts_for(model: str) -> list[PublishedLayout]:
    """The layouts (variants included) that stand for a supported model's hub repository."""
    return [layout for layout in LAYOUTS.values() if model in layout.models]
