"""The ``josh-hf`` command line: build, info, evaluate, ... (one module per sub-command)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__
from .commands import build_dataset, info, show_tree

COMMANDS = [build_dataset, info, show_tree]
# Commands configured by dataclasses through TRL's TrlParser (``--config file.yaml`` works).
TRL_COMMANDS = {
    "evaluate": ("josh_hf.commands.evaluate", "run an agent against simulated users on ToolWOZ and score it"),
    "harvest": ("josh_hf.commands.harvest", "run JOSH's tree search on ToolWOZ tasks and save every task's tree"),
    "train": ("josh_hf.commands.train", "JOSH rounds: harvest with the current policy, then SFT/KTO/DPO on it (TRL)"),
    "demo": ("josh_hf.commands.demo", "the whole pipeline offline at a small scale: build, train from scratch, evaluate, JOSH, evaluate"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="josh-hf", description="JOSH self-training and the ToolWOZ benchmark")
    parser.add_argument("--version", action="version", version=f"josh-hf {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    for name, (_, help_text) in TRL_COMMANDS.items():
        sub.add_parser(name, help=f"{help_text} (see: josh-hf {name} --help)", add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in TRL_COMMANDS:
        import importlib

        module = importlib.import_module(TRL_COMMANDS[argv[0]][0])
        return _guard(argv[0], lambda: module.main(argv[1:]))
    args = build_parser().parse_args(argv)
    return _guard(args.command, lambda: args.func(args))


def _guard(command: str, fn) -> int:
    try:
        return int(fn() or 0)
    except (FileNotFoundError, FileExistsError, KeyError, ValueError) as e:  # user errors: one line, no traceback
        print(f"josh-hf {command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
