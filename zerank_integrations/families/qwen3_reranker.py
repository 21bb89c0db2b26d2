"""Qwen3-Reranker (Qwen/Qwen3-Reranker-0.6B, -4B, -8B).

Recipe (the model card's scoring code): a fixed system prompt, the user turn
``<Instruct>: {instruction}\\n<Query>: {query}\\n<Document>: {document}`` (the card's default instruction when
none is given) and the assistant turn opened with an empty ``<think>`` block. The card tokenizes its fixed
prefix and suffix on their own and the formatted user text as one string; truncation cuts that string's end.
Raw score = logit("yes") - logit("no"); probability = softmax over ("no", "yes") = sigmoid(raw).

The query segment ends at ``<Document>:`` and the document segment starts with the space after it: a
pre-tokenizer boundary whatever the document holds, so the two can be tokenized apart (and the query part
reused across documents) with the card's exact tokens.
"""

from zerank_integrations.base import Calibration
from zerank_integrations.families.base import KnownModel, LogitDifference, PromptFormat, RerankerFamily

SYSTEM_PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct "
    'provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
ASSISTANT_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
CARD = "model card on huggingface.co"

QWEN3_RERANKER = RerankerFamily(
    name="qwen3-reranker",
    summary="Qwen3-Reranker: fixed judge prompt with <Instruct>/<Query>/<Document>, yes/no log-odds",
    architecture="causal-lm",
    head=LogitDifference(true_token="yes", false_token="no"),
    calibration=Calibration(temperature=1.0),
    prompt=PromptFormat(
        query="<Instruct>: {instruction}\n<Query>: {query}\n<Document>:",
        with_instruction="<Instruct>: {instruction}\n<Query>: {query}\n<Document>:",
        default_instruction=DEFAULT_INSTRUCTION,
        document=" {document}",
        head=(SYSTEM_PREFIX,),
        tail=(ASSISTANT_SUFFIX,),
        joint_segments=True,
    ),
    default_max_length=8192,  # max_length in the card's scoring code
    models=tuple(
        KnownModel(f"Qwen/Qwen3-Reranker-{size}", size, "Apache-2.0", CARD, "2026-11-22")
        for size in ("0.6B", "4B", "8B")
    ),
    hub_id_prefixes=("Qwen/Qwen3-Reranker-",),
    vllm_hf_overrides={
        "architectures": ["Qwen3ForSequenceClassification"],
        "classifier_from_token": ["no", "yes"],
        "is_original_qwen3_reranker": True,
    },
    reference="Qwen3-Reranker model card (transformers usage); vLLM's qwen3_reranker.jinja score template",
)
