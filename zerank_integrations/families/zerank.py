"""zerank (ZeroEntropy): zerank-2, zerank-1, zerank-1-small.

Recipe (the model cards and ZeroEntropy's own scoring code): the tokenizer's chat template with the stripped
query as the system message and the stripped document as the user message, generation prompt added; the
score is the logit of "Yes" at the last position and the probability ``sigmoid(logit / 5)``. With an
instruction the system message is ``<query>{query}</query>\\n<instruction>{instruction}</instruction>``
(ZeroEntropy's recommended wrapping, identical to vLLM's zerank-2 score template); without one the prompt is
the plain recipe, byte for byte.
"""

from zerank_integrations.base import Calibration
from zerank_integrations.families.base import KnownModel, PromptFormat, RerankerFamily, TokenLogit

CARD = "model card on huggingface.co"

ZERANK = RerankerFamily(
    name="zerank",
    summary="ZeroEntropy zerank: Qwen3 causal LM, chat-template prompt, 'Yes' logit, sigmoid(logit / 5)",
    architecture="causal-lm",
    head=TokenLogit("Yes"),
    calibration=Calibration(temperature=5.0),
    prompt=PromptFormat(
        query="{query}",
        with_instruction="<query>{query}</query>\n<instruction>{instruction}</instruction>",
        document="{document}",
        pieces="chat_template",
        chat_roles=("system", "user"),
        strip=True,
        # byte for byte what the Qwen3 chat template renders for this recipe (and zerank-2-reranker's own pair
        # template, per the parity reports quoted in tests/test_published_layouts.py)
        expected_text="<|im_start|>system\n{query}<|im_end|>\n<|im_start|>user\n{document}<|im_end|>\n"
        "<|im_start|>assistant\n",
    ),
    default_max_length=32_768,  # "Context Length 32,768 tokens" on the zerank-2 card
    models=(
        KnownModel(
            "zeroentropy/zerank-2-reranker", "4B", "CC-BY-NC-4.0", CARD, "2026-11-22", aliases=("zeroentropy/zerank-2",)
        ),
        KnownModel("zeroentropy/zerank-1", "4B", "CC-BY-NC-4.0", CARD, "2026-11-22"),
        KnownModel("zeroentropy/zerank-1-small", "1.7B", "Apache-2.0", CARD, "2026-11-22"),
    ),
    hub_id_prefixes=("zeroentropy/zerank-",),
    vllm_hf_overrides={
        "architectures": ["Qwen3ForSequenceClassification"],
        "classifier_from_token": ["Yes"],
        "method": "no_post_processing",
    },
    reference="zerank-2 model card; vLLM examples/pooling/score/template/zerank2.jinja for instructions",
    pair_template_instruction="<query>{query}</query>\n<instruction>{instruction}</instruction>",
    # zerank-2's first upload and the zerank-1 repositories: model_type "zeroentropy" in config.json, served by
    # modeling_zeranker.py; the weights are a plain Qwen3ForCausalLM's (the mlx and ONNX ports read them so).
    remote_code_bases={"zeroentropy": "qwen3"},
)
