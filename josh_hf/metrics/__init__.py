"""``evaluate`` metrics shipped with josh-hf.

>>> import evaluate
>>> from josh_hf.metrics import metric_path
>>> toolwoz = evaluate.load(metric_path())          # offline: a local module folder
>>> toolwoz.compute(predictions=[calls], references=[task_row])
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from josh_hf.toolwoz.metric_core import compute_toolwoz_metric, toolwoz_inputs

if TYPE_CHECKING:
    import evaluate

__all__ = ["compute_toolwoz_metric", "load_toolwoz_metric", "metric_path", "toolwoz_inputs"]


def metric_path(name: str = "toolwoz") -> str:
    """The folder of a bundled metric, ready for ``evaluate.load`` (which wants the folder
    named like its script: ``toolwoz/toolwoz.py``)."""
    path = Path(__file__).resolve().parent / name
    if not (path / f"{name}.py").is_file():
        raise FileNotFoundError(f"no bundled metric {name!r} at {path}")
    return str(path)


def load_toolwoz_metric(**kwargs: Any) -> evaluate.EvaluationModule:
    """``evaluate.load(metric_path(), **kwargs)`` (imports ``evaluate`` only when called)."""
    import evaluate

    return evaluate.load(metric_path(), **kwargs)
