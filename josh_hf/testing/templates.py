"""Training variants of the tiny models' chat template.

TRL's ``assistant_only_loss=True`` needs a chat template with ``{% generation %}`` markers (the
tokenizer's ``return_assistant_tokens_mask`` marks the characters rendered inside them). TRL
patches the templates it knows (Qwen2.5, Llama 3, ...) itself, but raises for any other, and the
tiny models' Hermes-style template (:data:`josh_hf.testing.tiny.CHAT_TEMPLATE`) is not one of
them. :data:`TRAINING_CHAT_TEMPLATE` is the same template with each assistant message, from the
newline after ``<|im_start|>assistant`` to its ``<|im_end|>\\n``, inside the markers: the content,
the tool calls and the end-of-turn token are trained, the role header is not (as in TRL's
``qwen2_5_training.jinja``). Rendering is otherwise identical, character for character.
"""

from __future__ import annotations

from .tiny import CHAT_TEMPLATE

_ASSISTANT_OPEN = "        {{- '<|im_start|>assistant' }}\n"
_ASSISTANT_CLOSE = "        {{- '<|im_end|>\\n' }}\n    {%- elif message.role == 'tool' %}"


def add_generation_markers(template: str = CHAT_TEMPLATE) -> str:
    """``template`` (the tiny Hermes-style one) with ``{% generation %}`` around each assistant turn.

    Raises ``ValueError`` if the template does not have the expected assistant block (so a change
    to the tiny template fails loudly here instead of silently training on nothing).
    """
    if template.count(_ASSISTANT_OPEN) != 1 or template.count(_ASSISTANT_CLOSE) != 1:
        raise ValueError("the template's assistant block is not the tiny Hermes one; add the markers by hand")
    template = template.replace(_ASSISTANT_OPEN, _ASSISTANT_OPEN + "        {%- generation %}\n")
    return template.replace(
        _ASSISTANT_CLOSE,
        "        {{- '<|im_end|>\\n' }}\n        {%- endgeneration %}\n    {%- elif message.role == 'tool' %}",
    )


TRAINING_CHAT_TEMPLATE: str = add_generation_markers(CHAT_TEMPLATE)
"""The tiny chat template with ``{% generation %}`` markers, for ``assistant_only_loss=True``."""

__all__ = ["TRAINING_CHAT_TEMPLATE", "add_generation_markers"]
