"""Argument groups shared by the ``josh-hf`` commands that run an agent (evaluate, harvest).

Each command's config dataclass inherits the groups it needs, so a flag has one name, one
default and one help text everywhere (as TRL's ``ModelConfig`` is shared by its scripts).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class AgentModelArguments:
    """How the agent's model is loaded or reached (the model itself is each command's ``model``)."""

    adapter: str | None = field(default=None, metadata={"help": "PEFT adapter (Hub id or path) applied to --model, not merged."})
    base_url: str | None = field(default=None, metadata={"help": "OpenAI-compatible server URL (vLLM, TGI, SGLang, transformers serve); implies the OpenAI backend."})
    api_key_env: str = field(default="OPENAI_API_KEY", metadata={"help": "Environment variable holding the server's API key."})
    dtype: str = "auto"
    load_in_4bit: bool = False
    load_in_8bit: bool = False
    max_batch_tokens: int = field(default=16384, metadata={"help": "Token budget per generation batch (prompt + new tokens per row)."})
    trust_remote_code: bool = False


@dataclass
class UserArguments:
    """The user simulator."""

    user: str = field(default="agenda", metadata={"help": "User simulator: agenda | replay | llm-goal | llm-guide."})
    user_model: str | None = field(default=None, metadata={"help": "Model of an LLM user (same forms as --model); defaults to --model's backend."})
    user_base_url: str | None = field(default=None, metadata={"help": "OpenAI-compatible URL for the LLM user."})
    user_temperature: float = field(default=0.0, metadata={"help": "LLM user temperature (the reference used 0)."})


@dataclass
class SamplingArguments:
    """Agent generation settings shared by evaluation and search (temperature is each command's own)."""

    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 256
    system_prompt: str | None = field(default=None, metadata={"help": "Override the agent's system prompt ('{tools}' is replaced by the tool schemas)."})


@dataclass
class SourceArguments:
    """Where ToolWOZ comes from."""

    source: str | None = field(default=None, metadata={"help": "Built ToolWOZ dataset (folder or Hub id) or a MultiWOZ source; default $JOSH_HF_MULTIWOZ or ../shared/data/multiwoz."})


USERS = ("agenda", "replay", "llm-goal", "llm-guide")


def check_user(args: UserArguments) -> None:
    """A clear error for an unknown user simulator."""
    if args.user not in USERS:
        raise ValueError(f"user must be one of {', '.join(USERS)}; got {args.user!r}")


__all__ = ["USERS", "AgentModelArguments", "SamplingArguments", "SourceArguments", "UserArguments", "check_user"]
