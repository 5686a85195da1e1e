"""Add the ``demonstrations`` config to a built ToolWOZ dataset folder (and optionally push it).

    python dataset_scripts/build_toolwoz.py --output toolwoz_dataset
    python dataset_scripts/build_demonstrations.py --dataset toolwoz_dataset [--push-to-hub USER/toolwoz]

Demonstrations come from the tasks of ``--split`` (default: ``train`` when the build has it,
else ``validation``); test and test_full tasks are never used. See
:mod:`josh_hf.demo.demonstrations` for the sources and the MultiWOZ conversion heuristics, and
:mod:`josh_hf.demo.variants` for ``--goal-variants``.
"""

from __future__ import annotations

import argparse
import json
import sys

from josh_hf.demo.demonstrations import SOURCES, add_demonstrations_config, build_demonstrations, demonstration_stats
from josh_hf.toolwoz import ToolWOZ
from josh_hf.toolwoz.hub import push_dataset


def main(argv: list[str] | None = None) -> int:
    """Build the demonstrations from ``--dataset``'s tasks and write them into that folder."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, help="A ToolWOZ dataset folder written by build_toolwoz.py.")
    parser.add_argument("--split", default=None, help="Tasks to draw from (default: train if present, else validation).")
    parser.add_argument("--sources", nargs="+", default=list(SOURCES), choices=SOURCES)
    parser.add_argument("--seed", type=int, default=0, help="Seed of the synthetic conversations.")
    parser.add_argument("--synthetic-trials", type=int, default=1, help="Synthetic conversations per task (one seed each).")
    parser.add_argument("--goal-variants", type=int, default=0,
                        help="Also N conversations per task on its goal with values redrawn from the database.")
    parser.add_argument("--limit", type=int, default=None, help="Only the first N tasks (for a quick look).")
    parser.add_argument("--push-to-hub", default=None, metavar="REPO_ID", help="Upload the folder to this dataset repo.")
    parser.add_argument("--private", action="store_true")
    args = parser.parse_args(argv)

    toolwoz = ToolWOZ.from_dataset(args.dataset)
    ds = build_demonstrations(toolwoz, split=args.split, sources=args.sources, seed=args.seed,
                               synthetic_trials=args.synthetic_trials, goal_variants=args.goal_variants,
                               limit=args.limit)
    paths = add_demonstrations_config(args.dataset, ds)
    print(f"wrote {len(ds)} demonstrations to {args.dataset}: {', '.join(paths)}")
    print(json.dumps(demonstration_stats(ds), indent=2))
    if args.push_to_hub:
        print(f"pushed to {push_dataset(args.dataset, args.push_to_hub, private=args.private)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
