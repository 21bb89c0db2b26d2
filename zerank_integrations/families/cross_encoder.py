"""Classic cross-encoders: ``*ForSequenceClassification`` checkpoints (BERT, XLM-RoBERTa, ModernBERT, ...).

Recipe (sentence-transformers ``CrossEncoder``): the tokenizer's own pair encoding of (query, document) with
its special tokens; the model's classification head gives the score. One label: raw = the logit,
probability = sigmoid(raw). Two labels: raw = logit[1] - logit[0], probability = softmax(...)[1] =
sigmoid(raw). The document is truncated first. No prefix reuse: attention is bidirectional.

Decoder LLMs converted to classifiers (``Qwen3ForSequenceClassification`` and the like) are not covered:
their prompt is not the tokenizer's pair encoding; load the original causal checkpoint with its family.
"""

from zerank_integrations.base import Calibration
from zerank_integrations.families.base import ClassifierLogit, KnownModel, PromptFormat, RerankerFamily

CARD = "model card on huggingface.co"

CROSS_ENCODER = RerankerFamily(
    name="cross-encoder",
    summary="sequence-classification cross-encoders: tokenizer pair encoding, classifier logit, sigmoid",
    architecture="sequence-classification",
    head=ClassifierLogit(),
    calibration=Calibration(temperature=1.0),
    prompt=PromptFormat(query="{query}", document="{document}", pieces="tokenizer_pair"),
    default_max_length=None,  # the checkpoint's own limit (tokenizer model_max_length / positions)
    models=(
        KnownModel("BAAI/bge-reranker-v2-m3", "568M", "Apache-2.0", CARD, "2026-11-22"),
        KnownModel("cross-encoder/ms-marco-MiniLM-L6-v2", "23M", "Apache-2.0", CARD, "2026-11-22"),
        KnownModel("Alibaba-NLP/gte-reranker-modernbert-base", "149M", "Apache-2.0", CARD, "2026-11-22"),
    ),
    reference="sentence-transformers CrossEncoder (sequence-classification Transformer module)",
)
