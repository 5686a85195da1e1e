"""``josh-hf show-tree``: draw one task's JOSH tree from a ``trees.jsonl`` file."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "show-tree",
        help="draw a task's JOSH tree (golden path, successful and failed branches) as HTML, SVG or PNG",
    )
    p.add_argument("file", help="trees.jsonl written by the JOSH search / josh-hf harvest")
    p.add_argument("--task", default=None, help="task id to draw (optional when the file holds one tree)")
    p.add_argument("--seed", type=int, default=None,
                   help="the run's seed, when the file holds several trees of the task")
    p.add_argument("--output", "-o", required=True,
                   help="picture to write: .html (self-contained, hover for tool calls), .svg, "
                        "or .png (needs matplotlib)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..josh.harvest import golden_node_id, read_tree_records
    from ..josh.show_tree import find_record, save_tree

    record = find_record(read_tree_records(args.file), args.task, args.seed)
    out = save_tree(record, args.output)
    golden = " -> ".join(str(i) for i in record.get("golden_path") or []) or "none"
    print(f"wrote {out}: task {record.get('task_id')}, {len(record['nodes'])} nodes, "
          f"JOSH reward {float(record.get('reward') or 0.0):.3f}, golden path {golden}"
          + ("" if golden_node_id(record) is not None else " (no goal met)"))
    return 0
