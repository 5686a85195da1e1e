"""Turning a model's raw completion into ``(content, tool_calls)``.

transformers 5.x ships declarative *response templates* (``tokenizer.response_template`` +
``tokenizer.parse_response``); that is the first choice. Tokenizers on the Hub often do not
ship one yet, so — like ``transformers serve`` does — we fall back to a template chosen by
``model_type``, and when the strict parser rejects the text (broken JSON, a missing name) we
fall back to a lenient ``<tool_call>`` scanner that never raises: a call whose JSON does not
parse keeps its raw text as ``arguments`` so the agent loop can answer with an error message.
"""

from __future__ import annotations

import copy
import json
import logging
import re
from typing import Any

from .base import ToolCallOutput

logger = logging.getLogger(__name__)

HERMES_RESPONSE_TEMPLATE: dict[str, Any] = {
    # Same as transformers' serve fallback for Qwen2/2.5/3 (``cli/serving/utils.py``), copied
    # because that module is private to the CLI. It fits every Hermes-style template.
    "defaults": {"role": "assistant"},
    "start_anchor": "<|im_start|>assistant\n",
    "fields": {
        "reasoning_content": {"open": "<think>", "close": "</think>", "content": "text"},
        "tool_calls": {
            "open_pattern": r"\s*<tool_call>",
            "close": "</tool_call>",
            "repeats": True,
            "content": "json",
            "transform": {"type": "function", "function": "{content}"},
        },
        "content": {
            "close_pattern": r"\s*(?:<\|im_end\|>|<\|endoftext\|>|<\|eot_id\|>)",
            "content": "text",
        },
    },
}
"""Response template for Hermes / Qwen2.5-style ``<tool_call>{json}</tool_call>`` output."""

_HERMES_MODEL_TYPES = frozenset(
    {"qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "qwen3_next", "llama", "mistral", "hermes"}
)

_TOOL_CALL_BLOCK = re.compile(r"<tool_call>(.*?)(?:</tool_call>|\Z)", re.DOTALL)
_NAME_IN_BROKEN_JSON = re.compile(r'"name"\s*:\s*"([^"]*)"')


def response_template_for(tokenizer: Any, model_type: str | None = None) -> dict[str, Any] | None:
    """The tokenizer's own ``response_template``, else the Hermes one for model types that use it
    (or when the chat template itself mentions ``<tool_call>``), else None."""
    template = getattr(tokenizer, "response_template", None)
    if template is not None:
        return template
    chat_template = getattr(tokenizer, "chat_template", None)
    if model_type in _HERMES_MODEL_TYPES or (isinstance(chat_template, str) and "<tool_call>" in chat_template):
        return copy.deepcopy(HERMES_RESPONSE_TEMPLATE)
    return None


def _coerce_call(fn: Any, raw_body: str) -> ToolCallOutput:
    """One ``{"name", "arguments"}`` object → :class:`ToolCallOutput` (malformed → raw text)."""
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
        name = _NAME_IN_BROKEN_JSON.search(raw_body)
        return ToolCallOutput(name=name.group(1) if name else "", arguments=raw_body.strip())
    arguments = fn.get("arguments", fn.get("parameters", {}))
    if isinstance(arguments, str):
        # Some models double-encode the arguments as a JSON string.
        try:
            decoded = json.loads(arguments)
            arguments = decoded if isinstance(decoded, dict) else arguments
        except json.JSONDecodeError:
            pass
    return ToolCallOutput(name=fn["name"], arguments={} if arguments is None else arguments)


def parse_hermes_tool_calls(text: str) -> tuple[str, list[ToolCallOutput]]:
    """Lenient scanner for ``<tool_call>{json}</tool_call>`` blocks (an unclosed last block counts).

    Returns the text with the blocks removed, and one call per block. Never raises.
    """
    calls: list[ToolCallOutput] = []
    for match in _TOOL_CALL_BLOCK.finditer(text):
        body = match.group(1)
        try:
            parsed: Any = json.loads(body)
        except json.JSONDecodeError:
            parsed = None
        calls.append(_coerce_call(parsed, body))
    content = _TOOL_CALL_BLOCK.sub("", text).strip()
    return content, calls


def _strip_special(text: str, special_tokens: list[str]) -> str:
    for tok in special_tokens:
        if tok:
            text = text.replace(tok, "")
    return text


def parse_completion(
    raw: str,
    tokenizer: Any,
    *,
    prompt: str = "",
    tools: list[dict[str, Any]] | None = None,
    model_type: str | None = None,
) -> tuple[str, list[ToolCallOutput]]:
    """Split a raw completion (decoded *with* special tokens) into visible content and tool calls.

    Uses ``tokenizer.parse_response`` with the model's response template when there is one
    (``prompt`` is its ``prefix``: templates may pre-fill part of the assistant turn), and the
    lenient ``<tool_call>`` scanner when there is none or the strict parse fails.
    """
    special = [t for t in getattr(tokenizer, "all_special_tokens", []) if t]
    template = response_template_for(tokenizer, model_type)
    if template is not None and hasattr(tokenizer, "parse_response"):
        try:
            message = tokenizer.parse_response(raw, template, prefix=prompt, tools=tools)
            functions = [tc.get("function", tc) for tc in message.get("tool_calls") or []]
            # A call without a usable name is malformed: let the lenient scanner keep its raw text.
            if all(isinstance(fn, dict) and isinstance(fn.get("name"), str) and fn["name"] for fn in functions):
                calls = [_coerce_call(fn, "") for fn in functions]
                content = message.get("content") or ""
                return _strip_special(content, special).strip(), calls
        except Exception as exc:  # noqa: BLE001 - any parser failure means: use the lenient scanner
            logger.debug("strict response parsing failed (%s); using the lenient tool-call scanner", exc)
    content, calls = parse_hermes_tool_calls(raw)
    return _strip_special(content, special).strip(), calls
