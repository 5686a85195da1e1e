"""The ``josh-hf`` command line: build, info, evaluate, ... (one module per sub-command)."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from . import __version__
from .commands import build_dataset, info

COMMANDS = [build_dataset, info]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="josh-hf", description="JOSH self-training and the ToolWOZ benchmark")
    parser.add_argument("--version", action="version", version=f"josh-hf {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, KeyError, ValueError) as e:  # user errors: one clear line, no traceback
        print(f"josh-hf {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
