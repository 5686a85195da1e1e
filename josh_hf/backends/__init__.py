"""Model backends: one ``generate(requests) -> outputs`` interface over local and remote models.

``TransformersBackend`` (torch) and ``OpenAIBackend`` (openai client) are imported lazily so
that ``import josh_hf.backends`` stays cheap.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from .base import Backend, GenerationOutput, GenerationRequest, SamplingParams, ToolCallOutput
from .scripted import ScriptedBackend, tool_call
from .toolcalls import parse_completion, parse_hermes_tool_calls

if TYPE_CHECKING:
    from .openai_backend import OpenAIBackend
    from .transformers_backend import TransformersBackend

__all__ = [
    "Backend",
    "GenerationOutput",
    "GenerationRequest",
    "OpenAIBackend",
    "SamplingParams",
    "ScriptedBackend",
    "ToolCallOutput",
    "TransformersBackend",
    "load_backend",
    "parse_completion",
    "parse_hermes_tool_calls",
    "tool_call",
]

_OPENAI_KWARGS = frozenset({"base_url", "api_key_env"})


def __getattr__(name: str) -> Any:
    if name == "TransformersBackend":
        from .transformers_backend import TransformersBackend

        return TransformersBackend
    if name == "OpenAIBackend":
        from .openai_backend import OpenAIBackend

        return OpenAIBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_backend(spec: Any, **kwargs: Any) -> Backend:
    """Build a backend from a short spec.

    * a :class:`Backend` instance → returned as is;
    * ``"scripted"`` → :class:`ScriptedBackend` (``script=`` kwarg, default empty);
    * ``"openai:<model>"`` or ``"openai:<model>@<base_url>"`` → :class:`OpenAIBackend`; a plain
      model name with ``base_url=`` / ``api_key_env=`` in ``kwargs`` does the same;
    * ``"transformers:<path or Hub id>"`` or any other string / path → :class:`TransformersBackend`.

    Remaining ``kwargs`` go to the backend's constructor.
    """
    if isinstance(spec, Backend):
        return spec
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"cannot build a backend from {spec!r}")
    if spec == "scripted":
        return ScriptedBackend(kwargs.pop("script", []), **kwargs)
    if spec.startswith("openai:") or (_OPENAI_KWARGS & kwargs.keys() and not os.path.exists(spec)):
        from .openai_backend import OpenAIBackend

        model = spec.removeprefix("openai:")
        # Model names do not contain "@", URLs may (user@host): split at the first one.
        if "@" in model:
            model, base_url = model.split("@", 1)
            kwargs.setdefault("base_url", base_url)
        if not model:
            raise ValueError(f"no model name in {spec!r}")
        return OpenAIBackend(model, **kwargs)
    from .transformers_backend import TransformersBackend

    return TransformersBackend(spec.removeprefix("transformers:"), **kwargs)
