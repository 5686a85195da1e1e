"""Tiny random-weight chat models with a real tool-calling chat template, built offline in seconds.

The tokenizer is a byte-level BPE trained locally (so any text round-trips, like GPT-2/Qwen
tokenizers) on ToolWOZ-flavoured text; the chat template follows the Qwen2.5 / Hermes format:
tools listed in the system turn, assistant calls as ``<tool_call>{"name", "arguments"}</tool_call>``,
tool results wrapped in ``<tool_response>`` inside a user turn. The saved directory loads with
``AutoTokenizer`` / ``AutoModelForCausalLM`` like any Hub checkpoint (and ``transformers serve``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from ..backends.toolcalls import HERMES_RESPONSE_TEMPLATE

SPECIAL_TOKENS: tuple[str, ...] = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
"""Control tokens (skipped by ``decode(skip_special_tokens=True)``)."""

MARKUP_TOKENS: tuple[str, ...] = (
    "<tool_call>",
    "</tool_call>",
    "<tool_response>",
    "</tool_response>",
    "<tools>",
    "</tools>",
    "<think>",
    "</think>",
)
"""Single-token markup that stays visible when decoding, as in Qwen2.5's tokenizer."""

TOOLS_BLOCK = """\
    {{- '\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n' }}
    {{- 'You are provided with function signatures within <tools></tools> XML tags:\\n<tools>' }}
    {%- for tool in tools %}
        {{- '\\n' }}{{- tool | tojson }}
    {%- endfor %}
    {{- '\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments ' }}
    {{- 'within <tool_call></tool_call> XML tags:\\n<tool_call>\\n' }}
    {{- '{"name": <function-name>, "arguments": <args-json-object>}\\n</tool_call><|im_end|>\\n' }}
"""
"""The template's system-turn tool list (Hermes/Qwen2.5 style); variants swap it out."""

