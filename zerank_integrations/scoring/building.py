"""Build a checkpoint's forward pass on a device: its weights (safetensors only), the family's score head as
one row of the output embedding (or the sequence classifier), the cost model batch planning reads, and the
load-time check that the fast path equals the model's own logits.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch

from zerank_integrations.families import CheckpointFacts, ClassifierLogit, RerankerFamily
from zerank_integrations.scoring import attention
from zerank_integrations.scoring.batching import CostModel, device_speed
from zerank_integrations.scoring.forward import CausalHeadForward, ClassifierForward, Forward
from zerank_integrations.scoring.prompts import PromptTemplate, Tokens
from zerank_integrations.scoring.quiet import quiet_loading
from zerank_integrations.scoring.source import CheckpointSource, ModelLoadError, _load_hint

_PROBE = ("zerank load check", "Checks that the fast path equals the model's own logits.")
_SANE_TOKENIZER_LIMIT = 1_000_000  # tokenizers without a limit report ~1e30


@dataclass
class BuiltModel:
    """A checkpoint's forward pass on one device, with what the loader derives from the model."""

    forward: Forward
    dtype: torch.dtype
    position_limit: int | None  # the most tokens the model can attend to, if it says
    default_max_length: int
    cost: CostModel
    causal_lm: Any | None  # the full causal LM, kept only for the load-time check


def build_model(
    source: CheckpointSource,
    facts: CheckpointFacts,
    template: PromptTemplate,
    tokenizer: Any,
    tokens: Tokens,
    device: torch.device,
    dtype: torch.dtype,
) -> BuiltModel:
    """The family's forward pass for this checkpoint on ``device``."""
    family, name = template.family, source.name
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    causal_lm = None
    if family.architecture == "sequence-classification":
        forward, model_config = _load_classifier(name, family, source, template, int(pad_id or 0), device, dtype)
    else:
        config = _base_config(family, facts)
        forward, causal_lm = _load_causal(name, family, source, tokens, int(pad_id or 0), device, dtype, config)
        model_config = causal_lm.config
    limit = _position_limit(model_config, tokenizer, family)
    return BuiltModel(
        forward=forward,
        dtype=dtype,
        position_limit=limit,
        default_max_length=_default_max_length(family, template, limit, name, facts.max_seq_length),
        cost=_cost_model(forward, model_config, device, dtype, causal=causal_lm is not None),
        causal_lm=causal_lm,
    )


def _base_config(family: RerankerFamily, facts: CheckpointFacts) -> Any | None:
    """For a checkpoint whose config names its publisher's own model type: the same settings as the
    transformers architecture its weights are (``family.remote_code_bases``); ``None`` for any other."""
    base = family.remote_code_bases.get(facts.model_type or "") if facts.remote_code else None
    if base is None:
        return None
    from transformers import AutoConfig

    settings = {k: v for k, v in facts.config.items() if k not in ("model_type", "auto_map", "architectures")}
    return AutoConfig.for_model(base, **settings)


def _from_pretrained(auto_class: Any, name: str, checkpoint: CheckpointSource, dtype: torch.dtype, **extra: Any) -> Any:
    """Load safetensors weights only; refuse checkpoints whose weights do not fit the architecture."""
    try:
        with quiet_loading():  # no "Loading weights" bar inside apps, servers and logs unless asked
            model, info = auto_class.from_pretrained(
                name, dtype=dtype, use_safetensors=True, output_loading_info=True, **extra, **checkpoint.options()
            )
    except (OSError, ValueError, ImportError) as error:
        raise ModelLoadError(_load_hint(name, checkpoint.revision, error)) from error
    missing = [k for k in info.get("missing_keys", []) if not k.endswith("position_ids")]
    if missing:
        raise ModelLoadError(
            f"model {name!r}: the checkpoint lacks weights the {type(model).__name__} architecture needs "
            f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}); it was saved for another "
            "architecture: check family="
        )
    return model.eval().requires_grad_(False)


