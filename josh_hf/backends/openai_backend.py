"""A backend for any OpenAI-compatible chat-completions server (OpenAI, vLLM, TGI, ``transformers serve``).

Requests run concurrently in a thread pool bounded by ``max_concurrency``; each one retries on
rate limits (429), server errors (5xx), 408/409, timeouts and connection errors with
exponential back-off and jitter, honouring ``Retry-After``. The client's own retries are off so
that this policy is the only one. A request that still fails returns a
:class:`GenerationOutput` with ``error`` set; it never raises.
"""

from __future__ import annotations

import copy
import email.utils
import json
import logging
import os
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .base import Backend, GenerationOutput, GenerationRequest, ToolCallOutput

logger = logging.getLogger(__name__)

_RETRY_STATUS = frozenset({408, 409, 429})


def _retry_after_seconds(headers: Any) -> float | None:
    """Seconds asked for by ``Retry-After`` / ``retry-after-ms`` (number or HTTP date), if any."""
    if headers is None:
        return None
    value = headers.get("retry-after-ms")
    if value is not None:
        try:
            return float(value) / 1000.0
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        return max(0.0, parsed.timestamp() - time.time()) if parsed is not None else None


def to_wire_messages(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Our chat format → OpenAI's: tool-call arguments become JSON strings, and assistant turns
    that only call tools get ``content=None`` when they have no text."""
    wire: list[dict[str, Any]] = []
    for message in messages:
        message = copy.deepcopy(dict(message))
        if message.get("tool_calls"):
            calls = []
            for i, call in enumerate(message["tool_calls"]):
                fn = dict(call.get("function", call))
                if not isinstance(fn.get("arguments"), str):
                    fn["arguments"] = json.dumps(fn.get("arguments") or {})
                calls.append(
                    {
                        "type": "function",
                        "id": call.get("id") or f"call_{i}",
                        "function": {"name": fn.get("name", ""), "arguments": fn["arguments"]},
                    }
                )
            message["tool_calls"] = calls
            message["content"] = message.get("content") or None
        wire.append(message)
    return wire


def parse_arguments(arguments: Any) -> Any:
    """Wire arguments (a JSON string) → dict; unparseable text stays the raw string."""
    if not isinstance(arguments, str):
        return arguments if arguments is not None else {}
    if not arguments.strip():
        return {}
    try:
        parsed = json.loads(arguments)
    except json.JSONDecodeError:
        return arguments
    return parsed if isinstance(parsed, dict) else arguments


class OpenAIBackend(Backend):
    """Chat completions over HTTP with the ``openai`` client.

    The API key is read from the environment variable ``api_key_env`` (never logged); local
    servers that need no key get a placeholder. ``max_tokens_param`` names the length field
    (``"max_completion_tokens"`` for OpenAI's reasoning models). ``sleep`` exists so tests can
    record back-off delays.
    """

    name = "openai"

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        max_concurrency: int = 16,
        timeout: float = 60,
        max_retries: int = 5,
        *,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        max_tokens_param: str = "max_tokens",
        extra_body: dict[str, Any] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        from openai import OpenAI

        self.model = model
        self.base_url = base_url
        self.max_concurrency = max(1, int(max_concurrency))
        self.max_retries = max(0, int(max_retries))
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.max_tokens_param = max_tokens_param
        self.extra_body = dict(extra_body or {})
        self._sleep = sleep
        api_key = os.environ.get(api_key_env) or "EMPTY"
        self.client = OpenAI(api_key=api_key, base_url=base_url, timeout=timeout, max_retries=0)
        self.attempts: list[int] = []
        """Attempts used by every request so far (for tests and diagnostics)."""

    def __repr__(self) -> str:  # never show the key
        return f"OpenAIBackend(model={self.model!r}, base_url={self.base_url!r})"

    def _payload(self, request: GenerationRequest) -> dict[str, Any]:
        sampling = request.sampling
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": to_wire_messages(request.messages),
            "temperature": max(sampling.temperature, 0.0),
            self.max_tokens_param: sampling.max_new_tokens,
        }
        if sampling.top_p < 1.0:
            payload["top_p"] = sampling.top_p
        if sampling.seed is not None:
            payload["seed"] = sampling.seed
        if sampling.stop:
            payload["stop"] = list(sampling.stop)
        if request.tools:
            payload["tools"] = request.tools
        extra = dict(self.extra_body)
        if sampling.top_k > 0:
            extra["top_k"] = sampling.top_k  # not an OpenAI field; vLLM/TGI read it from the body
        if extra:
            payload["extra_body"] = extra
        return payload

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """Exponential back-off with jitter; a server's Retry-After is a floor."""
        ceiling = min(self.backoff_max, self.backoff_base * (2**attempt))
        delay = ceiling / 2 + random.uniform(0, ceiling / 2)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.backoff_max))
        return delay

    def _retryable(self, exc: BaseException) -> tuple[bool, float | None]:
        import openai

        if isinstance(exc, (openai.APITimeoutError, openai.APIConnectionError)):
            return True, None
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            retry = status in _RETRY_STATUS or status >= 500
            return retry, _retry_after_seconds(getattr(exc.response, "headers", None))
        return False, None

    def _one(self, request: GenerationRequest) -> GenerationOutput:
        try:
            payload = self._payload(request)
        except Exception as exc:  # noqa: BLE001 - e.g. unserialisable arguments
            return GenerationOutput(text="", error=f"bad request: {type(exc).__name__}: {exc}")
        attempt = 0
        while True:
            try:
                response = self.client.chat.completions.create(**payload)
                self.attempts.append(attempt + 1)
                return self._convert(response)
            except Exception as exc:  # noqa: BLE001 - every failure ends as an error output
                retry, retry_after = self._retryable(exc)
                if not retry or attempt >= self.max_retries:
                    self.attempts.append(attempt + 1)
                    return GenerationOutput(text="", error=f"{type(exc).__name__}: {exc}")
                delay = self._delay(attempt, retry_after)
                logger.info("retrying chat completion in %.2fs after %s", delay, type(exc).__name__)
                self._sleep(delay)
                attempt += 1

    @staticmethod
    def _convert(response: Any) -> GenerationOutput:
        if not getattr(response, "choices", None):
            return GenerationOutput(text="", error=f"no choices in response: {response!r}"[:500])
        choice = response.choices[0]
        message = choice.message
        calls = [
            ToolCallOutput(
                name=call.function.name or "", arguments=parse_arguments(call.function.arguments), id=call.id
            )
            for call in (message.tool_calls or [])
            if getattr(call, "function", None) is not None
        ]
        usage = getattr(response, "usage", None)
        text = message.content or ""
        raw = text
        if calls:
            # The server already parsed the calls: keep a Hermes-style rendering as the raw text.
            raw += "".join(
                "\n<tool_call>\n" + json.dumps({"name": c.name, "arguments": c.arguments}) + "\n</tool_call>"
                for c in calls
            )
        return GenerationOutput(
            text=text,
            tool_calls=calls,
            raw=raw,
            prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
            completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
            finish_reason=choice.finish_reason,
        )

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationOutput]:
        """Send every request (at most ``max_concurrency`` in flight); outputs keep the input order."""
        if not requests:
            return []
        workers = min(self.max_concurrency, len(requests))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="openai-backend") as pool:
            return list(pool.map(self._one, requests))

    def close(self) -> None:
        self.client.close()
