"""The ``native`` agent format: the model's own chat template with ``tools=``.

The backend parses tool calls out of the completion (``GenerationOutput.tool_calls``). A
generation with tool calls is a tool step (its text, if any, stays in the context but is not
shown to the user); a generation without tool calls is speech and ends the turn. Results go
back as ``role: tool`` messages whose content is the result as JSON.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ..backends.base import GenerationOutput, GenerationRequest, SamplingParams
from .formats import BAD_JSON, NO_COMMAND, AgentFormat, AgentStep, Message, ParsedCall, StepError, result_text

NATIVE_SYSTEM_PROMPT = (
    "You are a customer-service agent for a travel and booking service in Cambridge, UK. "
    "Help the customer find and book restaurants, hotels, attractions and trains, using only "
    "the tools you are given: call a tool whenever you need facts from the database or want "
    "to make a booking, and never invent results. Do not offer anything the tools cannot do. "
    "Keep your answers to the customer short and friendly."
)

BAD_JSON_MESSAGE = "ERROR: INVALID API CALL! THE ARGUMENTS ARE NOT VALID JSON!"
EMPTY_OUTPUT_MESSAGE = "ERROR: EMPTY RESPONSE! Call a tool or answer the customer."


def _parse_arguments(arguments: Any) -> tuple[Any, StepError | None]:
    # Backends hand over the raw string when the JSON did not parse as an object; a string
    # that *is* JSON (say, a list) goes on to the environment, which answers with its error.
    if not isinstance(arguments, str):
        return ({} if arguments is None else arguments), None
    text = arguments.strip()
    if not text:
        return {}, None  # some APIs send "" for a call without arguments
    try:
        return json.loads(text), None
    except ValueError:
        return arguments, StepError(BAD_JSON, BAD_JSON_MESSAGE)


class NativeFormat(AgentFormat):
    """Chat-template tool calling (``tools=`` in the request, ``role: tool`` results)."""

    name = "native"

    def system_prompt(self, tools: Sequence[dict[str, Any]]) -> str:
        # The chat template renders the tools itself.
        return NATIVE_SYSTEM_PROMPT

    def request(
        self, context: Sequence[Message], tools: Sequence[dict[str, Any]], sampling: SamplingParams
    ) -> GenerationRequest:
        return GenerationRequest(messages=list(context), tools=list(tools), sampling=sampling)

    def parse(self, output: GenerationOutput) -> AgentStep:
        text = output.text or ""
        raw = output.raw or text
        if output.tool_calls:
            calls = []
            for tc in output.tool_calls:
                args, error = _parse_arguments(tc.arguments)
                calls.append(ParsedCall(name=tc.name, arguments=args, id=tc.id, error=error))
            return AgentStep(calls=calls, content=text.strip(), raw=raw)
        if not text.strip():
            return AgentStep(raw=raw, error=StepError(NO_COMMAND, EMPTY_OUTPUT_MESSAGE))
        return AgentStep(speech=text.strip(), raw=raw)

    def tool_result_messages(self, call: ParsedCall, result: Any) -> list[Message]:
        return [{"role": "tool", "tool_call_id": call.id, "name": str(call.name), "content": result_text(result)}]

    def step_messages(self, step: AgentStep, results: Sequence[Any]) -> list[Message]:
        out: list[Message] = []
        if step.calls:
            out.append({
                "role": "assistant",
                "content": step.content,
                # Arguments stay as the model wrote them (a raw string when JSON was bad), so
                # the context shows the model its own output.
                "tool_calls": [
                    {"type": "function", "id": c.id, "function": {"name": str(c.name), "arguments": c.arguments}}
                    for c in step.calls
                ],
            })
            for call, result in zip(step.calls, results):
                out.extend(self.tool_result_messages(call, result))
        if step.error is not None:
            # No tool call to attach the feedback to, so it comes as a user-role message.
            out.append({"role": "assistant", "content": step.content or step.raw.strip()})
            out.append({"role": "user", "content": step.error.message})
        if step.speech is not None:
            out.append(self.speech_message(step.speech))
        return out

    def speech_message(self, text: str) -> Message:
        return {"role": "assistant", "content": text}