def _load_causal(
    name: str,
    family: RerankerFamily,
    checkpoint: CheckpointSource,
    tokens: Tokens,
    pad_id: int,
    device: torch.device,
    dtype: torch.dtype,
    config: Any | None = None,
) -> tuple[CausalHeadForward, Any]:
    """The body and the family's head row; the full causal LM is returned for the load-time check only."""
    from transformers import AutoModelForCausalLM

    extra: dict[str, Any] = {"attn_implementation": "sdpa"}
    if config is not None:
        extra["config"] = config
    causal_lm = _from_pretrained(AutoModelForCausalLM, name, checkpoint, dtype, **extra)
    causal_lm.to(device)
    causal_lm.config.use_cache = False
    own_attention = _use_zerank_attention(causal_lm)
    head = causal_lm.get_output_embeddings()
    body = getattr(causal_lm, causal_lm.base_model_prefix, None)
    if head is None or body is None:
        raise ModelLoadError(f"model {name!r} ({type(causal_lm).__name__}) has no separable output head")
    weights = head.weight.detach().float()
    bias = getattr(head, "bias", None)
    bias_values = bias.detach().float() if bias is not None else None
    ids = head_token_ids(name, family, tokens)
    row = weights[ids[0]].clone() if len(ids) == 1 else weights[ids[0]] - weights[ids[1]]
    offset = 0.0
    if bias_values is not None:
        offset = float(bias_values[ids[0]]) if len(ids) == 1 else float(bias_values[ids[0]] - bias_values[ids[1]])
    forward = CausalHeadForward(
        body=body,
        row=row.to(device),
        bias=offset,
        pad_id=pad_id,
        device=device,
        supports_prefix_reuse=own_attention,
        packed=own_attention and _packs_rows(device, dtype),
    )
    return forward, causal_lm


def _use_zerank_attention(causal_lm: Any) -> bool:
    """Switch the model to the ``"zerank"`` attention (copy-free prefix reuse, packed rows) where it can run.

    It needs transformers' attention interface and plain causal attention: models with sliding-window layers
    keep SDPA (their masks are built by transformers) and are scored without prefix reuse, exactly.
    """
    config = causal_lm.config
    layer_types = getattr(config, "layer_types", None)
    sliding = "sliding_attention" in layer_types if layer_types else bool(getattr(config, "use_sliding_window", False))
    if sliding:
        return False
    causal_lm.set_attn_implementation(attention.register())
    return causal_lm.config._attn_implementation == attention.ATTENTION_NAME


def _packs_rows(device: torch.device, dtype: torch.dtype) -> bool:
    """Padding-free (varlen) rows: on CUDA in half precision with the flash-attn package; SDPA otherwise."""
    return device.type == "cuda" and dtype != torch.float32 and attention.flash_attn_varlen() is not None


def _cost_model(
    forward: Forward, model_config: Any, device: torch.device, dtype: torch.dtype, *, causal: bool
) -> CostModel:
    """The estimated cost of a forward pass of this model on this device (see ``batching.CostModel``)."""
    module = forward.body if isinstance(forward, CausalHeadForward) else forward.model
    embeddings = sum(
        p.numel() for m in module.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters(recurse=False)
    )
    parameters = sum(p.numel() for p in module.parameters()) - embeddings
    heads = int(getattr(model_config, "num_attention_heads", 1) or 1)
    head_dim = getattr(model_config, "head_dim", None) or int(model_config.hidden_size) // heads
    multiprocessors = 0
    if device.type == "cuda":
        multiprocessors = torch.cuda.get_device_properties(device).multi_processor_count
    speed = device_speed(device.type, half=dtype != torch.float32, multiprocessors=multiprocessors)
    return CostModel.estimate(
        speed,
        parameters=parameters,
        weight_bytes=parameters * torch.finfo(dtype).bits // 8,
        layers=int(getattr(model_config, "num_hidden_layers", 1) or 1),
        hidden_size=int(model_config.hidden_size),
        attention_width=heads * int(head_dim),
        causal=causal,
        packed=forward.packed,
    )


