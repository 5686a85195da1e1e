"""Prefix KV caching and length-aware batching in TransformersBackend, on the tiny real model.

Every comparison is against the same model with ``prefix_cache=False`` (plain left padding),
whose outputs the rest of the suite already checks against one-by-one generation.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from josh_hf.backends import GenerationRequest, SamplingParams
from josh_hf.backends.transformers_backend import TransformersBackend, common_prefix_length

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": name,
            "description": f"{name.replace('_', ' ')} in Cambridge; returns matching entries as JSON.",
            "parameters": {
                "type": "object",
                "properties": {"area": {"type": "string"}, "stars": {"type": "integer"}, "day": {"type": "string"}},
            },
        },
    }
    for name in ("search_hotel", "book_hotel", "search_train", "book_train")
]
SYSTEM = (
    "You are a helpful travel agent for Cambridge. Use the tools to look up hotels, trains and "
    "restaurants; never invent a booking reference; confirm every detail before booking. "
) * 3
USER_TURNS = [
    "hi",
    "I need a cheap hotel in the north with free parking, for 3 people, 2 nights from friday.",
    "train to london please",
    (
        "Can you book a table for 2 people at 18:30 on friday at an italian place in the centre? "
        "Also I would like to know the postcode and the phone number of the place. Thanks a lot!"
    ),
    "no",
]


def _request(user: str, system: str = SYSTEM, tools: list | None = TOOLS, **sampling: object) -> GenerationRequest:
    params = SamplingParams(**{"max_new_tokens": 10, **sampling})  # type: ignore[arg-type]
    messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    return GenerationRequest(messages=messages, tools=tools, sampling=params)


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model_dir: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir)


def _pair(model_and_tokenizer, **options) -> tuple[TransformersBackend, TransformersBackend]:
    model, tok = model_and_tokenizer
    return TransformersBackend(model, tok, **options), TransformersBackend(model, tok, prefix_cache=False, **options)


def _ids(backend: TransformersBackend, requests: list[GenerationRequest]) -> list[list[int]]:
    return [backend._prepare(i, r).ids for i, r in enumerate(requests)]


def _shared(ids: list[list[int]]) -> int:
    return min(min(common_prefix_length(ids[0], x) for x in ids), min(len(x) for x in ids) - 1)


def _summary(outputs):
    return [(o.raw, o.prompt_tokens, o.completion_tokens, o.finish_reason, o.error) for o in outputs]


def test_greedy_same_outputs_and_prefix_prefilled_once(model_and_tokenizer) -> None:
    cached, plain = _pair(model_and_tokenizer, max_pad_ratio=None)  # one batch: simple accounting
    requests = [_request(u) for u in USER_TURNS]
    ids = _ids(cached, requests)
    shared = _shared(ids)
    assert shared > 150 and len({len(x) for x in ids}) == len(ids)  # long shared head, varied suffixes

    with_cache, without = cached.generate(requests), plain.generate(requests)
    assert _summary(with_cache) == _summary(without)
    assert [o.prompt_tokens for o in with_cache] == [len(x) for x in ids]  # the full prompt, not the suffix
    assert len({o.raw for o in with_cache}) > 1
    assert cached.batch_sizes == plain.batch_sizes == [len(requests)]

    total = sum(len(x) for x in ids)
    assert plain.prefix_stats.as_dict() == {
        "batches": 1, "cached_batches": 0, "prompt_tokens": total, "computed_tokens": total,
        "padding_tokens": len(ids) * max(len(x) for x in ids) - total, "reused_tokens": 0,
    }  # fmt: skip
    suffix_width = max(len(x) for x in ids) - shared
    assert cached.prefix_stats.as_dict() == {
        "batches": 1, "cached_batches": 1, "prompt_tokens": total,
        # The shared head once, then each row's own tail.
        "computed_tokens": shared + (total - len(ids) * shared),
        "padding_tokens": len(ids) * suffix_width - (total - len(ids) * shared), "reused_tokens": 0,
    }  # fmt: skip

    # A later call: each row resumes from the longest head any earlier prompt gave it (here the
    # system prompt and template up to where the user turns differ): only the rest runs.
    more = [_request(u) for u in ("hello there", "book_train for 4 on sunday", "what is the postcode?")]
    more_ids = _ids(cached, more)
    before = cached.prefix_stats.as_dict()
    assert _summary(cached.generate(more)) == _summary(plain.generate(more))
    heads = [max(common_prefix_length(x, y) for y in ids) for x in more_ids]
    assert min(heads) >= shared  # at least the system prompt with its tools
    after = cached.prefix_stats.as_dict()
    assert after["reused_tokens"] - before["reused_tokens"] == sum(heads)
    assert after["computed_tokens"] - before["computed_tokens"] == sum(len(x) - h for x, h in zip(more_ids, heads))


def test_each_row_resumes_from_its_own_history(model_and_tokenizer) -> None:
    """Conversations' second turns, batched: every row prefills only what its own first turn did
    not already cache (prompt and reply), and the outputs equal uncached generation."""
    cached, plain = _pair(model_and_tokenizer)
    first = [_request(u, max_new_tokens=8) for u in USER_TURNS[:4]]
    first_ids = _ids(cached, first)
    replies = cached.generate(first)
    assert _summary(replies) == _summary(plain.generate(first))
    second = [
        GenerationRequest(
            messages=[*r.messages, {"role": "assistant", "content": out.raw}, {"role": "user", "content": follow}],
            tools=TOOLS,
            sampling=SamplingParams(max_new_tokens=8),
        )
        for r, out, follow in zip(first, replies, ("and for 4 nights?", "cheaper", "in the south", "thanks"))
    ]
    second_ids = _ids(cached, second)
    before = cached.prefix_stats.as_dict()
    assert _summary(cached.generate(second)) == _summary(plain.generate(second))
    after = cached.prefix_stats.as_dict()
    # Each row reused at least its whole first prompt, more than any other row could give it.
    heads = [common_prefix_length(a, b) for a, b in zip(second_ids, first_ids)]
    assert all(h == len(b) for h, b in zip(heads, first_ids))
    reused = after["reused_tokens"] - before["reused_tokens"]
    computed = after["computed_tokens"] - before["computed_tokens"]
    assert reused >= sum(heads)
    assert reused + computed == sum(len(x) for x in second_ids)
    assert computed < sum(len(x) for x in second_ids) // 5  # only the new turns were prefilled
    assert after["cached_batches"] - before["cached_batches"] == after["batches"] - before["batches"]


def test_store_is_bounded(model_and_tokenizer) -> None:
    model, tok = model_and_tokenizer
    backend = TransformersBackend(model, tok, prefix_cache_entries=2)
    backend.generate([_request(u) for u in USER_TURNS])
    assert len(backend._prefix_store.entries) == 2
    small = TransformersBackend(model, tok, prefix_cache_tokens=1000)
    small.generate([_request(u) for u in USER_TURNS])
    assert 0 < small._prefix_store.tokens <= 1000
    assert small._prefix_store.tokens == sum(len(k) for k in small._prefix_store.entries)


def test_siblings_identical_context_different_seeds(model_and_tokenizer) -> None:
    """JOSH siblings: the same context with different seeds. Only the last prompt token is
    prefilled per row; samples equal the uncached ones; seeds still make siblings differ."""
    cached, plain = _pair(model_and_tokenizer)
    siblings = [_request(USER_TURNS[1], temperature=1.5, seed=seed, max_new_tokens=12) for seed in range(6)]
    (length,) = {len(x) for x in _ids(cached, siblings)}
    with_cache, without = cached.generate(siblings), plain.generate(siblings)
    assert _summary(with_cache) == _summary(without)
    assert len({o.raw for o in with_cache}) >= 4
    assert cached.prefix_stats.computed_tokens == (length - 1) + len(siblings)
    assert cached.prefix_stats.padding_tokens == 0
    assert plain.prefix_stats.computed_tokens == length * len(siblings)
    # The same seed alone (one row: its whole prompt but the last token comes from the LRU).
    alone = cached.generate([siblings[2]])[0]
    assert alone.raw == with_cache[2].raw
    assert cached.prefix_stats.reused_tokens == length - 1


def test_seeded_sampling_mixed_batch_equal_with_and_without(model_and_tokenizer) -> None:
    cached, plain = _pair(model_and_tokenizer)
    requests = [
        _request(USER_TURNS[0], temperature=1.0, seed=11),
        _request(USER_TURNS[1]),  # greedy row among sampled ones
        _request(USER_TURNS[2], temperature=2.0, seed=12, top_k=20),
        _request(USER_TURNS[3], temperature=0.8, seed=13, top_p=0.9),
        _request(USER_TURNS[3], temperature=0.8, seed=14, top_p=0.9),
    ]
    assert _summary(cached.generate(requests)) == _summary(plain.generate(requests))
    assert cached.prefix_stats.cached_batches == 1


def test_stop_strings_and_tool_parsing_unchanged(model_and_tokenizer) -> None:
    cached, plain = _pair(model_and_tokenizer)
    full = plain.generate([_request(USER_TURNS[1], max_new_tokens=12)])[0].raw
    assert len(full) > 4
    requests = [_request(u, max_new_tokens=12, stop=(full[2:4],)) for u in USER_TURNS]
    out_cached, out_plain = cached.generate(requests), plain.generate(requests)
    assert [(o.text, o.tool_calls, o.raw, o.finish_reason) for o in out_cached] == [
        (o.text, o.tool_calls, o.raw, o.finish_reason) for o in out_plain
    ]
    assert out_cached[1].raw == full[: full.index(full[2:4])] and out_cached[1].finish_reason == "stop"


def test_no_common_prefix_falls_back_to_left_padding(model_and_tokenizer) -> None:
    cached, plain = _pair(model_and_tokenizer)
    # Different system prompts and no tools: the rows share only the template's first tokens.
    requests = [_request(u, system=s, tools=None) for u, s in zip(USER_TURNS, ("Be brief.", "x", "Speak French."))]
    assert _shared(_ids(cached, requests)) < cached.min_prefix_tokens
    assert _summary(cached.generate(requests)) == _summary(plain.generate(requests))
    assert cached.prefix_stats.cached_batches == 0 and cached.prefix_stats.reused_tokens == 0
    assert cached.prefix_stats.as_dict() == plain.prefix_stats.as_dict()
    # A short shared head still works when allowed (exercises a prefix of a few tokens).
    short = TransformersBackend(*model_and_tokenizer, min_prefix_tokens=1)
    assert _summary(short.generate(requests)) == _summary(plain.generate(requests))
    assert short.prefix_stats.cached_batches == 1


def test_length_aware_batching_splits_uneven_suffixes(model_and_tokenizer) -> None:
    model, tok = model_and_tokenizer
    long_turn = "Please list every hotel with free parking and internet in the north and the east. " * 6
    requests = [_request(long_turn)] + [_request(u) for u in ("hi", "no", "ok thanks")]
    split = TransformersBackend(model, tok, max_pad_ratio=4.0)
    whole = TransformersBackend(model, tok, max_pad_ratio=None)
    plain = TransformersBackend(model, tok, prefix_cache=False, max_pad_ratio=None)
    assert (
        _summary(split.generate(requests)) == _summary(whole.generate(requests)) == _summary(plain.generate(requests))
    )
    assert whole.batch_sizes == [4] and split.batch_sizes == [1, 3]  # the long row alone, longest first
    assert split.prefix_stats.padding_tokens < whole.prefix_stats.padding_tokens
    # The split's second batch reuses the head the first one cached.
    assert split.prefix_stats.reused_tokens > 0


def test_peft_model_and_cache_invalidated_when_weights_change(tiny_model_dir: Path) -> None:
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    lora = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    )
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in lora.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 1.0)  # B=0 at init would make the adapter a no-op
    assert isinstance(lora, PeftModel)
    lora.train()  # as the trainer hands it over
    cached = TransformersBackend(lora, tok, prefix_cache_entries=4)
    plain = TransformersBackend(lora, tok, prefix_cache=False)
    requests = [_request(u) for u in USER_TURNS[:3]] + [_request(USER_TURNS[1], temperature=1.0, seed=5)]
    first = cached.generate(requests)
    assert lora.training  # training mode restored ...
    assert not cached._prefix_store.entries  # ... and a model in training keeps no stale prefixes
    assert _summary(first) == _summary(plain.generate(requests))
    assert cached.prefix_stats.cached_batches == 1

    lora.eval()
    cached.generate(requests)
    assert cached._prefix_store.entries  # kept across calls in eval mode
    # An optimizer-like in-place update of the adapter: the kept head must not be reused.
    with torch.no_grad():
        for name, param in lora.named_parameters():
            if "lora_B" in name:
                param.add_(0.5)
    reused = cached.prefix_stats.reused_tokens
    after = cached.generate(requests)
    assert cached.prefix_stats.reused_tokens == reused
    assert _summary(after) == _summary(plain.generate(requests))
    assert [o.raw for o in after] != [o.raw for o in first]
