"""``josh-hf demo``: build ToolWOZ, train a small agent from scratch, evaluate it, run one JOSH
round, evaluate again and print the before/after table, offline.

Every stage writes under ``--output`` and is skipped when its result is there, so a demo that
was interrupted resumes where it stopped (``--overwrite`` starts over). Options come from the
command line or a YAML file (``--config``, TRL's ``TrlParser``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path


def main(argv: Sequence[str]) -> int:
    from trl import TrlParser

    from ..demo.pipeline import DemoConfig, format_summary, run_demo

    parser = TrlParser((DemoConfig,), prog="josh-hf demo", description=__doc__.splitlines()[0])
    (config,) = parser.parse_args_and_config(list(argv))
    summary = run_demo(config, log=lambda line: print(line, file=sys.stderr, flush=True))
    josh = summary["josh"]
    rounds = josh.get("rounds") or [{}]
    print(f"ToolWOZ test, first {config.eval_tasks} tasks x {config.eval_trials} trial(s), agenda user "
          f"(95% bootstrap intervals over tasks; p: paired bootstrap, JOSH-SFT vs base)")
    print(format_summary(summary))
    print("JOSH round: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in rounds[0].items()))
    out = Path(config.output)
    print(f"files: {out / 'summary.json'}, agents in {out / 'base'} and {out / 'josh'}, "
          f"transcripts in {out / 'eval_base'} and {out / 'eval_josh'}, trees in {out / 'josh'}")
    print("stage seconds: " + ", ".join(f"{k}: {v:.0f}" for k, v in summary["seconds"].items()), file=sys.stderr)
    return 0