def head_token_ids(name: str, family: RerankerFamily, tokens: Tokens) -> tuple[int, ...]:
    """The vocabulary ids the family's head reads: (token,) or (true, false)."""
    ids = []
    for text in family.head.tokens:
        encoded = tokens.ids([text])[0]
        if len(encoded) != 1:
            raise ModelLoadError(
                f"model {name!r}: the tokenizer splits {text!r} into {encoded}; not a {family.name} checkpoint"
            )
        ids.append(encoded[0])
    return tuple(ids)


def _load_classifier(
    name: str,
    family: RerankerFamily,
    checkpoint: CheckpointSource,
    template: PromptTemplate,
    pad_id: int,
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[ClassifierForward, Any]:
    from transformers import AutoModelForSequenceClassification

    if not template.middle.ids and not template.head.ids:
        raise ModelLoadError(
            f"model {name!r}: the tokenizer's pair encoding puts no special tokens around query and document, "
            "so this is not a cross-encoder tokenizer (a decoder LLM converted to a classifier?). Load the "
            "original causal checkpoint with its family instead"
        )
    model = _from_pretrained(AutoModelForSequenceClassification, name, checkpoint, dtype)
    num_labels = int(model.config.num_labels)
    if num_labels not in (1, 2):
        raise ModelLoadError(
            f"model {name!r} classifies into {num_labels} labels; a reranker has one (relevance) or two "
            "(not relevant, relevant)"
        )
    model.to(device)
    takes_types = "token_type_ids" in inspect.signature(model.forward).parameters
    forward = ClassifierForward(model, num_labels, pad_id, device, takes_types)
    return forward, model.config


def _position_limit(model_config: Any, tokenizer: Any, family: RerankerFamily) -> int | None:
    limits = []
    positions = getattr(model_config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        limits.append(positions)
    tokenizer_limit = getattr(tokenizer, "model_max_length", None)
    sane = isinstance(tokenizer_limit, int) and 0 < tokenizer_limit < _SANE_TOKENIZER_LIMIT
    if isinstance(family.head, ClassifierLogit) and sane:
        limits.append(tokenizer_limit)
    return min(limits) if limits else None


def _default_max_length(
    family: RerankerFamily, template: PromptTemplate, limit: int | None, name: str, publisher: int | None
) -> int:
    """The family's default, else the publisher's (``max_seq_length`` of the sentence-transformers config, which
    ``CrossEncoder`` truncates at), else what the model can attend to."""
    default = family.default_max_length
    if default is not None and not family.max_length_counts_template:
        default += len(template.head) + len(template.tail)
    if default is None:
        default = publisher
    if default is None:
        if limit is None:
            raise ModelLoadError(f"model {name!r} states no maximum length; pass max_length=")
        return limit
    return min(default, limit) if limit is not None else default


def check_fast_path(built: BuiltModel, template: PromptTemplate, tokens: Tokens, name: str) -> None:
    """Refuse models whose logits are not ``head(body(x))`` (soft-capping, scaling): scores would be wrong."""
    forward, causal_lm = built.forward, built.causal_lm
    assert isinstance(forward, CausalHeadForward) and causal_lm is not None
    ids = head_token_ids(name, template.family, tokens)
    query, document = template.normalize(*_PROBE)
    segment = template.query_segment(tokens, query, template.effective_instruction(None), 1 << 30)
    (pair,) = template.encode(tokens, [(segment, document)], 1 << 30)
    with torch.inference_mode():
        logits = causal_lm(torch.tensor([list(pair.row.ids)], device=forward.device)).logits[0, -1].float()
        expected = float(logits[ids[0]] - (logits[ids[1]] if len(ids) == 2 else 0.0))
    got = forward.full([pair.row])[0]
    tolerance = 1e-3 if built.dtype == torch.float32 else 0.1 + 0.02 * abs(expected)
    if abs(got - expected) > tolerance:
        raise ModelLoadError(
            f"model {name!r}: projecting the last hidden state on the {template.family.name} head gives {got:.4f}, "
            f"the model's own logits give {expected:.4f}; this architecture is not supported"
        )
