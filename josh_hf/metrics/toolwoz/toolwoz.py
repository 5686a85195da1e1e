"""ToolWOZ sparse-reward metric for ``evaluate`` (JOSH, arXiv:2409.04617).

Load it offline from the installed package: ``evaluate.load(josh_hf.metrics.metric_path())``.
The scoring itself lives in ``josh_hf.toolwoz.metric_core`` (which calls the benchmark's one
scoring implementation); this module only adapts ``evaluate``'s input handling.
"""

from __future__ import annotations

from typing import Any

import datasets
import evaluate

from josh_hf.toolwoz.metric_core import (
    ToolWOZInputError,
    check_conversation,
    compute_toolwoz_metric,
    encode_input,
    slim_reference,
)

_CITATION = """\
@article{lattimer2024sparse,
  title   = {Sparse Rewards Can Self-Train Dialogue Agents},
  author  = {Lattimer, Barrett Martin and Gangal, Varun and McDonald, Ryan and Yang, Yi},
  journal = {arXiv preprint arXiv:2409.04617},
  year    = {2024}
}
"""

_DESCRIPTION = """\
ToolWOZ scores a tool-calling dialogue agent by the goal calls (sparse rewards) it made: each
ToolWOZ task lists the search/book calls that would fulfil the customer's MultiWOZ goal, and a
conversation's reward is the fraction of them the agent's calls satisfied; success means
reward 1.0. The metric replays the environment's scoring rules on the calls and results of
each conversation, so it equals ``ToolWOZEnv.score()`` on the same calls.
"""

_KWARGS_DESCRIPTION = """\
Args:
    predictions: one item per conversation: the agent's tool calls in order, each a dict
        ``{"name": str, "arguments": dict | JSON str, "result": what the environment
        returned}`` (a search: a list of 0 or 1 row; a booking: ``{"success", "return"}``;
        a refused call: its ``ERROR`` string). ``RecordedCall`` objects (``env.calls``) and
        whole conversations as JSON strings are accepted too.
    references: one item per conversation: the task's row of the ToolWOZ ``tasks`` dataset
        (``{"id", "goal_calls", ...}``, nested fields as JSON strings or objects), a ``Task``,
        or just the task's goal calls (``GoalCall.to_dict()`` dicts). Conversations sharing
        a task ``id`` are repeated trials of that task (for pass^k); a reference without
        ``id`` is its own task.
Returns:
    average_reward: mean reward over conversations.
    success_rate: fraction of conversations with reward 1.0.
    num_conversations, num_tasks, num_goal_calls, num_calls: counts.
    invalid_call_rate: fraction of predicted calls that were refused (``ERROR`` result),
        named an unknown tool, or had arguments that are not a dict.
    tool_accuracy: goal tool name -> fraction of those goal calls met.
    domain_accuracy: domain -> fraction of that domain's goal calls met.
    pass^k (k = 1 .. fewest trials of any task): tau-bench's pass^k, the mean over tasks of
        C(c, k) / C(n, k) for a task with n trials and c successes.
Examples:
    >>> import evaluate, josh_hf.metrics
    >>> toolwoz = evaluate.load(josh_hf.metrics.metric_path())
    >>> calls = [{"name": "book_train", "arguments": {"people": "1", "trainID": "TR0001"},
    ...           "result": {"success": True, "return": {"trainID": "TR0001", "reference": "A1"}}}]
    >>> goal = [{"name": "book_train", "arguments": {"people": "1", "trainID": "TR0001"}}]
    >>> toolwoz.compute(predictions=[calls], references=[goal])["average_reward"]
    1.0
"""

_FEATURES = datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")})


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Toolwoz(evaluate.Metric):
    """ToolWOZ metric (class named so that evaluate calls it ``toolwoz``): average reward, success rate, per-tool/domain accuracy, invalid calls, pass^k.

    Conversations are nested, heterogeneous structures that Arrow cannot type, so ``evaluate``
    stores each prediction and reference as one JSON string; ``add``, ``add_batch`` and
    ``compute`` encode Python objects for the caller (strings are taken as JSON already).
    """

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            module_type="metric",
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=_FEATURES,
            homepage="https://arxiv.org/abs/2409.04617",
            codebase_urls=["https://github.com/asappresearch/josh-llm-simulation-training"],
            reference_urls=["https://arxiv.org/abs/2409.04617"],
        )

    def _encode(self, predictions: list[Any], references: list[Any]) -> tuple[list[str], list[str]]:
        # Validate before anything reaches evaluate's writer, so a malformed conversation fails
        # where it was added and leaves no half-written cache behind. Indices count every
        # conversation added since the last compute (in this process).
        start = getattr(self, "_num_added", 0)
        for i, (p, r) in enumerate(zip(predictions, references)):
            check_conversation(p, r, start + i)
        self._num_added = start + len(predictions)
        # Only id and goal_calls are read: a full dataset row's goal and dialogue are not stored.
        return [encode_input(p) for p in predictions], [encode_input(slim_reference(r)) for r in references]

    def add_batch(self, *, predictions: Any = None, references: Any = None, **kwargs: Any) -> None:
        """Add conversations (Python objects or JSON strings) to the metric's stack."""
        if predictions is not None or references is not None:
            if predictions is None or references is None:
                raise ToolWOZInputError("toolwoz needs both predictions and references")
            predictions, references = list(predictions), list(references)
            if len(predictions) != len(references):
                raise ToolWOZInputError(
                    f"got {len(predictions)} predictions but {len(references)} references; "
                    "pass one reference (the task) per prediction (one conversation's calls)"
                )
            predictions, references = self._encode(predictions, references)
        super().add_batch(predictions=predictions, references=references, **kwargs)

    def add(self, *, prediction: Any = None, reference: Any = None, **kwargs: Any) -> None:
        """Add one conversation (Python objects or JSON strings) to the metric's stack."""
        if prediction is None or reference is None:
            raise ToolWOZInputError("toolwoz needs both a prediction and a reference")
        (prediction,), (reference,) = self._encode([prediction], [reference])
        super().add(prediction=prediction, reference=reference, **kwargs)

    def compute(self, *, predictions: Any = None, references: Any = None, **kwargs: Any) -> dict[str, Any] | None:
        """Score the given conversations plus any added before (see the module's usage)."""
        try:
            return super().compute(predictions=predictions, references=references, **kwargs)
        finally:
            self._num_added = 0

    def _compute(self, predictions: list[str], references: list[str]) -> dict[str, Any]:
        return compute_toolwoz_metric(predictions, references)
