"""Small zerank-shaped checkpoints for tests, benchmarks and offline demos.

zerank-2 is a Qwen3ForCausalLM scored on the "Yes" logit. A randomly initialised Qwen3ForCausalLM with the
real Qwen3 tokenizer goes through exactly the same loading, prompting and scoring code, so everything but
the ranking *quality* can be checked without downloading 8 GB of weights. Its scores are meaningless.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

QWEN3_VOCAB_SIZE = 151_936
TOKENIZER_ENV = "ZERANK_QWEN3_TOKENIZER"
_TOKENIZER_FILES = (
    "vocab.json",
    "merges.txt",
    "tokenizer_config.json",
    "tokenizer.json",
    "special_tokens_map.json",
)


def find_qwen3_tokenizer(start: str | os.PathLike[str] | None = None) -> Path:
    """Locate the real Qwen3 tokenizer: ``$ZERANK_QWEN3_TOKENIZER`` or ``shared/tokenizers/qwen3`` above ``start``."""
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
    raise FileNotFoundError(
        "could not find the Qwen3 tokenizer: set $ZERANK_QWEN3_TOKENIZER to a folder with vocab.json, "
        "merges.txt and tokenizer_config.json (e.g. ../shared/tokenizers/qwen3)"
    )


def build_test_checkpoint(
    out_dir: str | os.PathLike[str],
    tokenizer_dir: str | os.PathLike[str] | None = None,
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int | None = None,
    seed: int = 0,
    init_std: float = 0.1,
) -> Path:
    """Write a random-weight ``Qwen3ForCausalLM`` (tied embeddings, full Qwen3 vocabulary) plus tokenizer.

    ``init_std`` is larger than Qwen's 0.02 so that the "Yes" logits of different pairs differ visibly.
    Saved as safetensors, loadable by path exactly like ``zeroentropy/zerank-2``.
    """
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    source = Path(tokenizer_dir) if tokenizer_dir is not None else find_qwen3_tokenizer()
    for name in _TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, out / name)
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
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(config).eval()
    model.save_pretrained(out, safe_serialization=True)
    return out


# sentence-transformers maps a (query, document) pair to messages with roles "query" and "document"; published
# rerankers ship a chat template that renders them. This one renders zerank-2's prompt (query as the system
# message, document as the user message, generation prompt added), so a CrossEncoder scores exactly as zerank-2.
ZERANK_PAIR_CHAT_TEMPLATE = (
    "{{ '<|im_start|>system\\n' + (messages | selectattr('role', 'eq', 'query') | map(attribute='content') "
    "| first | trim) + '<|im_end|>\\n<|im_start|>user\\n' + (messages | selectattr('role', 'eq', 'document') "
    "| map(attribute='content') | first | trim) + '<|im_end|>\\n<|im_start|>assistant\\n' }}"
)


def sentence_transformers_cross_encoder(model: str | os.PathLike[str], device: str = "cpu", **kwargs: object):  # type: ignore[no-untyped-def]
    """A sentence-transformers ``CrossEncoder`` loaded the way zerank-2 ships for it.

    ``Transformer(text-generation)`` -> ``LogitScore(true_token_id=<"Yes">)``: ``predict`` with an identity
    activation returns the raw "Yes" logit. The baseline our benchmarks and parity tests compare against.
    """
    from sentence_transformers import CrossEncoder
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.cross_encoder.modules import LogitScore

    transformer = Transformer(
        str(model),
        transformer_task="text-generation",
        processor_kwargs={"chat_template": ZERANK_PAIR_CHAT_TEMPLATE},
        **kwargs,  # type: ignore[arg-type]
    )
    yes_id = transformer.tokenizer("Yes", add_special_tokens=False)["input_ids"]
    return CrossEncoder(modules=[transformer, LogitScore(true_token_id=yes_id[0])], device=device)