CHAT_TEMPLATE = """\
{%- macro render_content(content) -%}
    {%- if content is none -%}
    {%- elif content is string -%}{{- content -}}
    {%- else -%}{%- for part in content -%}{%- if part.text is defined -%}{{- part.text -}}{%- endif -%}{%- endfor -%}
    {%- endif -%}
{%- endmacro -%}
{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0].role == 'system' %}
        {{- render_content(messages[0].content) }}
    {%- else %}
        {{- 'You are a helpful assistant.' }}
    {%- endif %}
""" + TOOLS_BLOCK + """{%- elif messages and messages[0].role == 'system' %}
    {{- '<|im_start|>system\\n' + render_content(messages[0].content) + '<|im_end|>\\n' }}
{%- endif %}
{%- for message in messages %}
    {%- if message.role == 'user' or (message.role == 'system' and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\\n' + render_content(message.content) + '<|im_end|>\\n' }}
    {%- elif message.role == 'assistant' %}
        {{- '<|im_start|>assistant' }}
        {%- if message.content %}
            {{- '\\n' + render_content(message.content) }}
        {%- endif %}
        {%- for tool_call in message.tool_calls or [] %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\\n<tool_call>\\n{"name": "' + tool_call.name + '", "arguments": ' }}
            {%- if tool_call.arguments is string %}
                {{- tool_call.arguments }}
            {%- else %}
                {{- tool_call.arguments | tojson }}
            {%- endif %}
            {{- '}\\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == 'tool' %}
        {%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' + render_content(message.content) + '\\n</tool_response>' }}
        {%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""
"""Qwen2.5-style chat template with tool support (content may be a string or a list of text parts)."""

_TOOLS = (
    "search_hotel",
    "search_restaurant",
    "search_attraction",
    "search_train",
    "book_hotel",
    "book_restaurant",
    "book_train",
    "book_attraction",
)
_SLOTS = (
    "name",
    "area",
    "pricerange",
    "stars",
    "type",
    "parking",
    "internet",
    "food",
    "day",
    "people",
    "stay",
    "time",
    "departure",
    "destination",
    "leaveAt",
    "arriveBy",
    "trainID",
    "refer_number",
)
_VALUES = (
    "centre",
    "north",
    "south",
    "east",
    "west",
    "cheap",
    "moderate",
    "expensive",
    "yes",
    "no",
    "monday",
    "tuesday",
    "friday",
    "saturday",
    "cambridge",
    "london kings cross",
    "italian",
    "chinese",
    "indian",
    "guesthouse",
    "hotel",
    "museum",
    "college",
    "4",
    "2",
    "3",
    "17:15",
    "09:30",
)
_PHRASES = (
    "I am looking for a place to stay in the centre of town.",
    "Can you book a table for 2 people at 18:30 on friday?",
    "I need a train from cambridge to london kings cross leaving after 09:30.",
    "There are 3 guesthouses in the north that have free parking and internet.",
    "Your booking was successful. The reference number is ABC123.",
    "Is there anything else I can help you with today?",
    "No, that is all. Thank you, goodbye!",
    "Sure, what area of town would you like to stay in?",
    "I would recommend the acorn guest house. It is moderately priced.",
    "You are a helpful customer service agent for the Cambridge TownInfo centre.",
    "ERROR: INVALID API CALL!",
)


def default_corpus() -> list[str]:
    """ToolWOZ-flavoured training text: dialogue phrases, tool calls and JSON results."""
    lines = list(_PHRASES)
    for i, tool in enumerate(_TOOLS):
        args = {_SLOTS[(i + j) % len(_SLOTS)]: _VALUES[(i * 3 + j) % len(_VALUES)] for j in range(3)}
        lines.append(f'<tool_call>\n{{"name": "{tool}", "arguments": {json.dumps(args)}}}\n</tool_call>')
        lines.append("<tool_response>\n" + json.dumps([args, {"name": "the " + _VALUES[i]}]) + "\n</tool_response>")
        lines.append(
            json.dumps(
                {
                    "type": "function",
                    "function": {
                        "name": tool,
                        "parameters": {
                            "type": "object",
                            "properties": {s: {"type": "string"} for s in _SLOTS[i : i + 4]},
                        },
                    },
                }
            )
        )
    return lines * 4


def build_tiny_tokenizer(
    corpus: Iterable[str] | None = None,
    *,
    vocab_size: int = 1024,
    isolate_spaces: bool = False,
    value_tokens: Iterable[str] = (),
):
    """Train a byte-level BPE tokenizer on ``corpus`` (plus the built-in one) and wrap it as a
    ``PreTrainedTokenizerFast`` with ChatML special tokens, the chat template and a response template.

    ``isolate_spaces`` makes every space its own token, so a word is the same token wherever it
    stands: ``thai`` in "serve thai food" and in ``{"food": "thai"}`` (byte-level BPE otherwise
    has ``Ġthai`` for one and ``thai`` for the other). Prompts get longer, but copying a value
    from the conversation into a tool call becomes an identity copy, which a small model trained
    from scratch learns far sooner.

    ``value_tokens`` are strings (e.g. database values: ``the missing sock``, ``19:45``) added as
    whole-word tokens of their own: copying such a value is then a one-token copy, which a small
    model learns without first having to learn to copy multi-token spans in order.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.pre_tokenizer = (
        pre_tokenizers.Sequence([pre_tokenizers.Split(" ", behavior="isolated"), byte_level]) if isolate_spaces else byte_level
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS) + list(MARKUP_TOKENS),
        # All 256 bytes in the base alphabet: any text (and any sampled token) round-trips.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(default_corpus()) + list(corpus or []), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
        clean_up_tokenization_spaces=False,
        model_max_length=4096,
    )
    # The markup tokens are already atomic vocabulary entries; registering them as (non-special)
    # added tokens keeps BPE from splitting them while leaving them visible in decoded text.
    fast.add_tokens(list(MARKUP_TOKENS), special_tokens=False)
    values = sorted({v for v in value_tokens if v.strip()} - set(fast.get_vocab()))
    if values:
        from tokenizers import AddedToken

        # single_word: "east" stays a token in "the east" but is not cut out of "eastern".
        fast.add_tokens([AddedToken(v, single_word=True, normalized=False) for v in values])
    fast.chat_template = CHAT_TEMPLATE
    fast.response_template = json.loads(json.dumps(HERMES_RESPONSE_TEMPLATE))
    return fast


def build_tiny_model(
    out_dir: str | Path,
    *,
    arch: str = "qwen2",
    vocab_size: int = 1024,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    seed: int = 0,
    corpus: Iterable[str] | None = None,
    init_std: float = 0.2,
) -> Path:
    """Build and ``save_pretrained`` a tiny random chat model + tokenizer into ``out_dir``.

    ``arch`` is ``"qwen2"`` or ``"llama"``. Deterministic for a given ``seed`` and corpus.
    ``init_std`` is ten times the usual initializer range: with 0.02 a random model this small
    emits the same token whatever the prompt, while 0.2 makes greedy output depend on the
    prompt (so batching/padding tests compare something) and keeps logit near-ties rare.
    """
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig, LlamaConfig, Qwen2Config

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_tokenizer(corpus, vocab_size=vocab_size)
    eos = [tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")]
    common = {
        "vocab_size": len(tokenizer),
        "hidden_size": hidden,
        "intermediate_size": hidden * 2,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "max_position_embeddings": 4096,
        "tie_word_embeddings": True,
        "initializer_range": init_std,
        "bos_token_id": None,
        "eos_token_id": eos[0],
        "pad_token_id": tokenizer.pad_token_id,
    }
    if arch == "qwen2":
        config = Qwen2Config(**common)
    elif arch == "llama":
        config = LlamaConfig(**common)
    else:
        raise ValueError(f"unknown arch {arch!r} (use 'qwen2' or 'llama')")
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=tokenizer.pad_token_id, do_sample=False)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
