"""TransformersBackend, the tiny-model builder, tool-call parsing and ``load_backend``, on real tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from josh_hf.backends import (
    GenerationRequest,
    SamplingParams,
    ScriptedBackend,
    ToolCallOutput,
    load_backend,
    parse_completion,
    parse_hermes_tool_calls,
)
from josh_hf.backends.transformers_backend import PerRowSampler, TransformersBackend, counter_uniform

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "search_hotel",
            "description": "Find hotels.",
            "parameters": {
                "type": "object",
                "properties": {"area": {"type": "string"}, "stars": {"type": "integer"}},
            },
        },
    }
]

PROMPTS = [
    "hi",
    "I am looking for a cheap hotel in the north with free parking and internet, for 3 people.",
    "book a train",
    "Can you book a table for 2 people at 18:30 on friday at an italian place in the centre? Thanks!",
    "no",
]


def _request(text: str, **sampling: object) -> GenerationRequest:
    params = SamplingParams(**{"max_new_tokens": 10, **sampling})  # type: ignore[arg-type]
    return GenerationRequest(messages=[{"role": "user", "content": text}], sampling=params)


# --------------------------------------------------------------------------- tiny model + template


def test_tiny_model_loads_with_auto_classes(tiny_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert model.config.model_type == "qwen2"
    assert model.config.vocab_size == len(tok)
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    # Markup is one token each, and any text (here non-ASCII) round-trips through byte-level BPE.
    assert len(tok("<tool_call>", add_special_tokens=False).input_ids) == 1
    text = 'Zürich → 東京 {"a": 1}'
    assert tok.decode(tok(text, add_special_tokens=False).input_ids) == text
    assert tok.response_template is not None


def test_chat_template_renders_tools_calls_and_results(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    messages = [
        {"role": "system", "content": "You are a hotel agent."},
        {"role": "user", "content": "A hotel in the north?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"type": "function", "id": "c1", "function": {"name": "search_hotel", "arguments": {"area": "north"}}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "name": "search_hotel", "content": '[{"name": "acorn"}]'},
    ]
    text = tok.apply_chat_template(messages, tools=TOOLS, add_generation_prompt=True, tokenize=False)
    expected_call = (
        '<|im_start|>assistant\n<tool_call>\n{"name": "search_hotel", "arguments": {"area": "north"}}\n'
        "</tool_call><|im_end|>\n"
    )
    assert text.startswith("<|im_start|>system\nYou are a hotel agent.\n\n# Tools\n")
    assert "<tools>\n" + json.dumps(TOOLS[0]) + "\n</tools>" in text
    assert expected_call in text
    assert '<|im_start|>user\n<tool_response>\n[{"name": "acorn"}]\n</tool_response><|im_end|>\n' in text
    assert text.endswith("<|im_start|>assistant\n")
    # Without tools: no tool preamble; a plain system turn.
    plain = tok.apply_chat_template(messages[:2], add_generation_prompt=False, tokenize=False)
    assert plain == (
        "<|im_start|>system\nYou are a hotel agent.<|im_end|>\n<|im_start|>user\nA hotel in the north?<|im_end|>\n"
    )


def test_rendered_tool_call_parses_back(tiny_model_dir: Path) -> None:
    """What the template writes for a call is what the parser reads back (round trip)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    args = {"area": "north", "stars": 4}
    msg = {
        "role": "assistant",
        "content": "Let me look.",
        "tool_calls": [{"type": "function", "function": {"name": "search_hotel", "arguments": args}}],
    }
    rendered = tok.apply_chat_template([{"role": "user", "content": "x"}, msg], tokenize=False)
    # What a model would emit: the assistant turn up to and including its end token.
    completion = rendered.split("<|im_start|>assistant\n", 1)[1].split("<|im_end|>")[0] + "<|im_end|>"
    text, calls = parse_completion(completion, tok, tools=TOOLS)
    assert text == "Let me look."
    assert calls == [ToolCallOutput(name="search_hotel", arguments=args)]


# ----------------------------------------------------------------------------------- parsing


