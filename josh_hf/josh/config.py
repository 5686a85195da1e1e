"""Settings of a JOSH search (defaults: the reference's, arXiv 2409.04617)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..agents.formats import AGENT_FORMATS, AgentFormat
from ..backends.base import SamplingParams

CREDIT_MODES = ("first", "all")
"""How a collapse credits goals: see :class:`JOSHConfig.credit`."""


def _default_sampling() -> SamplingParams:
    # The reference's gpt-4o-mini setting; temperature must be > 0 (siblings must differ).
    return SamplingParams(temperature=1.0, max_new_tokens=256)


@dataclass
class JOSHConfig:
    """How JOSH explores one conversation per task.

    * ``beam_size``: cap on live leaves; every live leaf splits in two while
      ``2 × live leaves ≤ beam_size`` (8: 1 → 2 → 4 → 8 → 8 ...).
    * ``max_steps``: JOSH steps per task (the opening user message comes before step 1).
    * ``max_generations_per_turn``: model generations an agent turn may use before it ends
      without speaking (which ends that leaf).
    * ``agent_format``: ``"react"`` (reference default) or ``"native"``.
    * ``sampling``: the agent's decoding; ``temperature`` must be > 0 (with greedy decoding
      sibling branches would be identical). Its ``seed`` is ignored: every node samples with
      ``stable_seed(seed, task_id, node_id)``.
    * ``seed``: base seed of the run.
    * ``credit``:

      - ``"first"`` (reference): at a collapse, only the goals met by the golden leaf (the
        first successful leaf in leaf order) are removed from the remaining goals; goals
        met only by other successful leaves stay to be met again on the golden path.
      - ``"all"`` (variant): at a collapse, every goal met this step by ANY successful leaf
        is removed (the union, in the task's goal order). The golden leaf is still the first
        successful leaf, so a goal may be credited to a branch that was dropped: such goals
        count in the JOSH reward but are not in the golden conversation. Records say which
        node met each credited goal (``credited_to``) and the fraction met on the golden path
        itself (``golden_reward``); use the latter to pick SFT conversations.
    * ``system_prompt``: replaces the format's prompt (``{tools}`` becomes the tool JSON).
    """

    beam_size: int = 8
    max_steps: int = 15
    max_generations_per_turn: int = 3
    agent_format: str | AgentFormat = "react"
    sampling: SamplingParams = field(default_factory=_default_sampling)
    seed: int = 0
    credit: str = "first"
    system_prompt: str | None = None

    def __post_init__(self) -> None:
        if self.beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {self.beam_size}")
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.max_generations_per_turn < 1:
            raise ValueError(f"max_generations_per_turn must be >= 1, got {self.max_generations_per_turn}")
        if isinstance(self.agent_format, str) and self.agent_format not in AGENT_FORMATS:
            raise ValueError(f"agent_format must be one of {', '.join(AGENT_FORMATS)}, got {self.agent_format!r}")
        if self.credit not in CREDIT_MODES:
            raise ValueError(f"credit must be one of {', '.join(CREDIT_MODES)}, got {self.credit!r}")
        if not self.sampling.temperature > 0:
            raise ValueError(
                f"JOSH needs sampling temperature > 0 (got {self.sampling.temperature}): with greedy decoding "
                "sibling branches are identical and the search explores nothing"
            )

    @classmethod
    def from_fields(cls, settings: Any, prefix: str = "") -> JOSHConfig:
        """The search config held in the flat fields of a command or trainer config:
        ``{prefix}beam_size``, ``{prefix}temperature`` ... (sampling fields included) and ``seed``.

        ``josh-hf harvest`` names them plainly, the JOSH trainers' configs with ``josh_``.
        """

        def get(name: str) -> Any:
            return getattr(settings, prefix + name)

        return cls(
            beam_size=get("beam_size"),
            max_steps=get("max_steps"),
            max_generations_per_turn=get("max_generations_per_turn"),
            agent_format=get("agent_format"),
            sampling=SamplingParams(temperature=get("temperature"), top_p=get("top_p"), top_k=get("top_k"),
                                    max_new_tokens=get("max_new_tokens")),
            seed=settings.seed,
            credit=get("credit"),
            system_prompt=get("system_prompt"),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe settings (recorded in every tree)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        fmt = self.agent_format
        out["agent_format"] = fmt if isinstance(fmt, str) else fmt.name
        out["sampling"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self.sampling).items()}
        out["sampling"].pop("seed", None)  # per node, never this one
        return out
