"""The ``react`` agent format: the reference's ``PLAN`` / ``APICALL`` / ``SPEAK`` text protocol.

The system prompt lists the tools as JSON. The model answers with commands, each closed by
``<COMMAND_END>``: ``PLAN <thoughts>``, ``APICALL {"name": ..., "parameters": {...}}``,
``SPEAK <text for the customer>``. Each APICALL's result comes back as a user-role message
``APIRETURN <result as JSON>``; SPEAK ends the turn.

Parsing rules (lenient where the intent is unambiguous, strict where it is not):

* Commands are the upper-case keywords ``PLAN``, ``APICALL``, ``SPEAK`` (optionally followed
  by ``:`` and wrapped in markdown ``**``); a command runs until ``<COMMAND_END>`` or the next
  keyword, so a missing ``<COMMAND_END>`` is tolerated. Text before the first keyword is
  ignored. Output without any keyword is an error (``no_command``), never taken as speech.
* Commands run in order: every APICALL before the first SPEAK is executed; the first SPEAK
  ends the turn and anything after it is ignored (as the reference does). A PLAN with no
  APICALL or SPEAK after it is an error when nothing else was asked for, else dropped.
* The APICALL payload is the first JSON object in the command (trailing text is ignored).
  JSON is tried first, then a Python literal, so ``{'name': 'x'}`` with single quotes is
  accepted; anything else is ``bad_json``. A payload that is not an object with a ``name`` is
  ``bad_call``. ``"arguments"`` is accepted in place of ``"parameters"``; neither means no
  parameters. Both errors are answered without touching the environment; unknown tools and
  bad parameters (wrong names, list or dict values, non-dict parameters) go to the
  environment, which records them and answers with the reference's error strings.
* In the context, an executed call is written back as canonical JSON, so the model (and any
  training data harvested from the context) sees exactly what was executed.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Sequence
from typing import Any

from ..backends.base import GenerationOutput, GenerationRequest, SamplingParams
from .formats import (
    BAD_CALL,
    BAD_JSON,
    NO_COMMAND,
    AgentFormat,
    AgentStep,
    Message,
    ParsedCall,
    StepError,
    result_text,
    tools_json,
)

COMMAND_END = "<COMMAND_END>"
APIRETURN = "APIRETURN"

REACT_SYSTEM_PROMPT = """\
You are a customer-service agent for a travel and booking service in Cambridge, UK. You help \
customers find and book restaurants, hotels, attractions and trains. You can only do what the \
APIs below allow, so never promise anything else, and never invent facts that an API did not \
return.

The APIs, as JSON schemas:
{tools}

Reply with commands. Start each command with its keyword and close it with <COMMAND_END>:
- PLAN <private notes on what to do next> <COMMAND_END>
- APICALL {{"name": "<api name>", "parameters": {{"<parameter>": "<value>"}}}} <COMMAND_END>
- SPEAK <your message to the customer> <COMMAND_END>

How it works:
- Only SPEAK reaches the customer. PLAN and APICALL are private.
- The result of an APICALL comes back to you in a message that starts with APIRETURN.
- Parameter values are strings. Leave out the parameters you do not know.
- End every reply with an APICALL (to get a result) or a SPEAK (which ends your turn).

