"""``josh-hf info``: split sizes and goal-call counts of a ToolWOZ build."""

from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="print ToolWOZ split sizes and goal calls per tool")
    p.add_argument("--source", default=None,
                   help="built dataset folder / Hub id, or a MultiWOZ source (default: $JOSH_HF_MULTIWOZ or ../shared/data/multiwoz)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def format_summary(summary: dict) -> str:
    lines = [f"ToolWOZ from {summary.get('origin') or '?'}: {summary['num_tasks']} tasks"]
    splits = summary["splits"]
    tools = sorted({t for s in splits.values() for t in s["goal_calls_per_tool"]})
    header = f"{'':<19}" + "".join(f"{name:>12}" for name in splits)
    lines += [header, "-" * len(header)]
    lines.append(f"{'tasks':<19}" + "".join(f"{s['tasks']:>12}" for s in splits.values()))
    lines.append(f"{'goal calls':<19}" + "".join(f"{s['goal_calls']:>12}" for s in splits.values()))
    for t in tools:
        lines.append(f"  {t:<17}" + "".join(f"{s['goal_calls_per_tool'].get(t, 0):>12}" for s in splits.values()))
    lines += [f"note: {n}" for n in summary.get("notes", [])]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from ..toolwoz import ToolWOZ

    summary = ToolWOZ.load(args.source).summary()
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0
