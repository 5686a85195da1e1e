"""JOSH on ToolWOZ with an agent trained from scratch: base -> JOSH-SFT / KTO / DPO -> round 2.

    python examples/toolwoz_from_scratch/run.py --output outputs/from_scratch            # CPU scale
    python examples/toolwoz_from_scratch/run.py --preset gpu --eval-trials 4 ...         # GPU scale

1. Build ToolWOZ and its synthetic demonstrations from MultiWOZ (training tasks only).
2. Train the base agent from scratch (``josh_hf.demo.scratch``).
3. Round 1: one JOSH search with the base agent on training tasks; JOSH-SFT, JOSH-KTO and
   JOSH-DPO agents each train on those same trees.
4. Pick the best round-1 agent on held-out *training* tasks (the dev set; never test), run a
   second JOSH round with it on fresh training tasks, same method.
5. Evaluate base and every JOSH agent on the test tasks: same agenda user, seeds, trials and
   temperature for all. Report average reward, success rate and pass^k with 95% bootstrap
   intervals over tasks, and a paired bootstrap test of each agent against the base.
6. Write ``results.json``, ``results.md`` (the table) and ``success.png`` (success per round
   and method) under ``--output``.

Every stage resumes from its files, so an interrupted run continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

from josh_hf.demo.pipeline import build_stage, evaluate_agent, josh_round, train_stage, training_split
from josh_hf.josh.harvest import harvest_counts
from josh_hf.josh.tree import iter_tree_dicts
from josh_hf.stats import bootstrap_figures, paired_bootstrap, per_task_rewards

METHODS = ("sft", "kto", "dpo")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", default=None, help="MultiWOZ source (default: $JOSH_HF_MULTIWOZ or ../shared/data/multiwoz)")
    p.add_argument("--output", default="outputs/from_scratch")
    p.add_argument("--preset", default="cpu", help="scratch agent preset (tiny | demo | cpu | gpu)")
    p.add_argument("--train-steps", type=int, default=None, help="optimizer steps of the base agent (default: the preset's)")
    p.add_argument("--synthetic-trials", type=int, default=2, help="synthetic demonstrations per training task (one seed each)")
    p.add_argument("--goal-variants", type=int, default=4,
                   help="also N demonstrations per training task on its goal with values redrawn from the database")
    p.add_argument("--base-model", default=None, help="start from this model instead of training one (any Hub id or path)")
    p.add_argument("--hold-out-dev", action=argparse.BooleanOptionalAction, default=True,
                   help="keep the dev tasks' demonstrations out of the base agent's training")
    p.add_argument("--test-tasks", type=int, default=450, help="first N test tasks (450 = the whole test split)")
    p.add_argument("--eval-trials", type=int, default=3)
    p.add_argument("--eval-temperature", type=float, default=0.7)
    p.add_argument("--dev-tasks", type=int, default=50, help="held-out training tasks that pick round 2's agent")
    p.add_argument("--josh-tasks", type=int, default=96, help="training tasks searched per JOSH round")
    p.add_argument("--beam-size", type=int, default=8)
    p.add_argument("--max-steps", type=int, default=8)
    p.add_argument("--josh-temperature", type=float, default=1.0)
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--max-batch-tokens", type=int, default=16384,
                   help="generation batch budget (the committed results used 16384; 65536 is faster on a CPU but "
                        "batch composition can flip logit near-ties, so figures may differ slightly)")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--no-round-2", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bootstrap-samples", type=int, default=10_000)
    return p.parse_args(argv)


def device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def trained(folder: Path) -> bool:
    """Whether a JOSH round folder's model was actually optimised (a round with no examples is not)."""
    rounds = json.loads((folder / "josh_done.json").read_text()).get("rounds") or []
    return any(r.get("trained") for r in rounds)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Success rate (with its 95% interval) per round, one line per method from the base."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = next(r for r in rows if r["agent"] == "base")
    fig, ax = plt.subplots(figsize=(6, 4))
    for method in METHODS:
        points = [base] + sorted((r for r in rows if r["method"] == method), key=lambda r: r["round"])
        if len(points) == 1:
            continue
        xs = [p["round"] for p in points]
        ys = [p["figures"]["success_rate"]["estimate"] for p in points]
        err = [[y - p["figures"]["success_rate"]["low"] for y, p in zip(ys, points)],
               [p["figures"]["success_rate"]["high"] - y for y, p in zip(ys, points)]]
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=f"JOSH-{method.upper()}")
    ax.set_xlabel("JOSH round (0 = base agent)")
    ax.set_ylabel("ToolWOZ test success rate")
    ax.set_xticks(sorted({r["round"] for r in rows}))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def table(rows: list[dict[str, Any]], k: int) -> str:
    head = ["agent", "avg reward [95% CI]", "success [95% CI]", f"pass^{k} [95% CI]", "success vs base", "p (success)", "p (reward)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        f = r["figures"]
        cells = [r["agent"]] + [f"{f[n]['estimate']:.3f} [{f[n]['low']:.3f}, {f[n]['high']:.3f}]"
                                for n in ("average_reward", "success_rate", f"pass^{k}")]
        vs = r.get("vs_base")
        if vs:
            gain = vs["success_rate"]["relative_gain"]
            cells += [f"{vs['success_rate']['difference']['estimate']:+.3f}" + (f" ({gain:+.0%})" if gain is not None else ""),
                      f"{vs['success_rate']['p_value']:.4f}", f"{vs['average_reward']['p_value']:.4f}"]
        else:
            cells += ["", "", ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - started:7.0f} s] {msg}", file=sys.stderr, flush=True)

    toolwoz = build_stage(args.source, out / "toolwoz", args.seed, args.synthetic_trials, args.goal_variants)
    pool = [t.id for t in toolwoz.split(training_split(toolwoz))]
    dev = pool[-args.dev_tasks:] if args.dev_tasks else []
    train_pool = pool[: len(pool) - len(dev)]
    round_tasks = [train_pool[: args.josh_tasks], train_pool[args.josh_tasks: 2 * args.josh_tasks]]
    test = [t.id for t in toolwoz.split("test")][: args.test_tasks]
    log(f"{len(test)} test tasks, {len(dev)} dev tasks, JOSH rounds on {[len(r) for r in round_tasks]} training tasks")

    if args.base_model:
        base = Path(args.base_model)
    else:
        log("training the base agent")
        overrides: dict[str, Any] = {"seed": args.seed}
        if args.train_steps:
            overrides["max_steps"] = args.train_steps
        # The dev tasks pick round 2's method: with --hold-out-dev the base agent never sees them.
        base = train_stage(out / "toolwoz", out / "base", args.preset, exclude_tasks=dev if args.hold_out_dev else (),
                           **overrides)

    common = {"beam_size": args.beam_size, "max_steps": args.max_steps, "temperature": args.josh_temperature,
              "epochs": args.epochs, "max_new_tokens": args.max_new_tokens, "max_batch_tokens": args.max_batch_tokens,
              "seed": args.seed}
    agents: dict[str, dict[str, Any]] = {"base": {"path": base, "method": None, "round": 0}}
    first = args.methods[0]
    log(f"round 1: JOSH search with the base agent + JOSH-{first.upper()}")
    agents[f"josh-{first}"] = {"path": josh_round(toolwoz, base, out / f"r1_{first}", round_tasks[0], method=first, **common),
                               "method": first, "round": 1}
    trees = sorted(str(p) for p in (out / f"r1_{first}").rglob("trees.jsonl"))
    if not trained(agents[f"josh-{first}"]["path"]):
        log(f"round 1: the harvest had no {first.upper()} examples: JOSH-{first.upper()} is not trained (it would equal the base)")
        del agents[f"josh-{first}"]
    counts = harvest_counts([r for path in trees for r in iter_tree_dicts(path)])
    log(f"round 1 harvest: {counts}")
    available = {"sft": counts["sft"], "kto": counts["kto_desirable"] + counts["kto_undesirable"], "dpo": counts["dpo"]}
    for method in args.methods[1:]:
        if not available[method]:
            log(f"round 1: no {method.upper()} examples in the harvest: JOSH-{method.upper()} is not trained")
            continue
        log(f"round 1: JOSH-{method.upper()} on the same trees")
        agents[f"josh-{method}"] = {"path": josh_round(toolwoz, base, out / f"r1_{method}", round_tasks[0], method=method,
                                                       harvest_files=trees, **common), "method": method, "round": 1}

    def evaluate(name: str, folder: str, ids: list[str], trials: int, temperature: float) -> dict[str, list[float]]:
        log(f"evaluating {name} on {len(ids)} tasks x {trials}")
        transcripts = evaluate_agent(toolwoz, agents[name]["path"], out / folder, ids, trials=trials,
                                     temperature=temperature, seed=args.seed, max_new_tokens=args.max_new_tokens,
                                     max_batch_tokens=args.max_batch_tokens)
        return per_task_rewards(transcripts)

    best = None
    if not args.no_round_2:
        dev_scores = {}
        for method in [m for m in args.methods if f"josh-{m}" in agents]:
            scores = evaluate(f"josh-{method}", f"dev_{method}", dev, 1, 0.0) if dev else {}
            dev_scores[method] = sum(sum(v) / len(v) for v in scores.values()) / max(1, len(scores))
        if not dev_scores:
            log("no round-1 agent was trained: no round 2")
        best = max(dev_scores, key=lambda m: (dev_scores[m], -args.methods.index(m)), default=None)
    if best is not None:
        log(f"dev average reward per method: {dev_scores}; round 2 with JOSH-{best.upper()}")
        agents[f"josh-{best} round 2"] = {
            "path": josh_round(toolwoz, agents[f"josh-{best}"]["path"], out / f"r2_{best}", round_tasks[1], method=best, **common),
            "method": best, "round": 2, "dev_rewards": dev_scores,
        }

    scores = {name: evaluate(name, f"test_{name.replace(' ', '_')}", test, args.eval_trials, args.eval_temperature)
              for name in agents}
    rows = []
    for name, agent in agents.items():
        row = {"agent": name, "method": agent["method"], "round": agent["round"], "path": str(agent["path"]),
               "figures": {k: v.as_dict() for k, v in bootstrap_figures(scores[name], samples=args.bootstrap_samples,
                                                                        seed=args.seed).items()}}
        if name != "base":
            row["vs_base"] = {k: v.as_dict() for k, v in paired_bootstrap(scores["base"], scores[name],
                                                                         samples=args.bootstrap_samples, seed=args.seed).items()}
        harvest = agent["path"] / "josh_done.json"
        if harvest.exists():
            row["josh"] = json.loads(harvest.read_text()).get("rounds")
        rows.append(row)
    k = args.eval_trials
    results = {"settings": vars(args), "device": device_name(), "wall_seconds": round(time.perf_counter() - started),
               "test_tasks": len(test), "rows": rows}
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    text = table(rows, k)
    (out / "results.md").write_text(text + "\n")
    plot(rows, out / "success.png")
    print(text)
    print(f"device: {results['device']}; wrote {out / 'results.json'}, {out / 'results.md'}, {out / 'success.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
