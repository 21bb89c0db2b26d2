"""mxbai-rerank-v2 (mixedbread-ai/mxbai-rerank-base-v2, -large-v2).

Recipe (the official ``mxbai-rerank`` package, ``MxbaiRerankV2``): a Qwen chat prefix, then the query part
(``query: {query}``, or ``instruction: {instruction}\\nquery: {query}``) cut to three quarters of
``max_length`` tokens, a newline, ``document: {document}`` cut so that query + newline + document fit
``max_length``, then a newline, the fixed task prompt and the assistant prefix. Every piece is tokenized on its
own. The package's ``max_length`` (default 8192) excludes the fixed pieces. Raw score = logit("1") -
logit("0") at the last position; probability = sigmoid(raw), the package's own ``sigmoid(logits) > 0.5``
decision rule (its optional ``normalize`` shift by a per-model constant is not applied).
"""

from zerank_integrations.base import Calibration
from zerank_integrations.families.base import KnownModel, LogitDifference, PromptFormat, RerankerFamily

CHAT_PREFIX = (
    "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
    "<|im_start|>user\n"
)
CHAT_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n"
SEPARATOR = "\n"
TASK_PROMPT = (
    "You are a search relevance expert who evaluates how well documents match search queries. For each "
    "query-document pair, carefully analyze the semantic relationship between them, then provide your binary "
    "relevance judgment (0 for not relevant, 1 for relevant).\nRelevance:"
)
SOURCE = "mixedbread.com model docs"

MXBAI_RERANK_V2 = RerankerFamily(
    name="mxbai-rerank-v2",
    summary="Mixedbread mxbai-rerank-v2: Qwen2.5 causal LM, query/document prompt, '1' vs '0' log-odds",
    architecture="causal-lm",
    head=LogitDifference(true_token="1", false_token="0"),
    calibration=Calibration(temperature=1.0),
    prompt=PromptFormat(
        query="query: {query}",
        with_instruction="instruction: {instruction}\nquery: {query}",
        document="document: {document}",
        head=(CHAT_PREFIX,),
        middle=(SEPARATOR,),
        tail=(SEPARATOR, TASK_PROMPT, CHAT_SUFFIX),
        query_truncation="tokens",
    ),
    default_max_length=8192,  # the package's default, counted without the fixed pieces
    max_length_counts_template=False,
    models=(
        KnownModel("mixedbread-ai/mxbai-rerank-base-v2", "0.5B", "Apache-2.0", SOURCE, "2026-11-22"),
        KnownModel("mixedbread-ai/mxbai-rerank-large-v2", "1.5B", "Apache-2.0", SOURCE, "2026-11-22"),
    ),
    hub_id_prefixes=("mixedbread-ai/mxbai-rerank-",),
    vllm_hf_overrides={
        "architectures": ["Qwen2ForSequenceClassification"],
        "classifier_from_token": ["0", "1"],
        "method": "from_2_way_softmax",
    },
    reference="mxbai-rerank 0.1.6, mxbai_rerank/mxbai_rerank_v2.py (MxbaiRerankV2.prepare_inputs / forward)",
)
