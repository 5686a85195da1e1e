"""Throughput of the ToolWOZ environment: tool calls per second and episode scores per second.

The trace is fixed (seeded) and realistic: for each of the 450 test tasks, the goal calls
plus partial searches, wrong bookings, out-of-domain searches and malformed calls.
For contrast it also times the reference's approach (a pandas filter per search) on a
slice of the same trace.

    python benchmarks/env_calls.py [--source PATH] [--repeats 5]
"""

from __future__ import annotations

import argparse
import random
import time

from josh_hf.toolwoz import ToolWOZ, default_multiwoz_path


def make_trace(tw: ToolWOZ, seed: int = 0) -> list[tuple[str, list[tuple[str, object]]]]:
    rng = random.Random(seed)
    trace = []
    for task in tw.split("test"):
        calls: list[tuple[str, object]] = []
        for g in task.goal_calls:
            args = {k: v for k, v in g.arguments.items() if v}
            if g.action == "search" and len(args) > 1:  # a partial search first, as agents do
                keep = rng.sample(sorted(args), k=len(args) - 1)
                calls.append((g.name, {k: args[k] for k in keep}))
            if g.action == "book":
                wrong = dict(args)
                wrong[rng.choice(sorted(wrong))] = "wrong"
                calls.append((g.name, wrong))
            calls.append((g.name, dict(g.arguments)))
        calls.append(("search_train", {"departure": "cambridge", "day": rng.choice(["monday", "friday"])}))
        calls.append(("search_restaurant", {"food": ["italian"]}))
        calls.append(("find_taxi", {"to": "x"}))
        trace.append((task.id, calls))
    return trace


def bench_env(tw: ToolWOZ, trace, repeats: int) -> tuple[float, float, int]:
    n_calls = sum(len(c) for _, c in trace)
    best_calls, best_scores = 0.0, 0.0
    for _ in range(repeats):
        envs = []
        t0 = time.perf_counter()
        for tid, calls in trace:
            env = tw.env(tid)
            for name, args in calls:
                env.call(name, args)
            envs.append(env)
        t1 = time.perf_counter()
        for env in envs:
            env.score()
        t2 = time.perf_counter()
        best_calls = max(best_calls, n_calls / (t1 - t0))
        best_scores = max(best_scores, len(envs) / (t2 - t1))
    return best_calls, best_scores, n_calls


def bench_pandas_scan(tw: ToolWOZ, trace, limit: int = 300) -> float:
    """The reference's way: one DataFrame filter per search (no steering, no recording)."""
    import pandas as pd

    frames = {d: pd.DataFrame(t.raw_rows()) if hasattr(t, "raw_rows") else pd.DataFrame(list(t.rows))
              for d, t in tw.database.tables.items()}
    searches = [(n.partition("_")[2], a) for _, calls in trace for n, a in calls
                if n.startswith("search_") and isinstance(a, dict) and n.partition("_")[2] in frames
                and all(isinstance(v, str) for v in a.values())][:limit]
    t0 = time.perf_counter()
    for domain, args in searches:
        df = frames[domain]
        for k, v in args.items():
            if not v:
                continue
            if k == "leaveAt":
                df = df[df[k] > v]
            elif k == "arriveBy":
                df = df[df[k] < v]
            else:
                df = df[df[k] == v]
        [r.to_dict() for _, r in df.iterrows()]
    return len(searches) / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", default=None, help="MultiWOZ source (default: $JOSH_HF_MULTIWOZ or ../shared/data/multiwoz)")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    t0 = time.perf_counter()
    tw = ToolWOZ.from_multiwoz(args.source or default_multiwoz_path())
    print(f"load ToolWOZ: {time.perf_counter() - t0:.2f} s")
    trace = make_trace(tw)
    # First pass includes building each task's steering masks (cached afterwards).
    t0 = time.perf_counter()
    bench_env(tw, trace, 1)
    print(f"first pass over the trace (builds steering caches): {time.perf_counter() - t0:.2f} s")
    calls_s, scores_s, n = bench_env(tw, trace, args.repeats)
    print(f"trace: {len(trace)} tasks, {n} calls")
    print(f"tool calls/s:      {calls_s:,.0f}  (target >= 50,000)")
    print(f"episode scores/s:  {scores_s:,.0f}")
    print(f"pandas scan per search (reference style): {bench_pandas_scan(tw, trace):,.0f} searches/s")


if __name__ == "__main__":
    main()
