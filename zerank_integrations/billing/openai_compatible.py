"""Send a prompt to an OpenAI-compatible ``/v1`` server and read the input tokens it billed.

Works with vLLM, Ollama (``http://127.0.0.1:11434/v1``), TGI, llama.cpp's server, ``transformers serve`` and
OpenAI itself, through the official ``openai`` SDK (retries with backoff, a timeout per request). Every way it
can fail - unreachable, timed out, refused (HTTP status and the server's own message), a reply without
``usage`` - is one :class:`LLMBillingError` with one clear line; the API key is held as a ``SecretStr`` and
never printed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import SecretStr

from zerank_integrations.accounting.bill import usage_input_tokens

__all__ = ["DEFAULT_API_KEY_ENV", "LLMBillingError", "OpenAICompatibleLLM", "bill_prompts"]

DEFAULT_API_KEY_ENV = "OPENAI_API_KEY"
_NO_KEY = "no-key"  # local servers take any key; the SDK wants one


class LLMBillingError(RuntimeError):
    """The LLM could not bill a prompt (one line saying why)."""


class OpenAICompatibleLLM:
    """Chat completions at ``base_url`` with ``model``; :meth:`billed_input_tokens` gives ``usage.prompt_tokens``.

    ``api_key``: a ``SecretStr`` or ``None`` (then ``$OPENAI_API_KEY``, or a placeholder that local servers
    accept). ``max_tokens`` bounds the answer (the bill's input side does not depend on it).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: SecretStr | str | None = None,
        max_tokens: int = 1,
        timeout: float = 120.0,
        max_retries: int = 2,
    ) -> None:
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ValueError(f"the LLM URL must be an http(s) URL of an OpenAI-compatible /v1 base, got {base_url!r}")
        if not isinstance(model, str) or not model.strip():
            raise ValueError("the LLM's model name must be a non-empty string (what the server calls the model)")
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise ValueError(f"max_tokens must be an int >= 1, got {max_tokens!r}")
        try:
            import openai
        except ImportError as exc:
            raise LLMBillingError(
                "sending prompts to an LLM needs the openai SDK: pip install 'zerank-integrations[bill]'"
            ) from exc
        if api_key is None:
            api_key = os.environ.get(DEFAULT_API_KEY_ENV) or _NO_KEY
        self._api_key = api_key if isinstance(api_key, SecretStr) else SecretStr(api_key)
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.max_tokens = max_tokens
        self.timeout = timeout
        self.max_retries = max_retries
        self._openai = openai
        self._client = openai.OpenAI(
            base_url=self.base_url,
            api_key=self._api_key.get_secret_value(),
            timeout=timeout,
            max_retries=max_retries,
        )

    def billed_input_tokens(self, messages: Sequence[Mapping[str, str]]) -> int:
        """Send ``messages``; the input tokens the server reports having billed."""
        openai = self._openai
        where = f"LLM {self.model!r} at {self.base_url}"
        try:
            reply = self._client.chat.completions.create(
                model=self.model, messages=[dict(m) for m in messages], max_tokens=self.max_tokens
            )
        except openai.APITimeoutError:
            raise LLMBillingError(
                f"{where} did not answer within {self.timeout:g} s ({self.max_retries} retries)"
            ) from None
        except openai.APIConnectionError as exc:
            cause = exc.__cause__ or exc
            raise LLMBillingError(
                f"{where} is unreachable ({type(cause).__name__}: {cause}); is the server running?"
            ) from None
        except openai.APIStatusError as exc:
            raise LLMBillingError(f"{where} refused the request: HTTP {exc.status_code}: {_detail(exc)}") from None
        tokens = usage_input_tokens(getattr(reply, "usage", None))
        if tokens is None:
            raise LLMBillingError(
                f"{where} returned no usage: the input tokens it billed are unknown (the server must report "
                "usage.prompt_tokens)"
            )
        return tokens

    def describe(self) -> str:
        return f"{self.model} at {self.base_url}"

    def __repr__(self) -> str:
        return f"OpenAICompatibleLLM(base_url={self.base_url!r}, model={self.model!r}, api_key=SecretStr('**********'))"


def _detail(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, Mapping):
        for key in ("detail", "message", "error"):
            value = body.get(key)
            if isinstance(value, Mapping):
                value = value.get("message")
            if value:
                return " ".join(str(value).split())[:300]
    return " ".join(str(getattr(exc, "message", exc)).split())[:300]


def bill_prompts(
    llm: OpenAICompatibleLLM,
    ledger: Any,
    calls: Sequence[tuple[str, Sequence[Any], Sequence[Any], Any]],
    *,
    counterfactual: bool = False,
    progress: Any = None,
) -> Any:
    """Send each (query, kept documents, all candidates, the ledger's ``TokenSavings``) prompt and bill it.

    The prompt is the ledger's (``ledger.render``) with the kept documents, and with ``counterfactual`` once
    more with every candidate. Returns a :class:`~zerank_integrations.accounting.bill.Bill`; the first failure
    raises :class:`LLMBillingError` (one line).
    """
    from zerank_integrations.accounting.bill import Bill, BilledCall

    if getattr(ledger, "prompt", None) is None:
        raise ValueError("billing prompts needs a ledger that knows the prompt: TokenLedger(..., prompt=...)")
    bill = Bill.for_ledger(ledger, llm=llm.model, derive_counterfactual=False)
    for query, kept, candidates, savings in calls:
        billed = llm.billed_input_tokens(ledger.render(query, kept))
        billed_all = llm.billed_input_tokens(ledger.render(query, candidates)) if counterfactual else None
        bill.add(
            BilledCall(
                query=query,
                billed_input_tokens=billed,
                predicted_input_tokens=getattr(savings, "input_tokens_kept", None),
                predicted_all_candidates=getattr(savings, "input_tokens_in", None),
                billed_all_candidates=billed_all,
            )
        )
        if progress is not None:
            progress(1)
    return bill
