"""Independent references for the scoring tests: each family's published recipe written out plainly.

They share no code with the package: the rendered prompt (chat template or the card's format string), the
card's or package's own truncation, one forward of the model's full causal-LM head, the card's arithmetic.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


class CausalModel:
    """The checkpoint's own causal LM: full vocabulary logits at the last position, one prompt per forward."""

    def __init__(self, path: Path) -> None:
        self.tok = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        self._memo: dict[tuple[tuple[int, ...], str], float] = {}

    def n(self, text: str) -> int:
        return len(self.encode(text))

    def encode(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def token(self, text: str) -> int:
        (single,) = self.encode(text)
        return single

    @torch.inference_mode()
    def last_logits(self, ids: list[int]) -> torch.Tensor:
        return self.model(torch.tensor([ids])).logits[0, -1]

    def logit(self, ids: list[int], token: str) -> float:
        """One vocabulary entry of the last position's full logits; each prompt is run once per test module."""
        key = (tuple(ids), token)
        if key not in self._memo:
            self._memo[key] = self.last_logits(ids)[self.token(token)].item()
        return self._memo[key]


# -- zerank ---------------------------------------------------------------------------------------------------
class ZerankReference(CausalModel):
    """zerank as its publisher scores it, written out; the "Yes" logit.

    A checkpoint with its own ("query", "document") chat template (zerank-2-reranker, sentence-transformers
    layout): that template with add_generation_prompt=True, texts as given, which is what
    ``CrossEncoder(path).predict`` computes. Without one (zerank-1): the card's code, the stripped query as the
    system message and the stripped document as the user message. An instruction wraps the query as
    ``<query>…</query>\n<instruction>…</instruction>`` (ZeroEntropy's recommendation, vLLM's template).
    Over-long pairs follow the family's rule: the query is cut to 3/4 of the room beside the template first,
    then the rendered prompt's tokens are cut just before the template's suffix, which stays whole."""

    HEAD, MIDDLE, TAIL = "<|im_start|>system\n", "<|im_end|>\n<|im_start|>user\n", "<|im_end|>\n<|im_start|>assistant\n"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        probe = [{"role": "query", "content": "\ue000"}, {"role": "document", "content": "\ue001"}]
        try:
            rendered = self.tok.apply_chat_template(probe, tokenize=False, add_generation_prompt=True)
        except Exception:
            rendered = ""
        self.pair_template = "\ue000" in rendered and "\ue001" in rendered

    def system(self, query: str, instruction: str | None) -> str:
        if instruction is None:
            return query
        instruction = instruction if self.pair_template else instruction.strip()
        return f"<query>{query}</query>\n<instruction>{instruction}</instruction>"

    def render(self, system: str, document: str) -> str:
        roles = ("query", "document") if self.pair_template else ("system", "user")
        messages = [{"role": roles[0], "content": system}, {"role": roles[1], "content": document}]
        return self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def prompt(self, system: str, document: str) -> list[int]:
        return self.encode(self.render(system, document))

    def ids(
        self, query: str, document: str, instruction: str | None = None, max_length: int | None = None
    ) -> list[int]:
        if not self.pair_template:
            query, document = query.strip(), document.strip()
        ids = self.prompt(self.system(query, instruction), document)
        if max_length is None or len(ids) <= max_length:
            return ids
        content = max_length - self.n(self.HEAD) - self.n(self.TAIL)
        cap = content * 3 // 4
        if self.n(self.system(query, instruction)) > cap:
            encoded = self.tok(query, add_special_tokens=False, return_offsets_mapping=True)
            keep = cap - (self.n(self.system(query, instruction)) - len(encoded["input_ids"]))
            query = query[: encoded["offset_mapping"][keep - 1][1]]
            assert self.n(self.system(query, instruction)) <= cap
        ids = self.prompt(self.system(query, instruction), document)
        tail = self.encode(self.TAIL)
        return ids if len(ids) <= max_length else ids[: max_length - len(tail)] + tail

    def raw(self, query: str, document: str, instruction: str | None = None, max_length: int | None = None) -> float:
        return self.logit(self.ids(query, document, instruction, max_length), "Yes")


# vLLM's zerank-2 score template (examples/pooling/score/template/zerank2.jinja), restated: query in the system
# turn, document in the user turn, assistant turn opened; a non-blank `instruction` wraps the query.
VLLM_ZERANK2_TEMPLATE = """
{%- set q = messages | selectattr("role", "eq", "query") | map(attribute="content") | first -%}
{%- set d = messages | selectattr("role", "eq", "document") | map(attribute="content") | first -%}
{%- if instruction is defined and instruction is string and instruction | trim -%}
{%- set q = '<query>' + q + '</query>\\n<instruction>' + instruction + '</instruction>' -%}
{%- endif -%}
{{- '<|im_start|>system\\n' + q + '<|im_end|>\\n<|im_start|>user\\n' + d + '<|im_end|>\\n<|im_start|>assistant\\n' -}}
"""


class Qwen3CardReference(CausalModel):
    """The Qwen3-Reranker model card's scoring code, written out: fixed prefix and suffix tokenized on their own,
    the formatted pairs tokenized with longest_first truncation, left padding, a yes/no log-softmax."""

    PREFIX = (
        "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct "
        'provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
    )
    SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    DEFAULT = "Given a web search query, retrieve relevant passages that answer the query"

    @torch.inference_mode()
    def scores(
        self, pairs: list[tuple[str, str]], instruction: str | None, max_length: int
    ) -> tuple[list[float], list[float]]:
        """(raw = logit(yes) - logit(no), probability) per pair, computed as the card does, in one batch."""
        instruction = instruction or self.DEFAULT
        texts = [f"<Instruct>: {instruction}\n<Query>: {q}\n<Document>: {d}" for q, d in pairs]
        prefix, suffix = self.encode(self.PREFIX), self.encode(self.SUFFIX)
        inputs = self.tok(
            texts,
            padding=False,
            truncation="longest_first",
            return_attention_mask=False,
            max_length=max_length - len(prefix) - len(suffix),
        )
        rows = [prefix + ids + suffix for ids in inputs["input_ids"]]
        width = max(len(r) for r in rows)
        ids = torch.tensor([[self.tok.pad_token_id] * (width - len(r)) + r for r in rows])
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        logits = self.model(input_ids=ids, attention_mask=mask).logits[:, -1, :]
        yes, no = logits[:, self.token("yes")], logits[:, self.token("no")]
        probability = torch.nn.functional.log_softmax(torch.stack([no, yes], dim=1), dim=1)[:, 1].exp()
        return (yes - no).tolist(), probability.tolist()


class MxbaiPackageReference(CausalModel):
    """``mxbai_rerank.MxbaiRerankV2`` (0.1.6) rebuilt from its source: it calls ``tokenizer.prepare_for_model``,
    which transformers 5 removed; its "only_second" truncation of (query, separator + document) is written out.
    ``content_length`` is the package's ``max_length`` (without the fixed pieces)."""

    SEP = "\n"
    TASK = (
        "You are a search relevance expert who evaluates how well documents match search queries. For each "
        "query-document pair, carefully analyze the semantic relationship between them, then provide your binary "
        "relevance judgment (0 for not relevant, 1 for relevant).\nRelevance:"
    )
    PREFIX = (
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n"
    )
    SUFFIX = "<|im_end|>\n<|im_start|>assistant\n"

    def fixed_length(self) -> int:
        return sum(self.n(text) for text in (self.PREFIX, self.TASK, self.SUFFIX, self.SEP))

    @torch.inference_mode()
    def raw(self, pairs: list[tuple[str, str]], instruction: str | None, content_length: int) -> list[float]:
        model_max_length = self.model.config.max_position_embeddings
        rows = []
        for query, document in pairs:
            query_prompt = f"query: {query}"
            if instruction:
                query_prompt = f"instruction: {instruction}{self.SEP}{query_prompt}"
            query_ids = self.tok(
                query_prompt, add_special_tokens=False, max_length=content_length * 3 // 4, truncation=True
            )["input_ids"]
            document_room = min(model_max_length - len(query_ids) - self.fixed_length(), content_length)
            document_ids = self.tok(
                f"document: {document}", add_special_tokens=False, max_length=document_room, truncation=True
            )["input_ids"]
            second = self.encode(self.SEP) + document_ids
            second = second[: max(content_length - len(query_ids), 0)]  # prepare_for_model, truncation="only_second"
            rows.append(
                self.encode(self.PREFIX)
                + query_ids
                + second
                + self.encode(self.SEP)
                + self.encode(self.TASK)
                + self.encode(self.SUFFIX)
            )
        width = -(-max(len(r) for r in rows) // 8) * 8  # padding="longest", pad_to_multiple_of=8, left side
        ids = torch.tensor([[self.tok.pad_token_id] * (width - len(r)) + r for r in rows])
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        logits = self.model(input_ids=ids, attention_mask=mask).logits[:, -1, :]
        return (logits[:, self.token("1")] - logits[:, self.token("0")]).tolist()