def test_parse_valid_and_several_calls(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    raw = (
        'Sure.\n<tool_call>\n{"name": "search_hotel", "arguments": {"area": "north", "stars": "4"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "book_hotel", "arguments": {"name": "acorn"}}\n</tool_call>'
    )
    text, calls = parse_completion(raw, tok, tools=TOOLS)
    assert text == "Sure."
    # The schema says stars is an integer: transformers' parser casts "4" → 4.
    assert calls == [
        ToolCallOutput("search_hotel", {"area": "north", "stars": 4}),
        ToolCallOutput("book_hotel", {"name": "acorn"}),
    ]


def test_parse_broken_json_keeps_raw_arguments(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    raw = '<tool_call>\n{"name": "search_hotel", "arguments": {"area": "north"\n</tool_call>'
    text, calls = parse_completion(raw, tok)
    assert text == ""
    assert calls == [ToolCallOutput("search_hotel", '{"name": "search_hotel", "arguments": {"area": "north"')]


def test_parse_missing_name_and_mixed_good_bad(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    raw = (
        '<tool_call>{"arguments": {"area": "north"}}</tool_call>'
        '<tool_call>{"name": "book_hotel", "arguments": {"name": "acorn"}}</tool_call>'
        "<tool_call>not json at all"  # unclosed, truncated by max_new_tokens
    )
    _, calls = parse_completion(raw, tok)
    assert calls == [
        ToolCallOutput("", '{"arguments": {"area": "north"}}'),
        ToolCallOutput("book_hotel", {"name": "acorn"}),
        ToolCallOutput("", "not json at all"),
    ]


def test_lenient_scanner_without_tokenizer_template() -> None:
    text, calls = parse_hermes_tool_calls('ok <tool_call>{"name": "f", "arguments": "{\\"x\\": 1}"}</tool_call> bye')
    assert text == "ok  bye"
    assert calls == [ToolCallOutput("f", {"x": 1})]  # double-encoded arguments are decoded


# ------------------------------------------------------------------------------- generation


def test_batched_greedy_equals_one_by_one_and_order(tiny_backend: TransformersBackend) -> None:
    requests = [_request(p) for p in PROMPTS]
    lengths = {len(tiny_backend._prepare(i, r).ids) for i, r in enumerate(requests)}
    assert len(lengths) == len(PROMPTS)  # all different: left padding is exercised
    before = len(tiny_backend.batch_sizes)
    batched = tiny_backend.generate(requests)
    assert tiny_backend.batch_sizes[before:] == [len(PROMPTS)]
    singles = [tiny_backend.generate([r])[0] for r in requests]
    assert [o.raw for o in batched] == [o.raw for o in singles]
    assert [o.prompt_tokens for o in batched] == [o.prompt_tokens for o in singles]
    # Order restored: each output's prompt count matches its own request, and outputs differ.
    assert [o.prompt_tokens for o in batched] == [len(tiny_backend._prepare(0, r).ids) for r in requests]
    assert len({o.raw for o in batched}) > 1
    for out in batched:
        assert out.error is None
        assert out.completion_tokens <= 10
        assert out.finish_reason in ("stop", "length", "tool_calls")


def test_token_budget_splits_batches_same_outputs(tiny_model_dir: Path, tiny_backend: TransformersBackend) -> None:
    requests = [_request(p) for p in PROMPTS]
    reference = [o.raw for o in tiny_backend.generate(requests)]
    small = TransformersBackend(tiny_backend.model, tiny_backend.tokenizer, max_batch_tokens=120, max_batch_size=2)
    outputs = small.generate(requests)
    assert len(small.batch_sizes) >= 3 and max(small.batch_sizes) <= 2
    assert [o.raw for o in outputs] == reference
    # Every planned batch respects the budget unless it is a single row.
    prepared = [small._prepare(i, r) for i, r in enumerate(requests)]
    for batch in small.plan_batches(prepared):
        cost = len(batch) * (max(len(p.ids) for p in batch) + 10)
        assert len(batch) == 1 or cost <= 120


def test_sampling_seeds_reproducible_and_batch_independent(tiny_backend: TransformersBackend) -> None:
    def sampled(seed: int, text: str = "hello") -> GenerationRequest:
        return _request(text, temperature=2.0, seed=seed, max_new_tokens=12)

    first = tiny_backend.generate([sampled(1), sampled(2), sampled(1), sampled(3)])
    assert first[0].raw == first[2].raw  # same seed, same prompt, same batch
    assert len({first[0].raw, first[1].raw, first[3].raw}) == 3  # siblings differ
    # Same seed alone, or among other prompts/greedy rows/top-k/top-p rows → same sample.
    alone = tiny_backend.generate([sampled(1)])[0]
    mixed = tiny_backend.generate(
        [_request(PROMPTS[1]), sampled(7, PROMPTS[3]), sampled(1), _request("x", temperature=1.0, top_k=5, top_p=0.9)]
    )
    assert alone.raw == first[0].raw == mixed[2].raw
    # The greedy row in the mixed batch is unaffected by its sampled neighbours.
    assert mixed[0].raw == tiny_backend.generate([_request(PROMPTS[1])])[0].raw


def test_seedless_sampling_follows_torch_manual_seed(tiny_backend: TransformersBackend) -> None:
    torch.manual_seed(123)
    a = tiny_backend.generate([_request("hello", temperature=1.5)])[0].raw
    torch.manual_seed(123)
    b = tiny_backend.generate([_request("hello", temperature=1.5)])[0].raw
    assert a == b


def test_per_row_sampler_top_k_one_is_greedy() -> None:
    scores = torch.tensor([[0.1, 3.0, 0.2, -1.0], [2.0, 0.0, 0.5, 1.9]])
    params = [SamplingParams(temperature=5.0, top_k=1), SamplingParams(temperature=5.0, top_p=1e-6)]
    out = PerRowSampler(params, seeds=[0, 1], prompt_length=3)(torch.zeros((2, 3), dtype=torch.long), scores)
    assert out.argmax(-1).tolist() == [1, 0]
    assert torch.isinf(out).sum().item() == 6  # only the chosen token stays finite


def test_per_row_sampler_matches_softmax_distribution() -> None:
    """Gumbel-max with the counter noise samples softmax(logits / T), then respects top-p."""
    n = 8000
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0])
    scores = logits.repeat(n, 1)
    ids = torch.zeros((n, 5), dtype=torch.long)
    sampler = PerRowSampler([SamplingParams(temperature=2.0)] * n, seeds=range(n), prompt_length=3)
    freq = torch.bincount(sampler(ids, scores).argmax(-1), minlength=4).float() / n
    assert torch.allclose(freq, torch.softmax(logits / 2.0, -1), atol=0.02)
    # Probabilities at T=1 are .64, .24, .09, .03: top_p=0.8 keeps the first two (.64 < .8 <= .88).
    nucleus = PerRowSampler([SamplingParams(temperature=1.0, top_p=0.8)] * n, seeds=range(n), prompt_length=3)
    freq = torch.bincount(nucleus(ids, scores).argmax(-1), minlength=4).float() / n
    assert freq[2] == 0 and freq[3] == 0
    assert torch.allclose(freq[:2], torch.softmax(logits[:2], -1), atol=0.02)


def test_counter_noise_is_a_function_of_seed_step_token() -> None:
    u = counter_uniform(torch.tensor([5, 6, 5]), step=3, vocab_size=1000)
    assert torch.equal(u[0], u[2]) and not torch.equal(u[0], u[1])
    assert not torch.equal(u[0], counter_uniform(torch.tensor([5]), step=4, vocab_size=1000)[0])
    assert 0.0 < u.min().item() and u.max().item() < 1.0
    assert abs(u.mean().item() - 0.5) < 0.02


def test_stop_strings_truncate(tiny_backend: TransformersBackend) -> None:
    full = tiny_backend.generate([_request(PROMPTS[1], max_new_tokens=12)])[0].raw
    assert len(full) > 4
    stop = full[2:4]
    out = tiny_backend.generate([_request(PROMPTS[1], max_new_tokens=12, stop=(stop,))])[0]
    assert out.raw == full[: full.index(stop)]
    assert out.finish_reason == "stop"


def test_tools_in_request_and_prompt_tokens(tiny_backend: TransformersBackend) -> None:
    with_tools = GenerationRequest(
        messages=[{"role": "user", "content": "hi"}], tools=TOOLS, sampling=SamplingParams(max_new_tokens=4)
    )
    out_tools, out_plain = tiny_backend.generate([with_tools, _request("hi", max_new_tokens=4)])
    assert "search_hotel" in tiny_backend.render(with_tools)
    assert out_tools.prompt_tokens > out_plain.prompt_tokens + 20


def test_bad_request_is_an_error_not_a_crash(tiny_backend: TransformersBackend) -> None:
    # tool_calls must be a list: the chat template itself fails on this one.
    broken = GenerationRequest(messages=[{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": 5}])
    good, bad = tiny_backend.generate([_request("hi"), broken])
    assert good.error is None and bad.error is not None and "template" in bad.error


def test_training_mode_is_restored(tiny_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model.train()
    backend = TransformersBackend(model, tok)
    out = backend.generate([_request("hi", max_new_tokens=3)])[0]
    assert out.error is None and model.training
    assert tok.padding_side == "right"  # the caller's tokenizer is not mutated


# ------------------------------------------------------------------------------ PEFT, 4-bit


def test_peft_adapter_from_path(tiny_model_dir: Path, tmp_path: Path, tiny_backend: TransformersBackend) -> None:
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    lora = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in lora.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 1.0)  # B=0 at init would make the adapter a no-op
    lora.save_pretrained(tmp_path / "adapter")

    backend = TransformersBackend(tiny_model_dir, adapter=tmp_path / "adapter")
    assert isinstance(backend.model, PeftModel)
    requests = [_request(p) for p in PROMPTS]
    adapted = [o.raw for o in backend.generate(requests)]
    base_out = [o.raw for o in tiny_backend.generate(requests)]
    assert adapted != base_out


def test_load_in_4bit(tiny_model_dir: Path) -> None:
    pytest.importorskip("bitsandbytes")
    try:
        backend = TransformersBackend(tiny_model_dir, load_in_4bit=True, device_map="cpu")
    except Exception as exc:  # noqa: BLE001 - report why this platform cannot quantize
        pytest.skip(f"bitsandbytes 4-bit loading unavailable here: {type(exc).__name__}: {exc}")
    import bitsandbytes as bnb

    q_proj = backend.model.model.layers[0].self_attn.q_proj
    assert isinstance(q_proj, bnb.nn.Linear4bit)
    assert q_proj.weight.quant_state.quant_type == "nf4"
    out = backend.generate([_request("hi", max_new_tokens=4), _request(PROMPTS[1], max_new_tokens=4)])
    assert all(o.error is None and o.completion_tokens >= 1 for o in out)


# ------------------------------------------------------------------------------ load_backend


def test_load_backend_specs(tiny_model_dir: Path) -> None:
    assert isinstance(load_backend("scripted", script=["hi"]), ScriptedBackend)
    backend = load_backend(str(tiny_model_dir), max_batch_size=3)
    assert isinstance(backend, TransformersBackend) and backend.max_batch_size == 3
    assert load_backend(backend) is backend
    assert isinstance(load_backend(f"transformers:{tiny_model_dir}"), TransformersBackend)

    from josh_hf.backends.openai_backend import OpenAIBackend

    remote = load_backend("openai:my-model@http://127.0.0.1:9/v1", max_concurrency=2)
    assert isinstance(remote, OpenAIBackend)
    assert (remote.model, remote.base_url, remote.max_concurrency) == ("my-model", "http://127.0.0.1:9/v1", 2)
    plain = load_backend("gpt-4o-mini", base_url="http://127.0.0.1:9/v1")
    assert isinstance(plain, OpenAIBackend) and plain.model == "gpt-4o-mini"
    with pytest.raises(ValueError):
        load_backend("")
