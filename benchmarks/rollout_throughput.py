"""Agent turns per second of the conversation runner: batched vs one conversation at a time.

Same model, same tasks, same user (agenda), greedy decoding, in one run. The batched runner
sends every active conversation's pending generation to the backend in one call; the
baseline runs the conversations one after another (the reference's way).

    python benchmarks/rollout_throughput.py                      # tiny random model, CPU
    python benchmarks/rollout_throughput.py --preset qwen2.5-0.5b --tasks 64   # random 0.5B-class config (GPU)
    python benchmarks/rollout_throughput.py --model PATH_OR_HUB_ID
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from josh_hf.backends import SamplingParams
from josh_hf.backends.transformers_backend import TransformersBackend
from josh_hf.simulation import ConversationRunner, RunnerConfig
from josh_hf.testing import build_tiny_model
from josh_hf.toolwoz import ToolWOZ, default_multiwoz_path
from josh_hf.users import load_user

# Qwen2.5-0.5B's shape (hidden, layers, heads, kv heads, MLP); the vocabulary is the locally
# trained tokenizer's, since no checkpoint or tokenizer can be downloaded here.
PRESETS = {
    "tiny": dict(hidden=128, layers=2, heads=4, kv_heads=2),
    "qwen2.5-0.5b": dict(hidden=896, layers=24, heads=14, kv_heads=2, intermediate=4864),
}


def corpus(tw: ToolWOZ) -> list[str]:
    """Text like what the agent reads (tool schemas, goals, dialogues), so the locally trained
    tokenizer compresses prompts about as well as a real one would."""
    import json

    texts = [json.dumps(tw.tools.openai_tools(), indent=4)] * 20
    for task in tw.split("validation"):
        texts += task.user_goal + [turn["text"] for turn in task.dialogue]
    return texts


def build_model(preset: str, out: Path, texts: list[str], vocab_size: int) -> Path:
    spec = dict(PRESETS[preset])
    intermediate = spec.pop("intermediate", None)
    path = build_tiny_model(out, corpus=texts, vocab_size=vocab_size, **spec)
    if intermediate:  # build_tiny_model sizes the MLP itself; widen it to the real shape
        import json

        from transformers import AutoConfig, AutoModelForCausalLM

        cfg = AutoConfig.from_pretrained(path)
        cfg.intermediate_size = intermediate
        AutoModelForCausalLM.from_config(cfg).save_pretrained(path)
        json.loads((path / "config.json").read_text())
    return path


def run(runner: ConversationRunner, task_ids: list[str], sequential: bool):
    start = time.perf_counter()
    if sequential:
        transcripts = [t for tid in task_ids for t in runner.run([tid])]
    else:
        transcripts = runner.run(task_ids)
    wall = time.perf_counter() - start
    turns = sum(t.counters.get("agent_turns", 0) for t in transcripts)
    tokens = sum(t.counters.get("completion_tokens", 0) for t in transcripts)
    return transcripts, wall, turns, tokens


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="a local path or Hub id (default: build a random model from --preset)")
    p.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    p.add_argument("--tasks", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=128, help="max new tokens per generation (the reference used 256)")
    p.add_argument("--max-visible-messages", type=int, default=8)
    p.add_argument("--agent-format", default="native", choices=["native", "react"])
    p.add_argument("--dtype", default="auto")
    p.add_argument("--vocab-size", type=int, default=8192)
    p.add_argument("--max-batch-tokens", type=int, default=65536)
    p.add_argument("--prefix-cache", choices=["on", "off"], default="on",
                   help="backend prefix KV caching (shared prompt heads prefilled once, kept across calls)")
    args = p.parse_args()

    tw = ToolWOZ.from_multiwoz(default_multiwoz_path())
    task_ids = tw.splits["test"][: args.tasks]
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or str(build_model(args.preset, Path(tmp) / "model", corpus(tw), args.vocab_size))
        backend = TransformersBackend(model, dtype=args.dtype, max_batch_tokens=args.max_batch_tokens,
                                      prefix_cache=args.prefix_cache == "on")
        runner = ConversationRunner(tw, backend, load_user("agenda"), RunnerConfig(
            agent_format=args.agent_format, max_visible_messages=args.max_visible_messages,
            sampling=SamplingParams(temperature=0.0, max_new_tokens=args.new_tokens),
        ))
        device = str(next(backend.model.parameters()).device)
        n_params = sum(x.numel() for x in backend.model.parameters())
        print(f"model: {args.model or args.preset} ({n_params / 1e6:.1f}M parameters) on {device}; "
              f"{len(task_ids)} tasks, {args.new_tokens} new tokens max, format {args.agent_format}, "
              f"prefix cache {args.prefix_cache}")
        batched, wb, tb, kb = run(runner, task_ids, sequential=False)
        prompt = sum(t.counters.get("prompt_tokens", 0) for t in batched) / max(1, sum(t.counters.get("generations", 0) for t in batched))
        print(f"mean prompt length {prompt:.0f} tokens; batch sizes {backend.batch_sizes[:12]} ...")
        stats = backend.prefix_stats.as_dict()
        print(f"batched prefill: {stats['computed_tokens']} of {stats['prompt_tokens']} prompt tokens computed, "
              f"{stats['padding_tokens']} padding")
        backend.clear_prefix_cache()  # the one-by-one run starts cold too
        seq, ws, ts, ks = run(runner, task_ids, sequential=True)
    # Greedy decoding of a random model sits near logit ties; left padding changes the last
    # float bits, so a few transcripts may diverge between the two runs.
    same = sum(a.messages == b.messages for a, b in zip(batched, seq))
    print(f"batched:    {tb} agent turns in {wb:.1f} s = {tb / wb:.2f} turns/s, {kb / wb:.0f} tokens/s")
    print(f"one-by-one: {ts} agent turns in {ws:.1f} s = {ts / ws:.2f} turns/s, {ks / ws:.0f} tokens/s")
    print(f"ratio (turns/s): {(tb / wb) / (ts / ws):.1f}x   identical transcripts: {same}/{len(seq)}")


if __name__ == "__main__":
    main()