Example reply:
PLAN The customer wants a cheap hotel in the north, so I search for one. <COMMAND_END>
APICALL {{"name": "search_hotel", "parameters": {{"area": "north", "pricerange": "cheap"}}}} <COMMAND_END>
"""

NO_COMMAND_MESSAGE = (
    "ERROR: NO COMMAND FOUND! Reply with PLAN, APICALL or SPEAK commands, each closed by <COMMAND_END>."
)
PLAN_ONLY_MESSAGE = "ERROR: A PLAN MUST BE FOLLOWED BY AN APICALL OR A SPEAK COMMAND!"
BAD_JSON_MESSAGE = 'ERROR: INVALID API CALL! WRITE IT AS JSON: {"name": "<api name>", "parameters": {...}}'
BAD_CALL_MESSAGE = 'ERROR: INVALID API CALL! IT MUST BE A JSON OBJECT WITH A "name" AND "parameters"!'

_END = re.compile(r"<\s*/?\s*COMMAND_END\s*>?")
_KEYWORD = re.compile(r"\**\b(PLAN|APICALL|SPEAK)\b\**[ \t]*:?\**")


def split_commands(text: str) -> list[tuple[str, str]]:
    """``[(keyword, body), ...]`` in order of appearance (see the module docstring)."""
    commands: list[tuple[str, str]] = []
    for chunk in _END.split(text):
        matches = list(_KEYWORD.finditer(chunk))
        for i, m in enumerate(matches):
            stop = matches[i + 1].start() if i + 1 < len(matches) else len(chunk)
            commands.append((m.group(1), chunk[m.end():stop].strip()))
    return commands


def _load_object(body: str) -> Any:
    """The first JSON (or Python-literal) value starting at the first ``{``; raises ValueError."""
    start = body.find("{")
    if start < 0:
        raise ValueError("no JSON object")
    try:
        value, _ = json.JSONDecoder().raw_decode(body[start:])
        return value
    except ValueError:
        pass
    end = body.rfind("}")
    try:
        value = ast.literal_eval(body[start:end + 1])
        # Round-trip through JSON: tuples become lists (which the env then refuses as values)
        # and anything JSON cannot hold (sets, bytes) is refused here.
        return json.loads(json.dumps(value))
    except Exception as e:  # noqa: BLE001 - literal_eval raises many kinds (SyntaxError, RecursionError, ...)
        raise ValueError(str(e)) from None


def parse_apicall(body: str) -> ParsedCall:
    """One APICALL command's payload as a call (with ``error`` set when it is unusable)."""
    try:
        obj = _load_object(body)
    except ValueError:
        return ParsedCall(name=None, arguments=body, raw=body, error=StepError(BAD_JSON, BAD_JSON_MESSAGE))
    if not isinstance(obj, dict) or obj.get("name") is None:
        return ParsedCall(name=None, arguments=body, raw=body, error=StepError(BAD_CALL, BAD_CALL_MESSAGE))
    if "parameters" in obj:
        params = obj["parameters"]
    else:
        params = obj.get("arguments", {})
    return ParsedCall(name=obj["name"], arguments=params, raw=body)


def _join(plans: list[str]) -> str | None:
    return " ".join(p for p in plans if p) or None


class ReactFormat(AgentFormat):
    """PLAN / APICALL / SPEAK commands in plain text (no ``tools=`` in the request)."""

    name = "react"

    def system_prompt(self, tools: Sequence[dict[str, Any]]) -> str:
        # The template doubles its literal braces; {tools} is its one field.
        return REACT_SYSTEM_PROMPT.format(tools=tools_json(tools))

    def request(
        self, context: Sequence[Message], tools: Sequence[dict[str, Any]], sampling: SamplingParams
    ) -> GenerationRequest:
        return GenerationRequest(messages=list(context), tools=None, sampling=sampling)

    def parse(self, output: GenerationOutput) -> AgentStep:
        text = output.text or output.raw or ""
        step = AgentStep(raw=text)
        plans: list[str] = []
        commands = split_commands(text)
        for keyword, body in commands:
            if keyword == "PLAN":
                plans.append(body)
            elif keyword == "APICALL":
                call = parse_apicall(body)
                call.plan, plans = _join(plans), []
                step.calls.append(call)
            else:  # SPEAK
                step.speech, step.plan, plans = body, _join(plans), []
                break
        if step.speech is None and not step.calls:
            step.plan = _join(plans)
            message = PLAN_ONLY_MESSAGE if commands else NO_COMMAND_MESSAGE
            step.error = StepError(NO_COMMAND, message)
        return step

    def tool_result_messages(self, call: ParsedCall, result: Any) -> list[Message]:
        return [{"role": "user", "content": f"{APIRETURN} {result_text(result)}"}]

    @staticmethod
    def _prefix(plan: str | None) -> str:
        return f"PLAN {plan} {COMMAND_END} " if plan else ""

    def _call_text(self, call: ParsedCall) -> str:
        if call.error is not None:
            return call.raw
        return json.dumps({"name": call.name, "parameters": call.arguments}, ensure_ascii=False)

    def step_messages(self, step: AgentStep, results: Sequence[Any]) -> list[Message]:
        # One assistant message per action, each APICALL followed by its APIRETURN: the roles
        # alternate as chat templates require, as in the reference.
        out: list[Message] = []
        for call, result in zip(step.calls, results):
            content = f"{self._prefix(call.plan)}APICALL {self._call_text(call)} {COMMAND_END}"
            out.append({"role": "assistant", "content": content})
            out.extend(self.tool_result_messages(call, result))
        if step.error is not None:
            written = self._prefix(step.plan).strip() if step.plan else step.raw.strip()
            out.append({"role": "assistant", "content": written})
            out.append({"role": "user", "content": step.error.message})
        if step.speech is not None:
            out.append({"role": "assistant", "content": f"{self._prefix(step.plan)}SPEAK {step.speech} {COMMAND_END}"})
        return out

    def speech_message(self, text: str) -> Message:
        return {"role": "assistant", "content": f"SPEAK {text} {COMMAND_END}"}
