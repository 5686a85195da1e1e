"""Task-level bootstrap statistics for ToolWOZ evaluations.

ToolWOZ figures are averages over tasks of per-conversation scores, and conversations of the
same task are not independent, so the resampling unit is the *task*: a bootstrap sample draws
tasks with replacement and keeps every trial of each drawn task. Comparisons of two agents on
the same tasks are *paired*: both agents' figures are recomputed on the same resampled tasks.

Figures (per task, over its trials, then averaged over tasks):

* ``average_reward``: mean reward;
* ``success_rate``: share of conversations with reward 1.0;
* ``pass^k``: the chance that ``k`` trials drawn without replacement all succeed,
  ``C(c, k) / C(n, k)`` for ``c`` successes out of ``n`` trials (τ-bench's estimator).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from math import comb
from typing import Any

import numpy as np

SUCCESS_EPS = 1e-9


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap percentile interval."""

    estimate: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float]:
        return {"estimate": self.estimate, "low": self.low, "high": self.high}

    def __str__(self) -> str:
        return f"{self.estimate:.3f} [{self.low:.3f}, {self.high:.3f}]"


def per_task_rewards(transcripts: Iterable[Mapping[str, Any]]) -> dict[str, list[float]]:
    """``{task_id: [reward of trial 0, trial 1, ...]}`` from evaluation transcripts (dicts with
    ``task_id``, ``trial`` and ``reward``)."""
    trials: dict[str, dict[int, float]] = {}
    for t in transcripts:
        trials.setdefault(str(t["task_id"]), {})[int(t["trial"])] = float(t["reward"])
    return {task: [by_trial[k] for k in sorted(by_trial)] for task, by_trial in trials.items()}


def task_figures(rewards: Sequence[float], k_max: int | None = None) -> dict[str, float]:
    """The figures of one task from its trials' rewards."""
    if not rewards:
        raise ValueError("a task needs at least one trial")
    n = len(rewards)
    successes = sum(r >= 1.0 - SUCCESS_EPS for r in rewards)
    out = {"average_reward": float(np.mean(rewards)), "success_rate": successes / n}
    for k in range(1, (k_max or n) + 1):
        out[f"pass^{k}"] = comb(successes, k) / comb(n, k)
    return out


def _matrix(per_task: Mapping[str, Sequence[float]], tasks: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Per-task figures as a (tasks x figures) array, figure names in column order."""
    counts = {len(per_task[t]) for t in tasks}
    k_max = min(counts)
    rows = [task_figures(per_task[t], k_max) for t in tasks]
    names = list(rows[0])
    return names, np.array([[row[name] for name in names] for row in rows], dtype=np.float64)


def _percentile(samples: np.ndarray, estimate: np.ndarray, confidence: float) -> list[Interval]:
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(samples, [alpha, 1.0 - alpha], axis=0)
    return [Interval(float(e), float(lo), float(hi)) for e, lo, hi in zip(estimate, low, high)]


def bootstrap_figures(
    per_task: Mapping[str, Sequence[float]],
    *,
    samples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Interval]:
    """Every figure with its bootstrap percentile interval, resampling tasks."""
    tasks = sorted(per_task)
    if not tasks:
        raise ValueError("no tasks to bootstrap")
    names, values = _matrix(per_task, tasks)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(tasks), size=(samples, len(tasks)))
    boot = values[idx].mean(axis=1)
    return dict(zip(names, _percentile(boot, values.mean(axis=0), confidence)))


@dataclass(frozen=True)
class PairedComparison:
    """``treatment - baseline`` on the shared tasks: the difference with its interval and a
    two-sided bootstrap p-value for "no difference"."""

    baseline: float
    treatment: float
    difference: Interval
    p_value: float
    tasks: int

    @property
    def relative_gain(self) -> float | None:
        """``treatment / baseline - 1`` (None when the baseline is 0)."""
        return None if self.baseline == 0 else self.treatment / self.baseline - 1.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline,
            "treatment": self.treatment,
            "difference": self.difference.as_dict(),
            "p_value": self.p_value,
            "relative_gain": self.relative_gain,
            "tasks": self.tasks,
        }


def paired_bootstrap(
    baseline: Mapping[str, Sequence[float]],
    treatment: Mapping[str, Sequence[float]],
    *,
    samples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, PairedComparison]:
    """Compare two agents on the tasks both were evaluated on, figure by figure.

    The p-value is two-sided: twice the share of resampled differences on the far side of 0
    from the observed one (at least ``1 / samples``, at most 1).
    """
    tasks = sorted(set(baseline) & set(treatment))
    if not tasks:
        raise ValueError("the two evaluations share no task")
    k_max = min(min(len(baseline[t]), len(treatment[t])) for t in tasks)
    trim = {t: list(baseline[t])[:k_max] for t in tasks}, {t: list(treatment[t])[:k_max] for t in tasks}
    names, base = _matrix(trim[0], tasks)
    _, treat = _matrix(trim[1], tasks)
    diff = treat - base
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(tasks), size=(samples, len(tasks)))
    boot = diff[idx].mean(axis=1)
    observed = diff.mean(axis=0)
    intervals = _percentile(boot, observed, confidence)
    out: dict[str, PairedComparison] = {}
    for j, name in enumerate(names):
        if observed[j] > 0:
            tail = np.mean(boot[:, j] <= 0)
        elif observed[j] < 0:
            tail = np.mean(boot[:, j] >= 0)
        else:
            tail = 0.5
        p = float(min(1.0, max(2.0 * tail, 1.0 / samples)))
        out[name] = PairedComparison(float(base[:, j].mean()), float(treat[:, j].mean()), intervals[j], p, len(tasks))
    return out


__all__ = [
    "Interval",
    "PairedComparison",
    "bootstrap_figures",
    "paired_bootstrap",
    "per_task_rewards",
    "task_figures",
]
