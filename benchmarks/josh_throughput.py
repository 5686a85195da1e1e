"""Agent turns per second of JOSH: batched search vs one branch at a time (the reference's way).

Both runs use the same search code, model, tasks and seeds; the only difference is
``JOSHSearch(max_batch=...)``: ``None`` sends every live leaf of every task to one backend call
per generation round, ``1`` steps the leaves one by one, as the reference's loop does. By default
it builds a tiny-but-not-trivial random model (offline, seconds); pass ``--model`` for a real
checkpoint (e.g. on a GPU machine). The user is the rule-based agenda user (no model).

``--prefix-cache`` sets the backend's prefix KV caching for both runs (``on``, the default, or
``off``); ``both`` runs each mode with and without it, and reports speed-ups against one branch
at a time without it (the reference's way: every prompt prefilled in full).

    python benchmarks/josh_throughput.py [--model PATH_OR_ID] [--tasks 4] [--beam 8] [--steps 4]
                                         [--prefix-cache on|off|both]
"""

from __future__ import annotations

import argparse
import tempfile
import time

from josh_hf.backends import SamplingParams
from josh_hf.backends.transformers_backend import TransformersBackend
from josh_hf.josh import JOSHConfig, JOSHSearch, TreeRecord
from josh_hf.toolwoz import ToolWOZ
from josh_hf.users import load_user


def timed_search(toolwoz: ToolWOZ, backend: TransformersBackend, task_ids: list[str], config: JOSHConfig,
                 max_batch: int | None) -> tuple[float, list[TreeRecord]]:
    search = JOSHSearch(toolwoz, backend, load_user("agenda"), config, max_batch=max_batch)
    start = time.perf_counter()
    records = search.run(task_ids)
    return time.perf_counter() - start, records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="Hub id or path (default: a freshly built tiny model)")
    parser.add_argument("--hidden", type=int, default=256, help="hidden size of the built tiny model")
    parser.add_argument("--layers", type=int, default=4, help="layers of the built tiny model")
    parser.add_argument("--tasks", type=int, default=4, help="first N ToolWOZ validation tasks")
    parser.add_argument("--beam", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--agent-format", default="native")
    parser.add_argument("--max-batch-tokens", type=int, default=1 << 20, help="backend token budget per batch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--source", help="ToolWOZ / MultiWOZ source (default: the bundled data)")
    parser.add_argument("--prefix-cache", choices=["on", "off", "both"], default="on",
                        help="backend prefix KV caching (both: run each mode with and without)")
    args = parser.parse_args()

    toolwoz = ToolWOZ.load(args.source)
    task_ids = [t.id for t in toolwoz.split("validation")[: args.tasks]]
    config = JOSHConfig(beam_size=args.beam, max_steps=args.steps, agent_format=args.agent_format, seed=args.seed,
                        sampling=SamplingParams(temperature=1.0, max_new_tokens=args.new_tokens))
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            from josh_hf.testing import build_tiny_model

            model = str(build_tiny_model(tmp, hidden=args.hidden, layers=args.layers))
        backend = TransformersBackend(model, max_batch_tokens=args.max_batch_tokens, max_batch_size=256)
        timed_search(toolwoz, backend, task_ids[:1], JOSHConfig(beam_size=2, max_steps=1, agent_format=args.agent_format,
                     sampling=config.sampling), None)  # warm-up
        print(f"model={model} device={backend.device} tasks={len(task_ids)} beam={args.beam} steps={args.steps} "
              f"new_tokens={args.new_tokens} format={args.agent_format} prefix_cache={args.prefix_cache}")
        settings = {"on": [True], "off": [False], "both": [False, True]}[args.prefix_cache]
        results = {}
        for cached in settings:
            # A fresh backend per setting on the same loaded model: no prefix cache carries over.
            run_backend = TransformersBackend(backend.model, backend.tokenizer, max_batch_tokens=args.max_batch_tokens,
                                              max_batch_size=256, prefix_cache=cached)
            for mode, max_batch in (("one branch at a time", 1), ("batched", None)):
                label = f"{mode}{', prefix cache' if cached else ''}"
                run_backend.clear_prefix_cache()  # each run starts cold
                stats_before = run_backend.prefix_stats.as_dict()
                calls_before = len(run_backend.batch_sizes)
                elapsed, records = timed_search(toolwoz, run_backend, task_ids, config, max_batch)
                turns = sum(r.stats["agent_turns"] for r in records)
                calls = run_backend.batch_sizes[calls_before:]
                stats = {k: v - stats_before[k] for k, v in run_backend.prefix_stats.as_dict().items()}
                results[(mode, cached)] = (turns / elapsed, records)
                print(f"{label:<36} {elapsed:8.2f} s  {turns:5d} agent turns  {turns / elapsed:7.2f} turns/s  "
                      f"{len(calls):5d} backend calls (largest {max(calls)} rows)  prefill: "
                      f"{stats['computed_tokens']} of {stats['prompt_tokens']} prompt tokens computed, "
                      f"{stats['padding_tokens']} padding")
        base_key = ("one branch at a time", settings[0])
        base_rate, base_records = results[base_key]
        for key, (rate, records) in results.items():
            if key == base_key:
                continue
            same = [a.to_dict() for a in records] == [b.to_dict() for b in base_records]
            label = f"{key[0]}{', prefix cache' if key[1] else ''}"
            print(f"speed-up of {label} vs one branch at a time{', prefix cache' if base_key[1] else ''}: "
                  f"{rate / base_rate:.2f}x; identical trees: {same}")


if __name__ == "__main__":
    main()
