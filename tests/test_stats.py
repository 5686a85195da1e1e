"""Task-level bootstrap figures and paired tests, on hand-made scores with known answers."""

from __future__ import annotations

import pytest

from josh_hf.stats import bootstrap_figures, paired_bootstrap, per_task_rewards, task_figures


def test_task_figures_pass_k_known_values() -> None:
    # 2 successes of 4 trials: pass^1 = 2/4, pass^2 = C(2,2)/C(4,2) = 1/6, pass^3 = 0.
    figures = task_figures([1.0, 0.5, 1.0, 0.0])
    assert figures["average_reward"] == pytest.approx(0.625)
    assert figures["success_rate"] == 0.5
    assert figures["pass^1"] == 0.5 and figures["pass^2"] == pytest.approx(1 / 6) and figures["pass^3"] == 0.0
    with pytest.raises(ValueError):
        task_figures([])


def test_per_task_rewards_orders_trials() -> None:
    rows = [{"task_id": "A", "trial": 1, "reward": 0.5}, {"task_id": "A", "trial": 0, "reward": 1.0},
            {"task_id": "B", "trial": 0, "reward": 0.0}]
    assert per_task_rewards(rows) == {"A": [1.0, 0.5], "B": [0.0]}


def test_bootstrap_interval_contains_estimate_and_degenerates_when_constant() -> None:
    scores = {f"t{i}": [1.0 if i % 4 == 0 else 0.0] for i in range(200)}
    figures = bootstrap_figures(scores, samples=2000)
    sr = figures["success_rate"]
    assert sr.estimate == pytest.approx(0.25)
    assert sr.low < 0.25 < sr.high
    # Binomial standard error sqrt(.25 * .75 / 200) = 0.0306: the 95% interval is about +-0.06.
    assert 0.09 < sr.high - sr.low < 0.15
    constant = bootstrap_figures({f"t{i}": [0.5, 0.5] for i in range(10)}, samples=500)
    assert constant["average_reward"].low == constant["average_reward"].high == 0.5
    assert constant["pass^2"].estimate == 0.0


def test_paired_bootstrap_detects_a_real_gain_and_not_a_null_one() -> None:
    base = {f"t{i}": [1.0 if i % 5 == 0 else 0.0] for i in range(300)}  # 0.2
    better = {f"t{i}": [1.0 if i % 5 in (0, 1) else 0.0] for i in range(300)}  # 0.4, never worse
    result = paired_bootstrap(base, better, samples=4000)["success_rate"]
    assert result.baseline == pytest.approx(0.2) and result.treatment == pytest.approx(0.4)
    assert result.difference.estimate == pytest.approx(0.2)
    assert result.p_value < 0.001 and result.difference.low > 0
    assert result.relative_gain == pytest.approx(1.0)
    # Same scores shuffled across tasks: no systematic difference.
    shuffled = {f"t{i}": base[f"t{(i + 1) % 300}"] for i in range(300)}
    null = paired_bootstrap(base, shuffled, samples=4000)["success_rate"]
    assert null.difference.estimate == 0.0 and null.p_value == 1.0


def test_paired_bootstrap_uses_shared_tasks_only() -> None:
    result = paired_bootstrap({"a": [0.0], "b": [1.0]}, {"b": [1.0], "c": [0.0]}, samples=100)
    assert result["average_reward"].tasks == 1
    with pytest.raises(ValueError, match="share no task"):
        paired_bootstrap({"a": [0.0]}, {"c": [0.0]})
