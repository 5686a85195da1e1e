"""``josh-hf build-dataset``: build the ToolWOZ Hub dataset from MultiWOZ 2.0."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", default=None,
                   help="MultiWOZ 2.0: a ToolWOZ data folder, a folder with data.json, MultiWOZ_2.0.zip or its URL "
                        "(default: $JOSH_HF_MULTIWOZ or ../shared/data/multiwoz)")
    p.add_argument("--output", required=True, help="folder to write the dataset (Parquet + README.md card) into")
    p.add_argument("--push-to-hub", default=None, metavar="REPO_ID", help="also upload the folder to this dataset repo")
    p.add_argument("--private", action="store_true", help="create the Hub repo as private")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("build-dataset", help="build the ToolWOZ dataset (tasks, databases, tools) from MultiWOZ")
    add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..toolwoz.hub import build_toolwoz_dataset, format_build_summary

    summary = build_toolwoz_dataset(args.source, args.output, push_to_hub=args.push_to_hub, private=args.private)
    print(format_build_summary(summary))
    print(f"wrote {args.output}")
    return 0
