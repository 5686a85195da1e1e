"""Load the policy for JOSH training: base model + tokenizer, optional 4/8-bit quantisation
(``bitsandbytes``; QLoRA), and a LoRA adapter (PEFT).

Reference model for KTO / DPO
-----------------------------
With PEFT no second copy of the weights is loaded. This is how TRL 1.16's ``KTOTrainer`` and
``DPOTrainer`` handle it (``trl/trainer/{kto,dpo}_trainer.py``, "Reference model" block of
``__init__`` and ``compute_ref_log_probs`` / ``_compute_loss``):

* pass ``ref_model=None`` (the default). When the policy is a PEFT model (or a ``peft_config``
  is given), TRL sets ``self.ref_model = None`` and computes the reference log-probs inside
  ``use_adapter(model, adapter_name=...)``: with ``adapter_name=None`` the adapter is
  *disabled*, so the reference is the frozen base model itself;
* if the trainer receives a model that is *already* a ``PeftModel`` (what :func:`load_policy`
  returns when ``lora`` or ``adapter`` is given) and no ``peft_config``, TRL adds a frozen
  ``"ref"`` adapter copied from ``"default"`` and uses it as the reference: the adapter's
  weights are copied (a few MB), the base weights are shared. For a fresh LoRA (``B = 0``)
  the two references are identical; for a resumed adapter the ``"ref"`` copy is the adapter
  as loaded, which is what a reference should be;
* passing a base model plus ``peft_config=lora_config`` to the trainer is equivalent (TRL
  wraps it; the reference is the base with the adapter disabled).

Only without PEFT (full fine-tuning) does TRL load a second model from
``model.config._name_or_path`` (unless ``precompute_ref_log_probs=True``).

:func:`josh_hf.trainer.hub.push_josh_model` saves only the trained adapter, never TRL's
``"ref"`` copy.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from peft import LoraConfig
    from transformers import BitsAndBytesConfig, PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

__all__ = [
    "LORA_TARGET_MODULES",
    "REFERENCE_ADAPTER_NAME",
    "bnb_config",
    "count_parameters",
    "default_lora_config",
    "is_quantized",
    "load_policy",
    "lora_target_modules",
    "reference_lora_config",
]

Quantization = Literal["4bit", "8bit"]

LORA_TARGET_MODULES: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""Every attention and MLP projection of Llama/Qwen/Mistral-style decoders (the QLoRA recipe)."""

REFERENCE_ADAPTER_NAME = "ref"
"""The name TRL's KTO/DPO trainers give the frozen copy of the adapter they use as reference."""


def default_lora_config(
    r: int = 16,
    lora_alpha: int = 32,
    lora_dropout: float = 0.05,
    target_modules: Iterable[str] | str | None = None,
    **kwargs: Any,
) -> LoraConfig:
    """A causal-LM ``LoraConfig`` on every projection layer (``LORA_TARGET_MODULES``) by default.

    ``load_policy`` narrows the targets to the projections the model actually has.
    """
    from peft import LoraConfig

    targets: list[str] | str = (
        list(LORA_TARGET_MODULES) if target_modules is None
        else target_modules if isinstance(target_modules, str) else list(target_modules)
    )
    return LoraConfig(
        r=r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, target_modules=targets,
        bias="none", task_type="CAUSAL_LM", **kwargs,
    )


def reference_lora_config(**overrides: Any) -> LoraConfig:
    """The LoRA settings of the JOSH reference implementation: r 64, alpha 64, dropout 0.05,
    on every projection layer (``overrides`` win)."""
    settings: dict[str, Any] = {"r": 64, "lora_alpha": 64, "lora_dropout": 0.05}
    settings.update(overrides)
    return default_lora_config(**settings)


def bnb_config(quantization: Quantization) -> BitsAndBytesConfig:
    """The ``BitsAndBytesConfig`` for ``"4bit"`` (QLoRA: NF4, double quantisation, bf16 compute)
    or ``"8bit"`` (LLM.int8)."""
    import torch
    from transformers import BitsAndBytesConfig

    if quantization == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    raise ValueError(f"quantization must be None, '4bit' or '8bit', not {quantization!r}")


def lora_target_modules(model: Any, candidates: Iterable[str] = LORA_TARGET_MODULES) -> list[str]:
    """The ``candidates`` that name at least one linear layer of ``model`` (in ``candidates`` order).

    Linear means ``torch.nn.Linear`` or a bitsandbytes ``Linear4bit``/``Linear8bitLt`` (both
    subclass it), so the same names are found before and after quantisation.
    """
    import torch

    leaf_names = {name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                  if isinstance(module, torch.nn.Linear)}
    return [c for c in candidates if c in leaf_names]


def is_quantized(model: Any) -> bool:
    """Whether ``model`` (or a PEFT model's base) was loaded with bitsandbytes 4/8-bit weights."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return bool(getattr(base, "is_loaded_in_4bit", False) or getattr(base, "is_loaded_in_8bit", False)
                or getattr(base, "is_quantized", False))


def count_parameters(model: Any) -> tuple[int, int]:
    """``(total, trainable)`` parameter counts, each tensor counted once (shared storage is one).

    4-bit weights are packed two per byte; bitsandbytes' ``Params4bit`` reports the packed
    size, so a 4-bit model counts about half of its logical parameters (as PEFT's
    ``print_trainable_parameters`` does before it corrects for it).
    """
    seen: set[int] = set()
    total = trainable = 0
    for param in model.parameters():
        key = id(param)
        if key in seen:
            continue
        seen.add(key)
        total += param.numel()
        if param.requires_grad:
            trainable += param.numel()
    return total, trainable


def load_policy(
    model_name_or_path: str | Path,
    *,
    quantization: Quantization | None = None,
    lora: LoraConfig | None = None,
    dtype: Any = "auto",
    trust_remote_code: bool = False,
    device_map: Any = None,
    adapter: str | Path | None = None,
    gradient_checkpointing: bool = False,
    token: str | bool | None = None,
    revision: str | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load the model to train with JOSH and its tokenizer.

    Args:
        model_name_or_path: Hub id or local directory of a causal LM.
        quantization: ``None``, ``"4bit"`` (QLoRA, see :func:`bnb_config`) or ``"8bit"``.
            Quantised bases are prepared with ``peft.prepare_model_for_kbit_training`` (norms
            in fp32, inputs that require grad) and must be trained through an adapter.
        lora: a ``peft.LoraConfig`` to add a new adapter; its ``target_modules`` default
            (``None``) to every projection layer the model has (``LORA_TARGET_MODULES``).
        dtype: passed to ``from_pretrained`` (``"auto"``: the checkpoint's dtype).
        trust_remote_code: run code from the model repo. Off unless the user turns it on.
        device_map: passed to ``from_pretrained`` (e.g. ``"auto"``, ``{"": 0}``); ``None``
            keeps the model where ``from_pretrained`` puts it (CPU), as the trainers expect.
        adapter: a saved PEFT adapter (Hub id or directory) to continue training; it loads
            trainable. Exclusive with ``lora``.
        gradient_checkpointing: forwarded to ``prepare_model_for_kbit_training`` for quantised
            bases (otherwise leave it to the trainer's ``gradient_checkpointing`` argument).
        token: Hub token for gated/private repos; ``None`` lets ``huggingface_hub`` use
            ``HF_TOKEN`` or the saved login. Never logged.
        revision: the Hub revision to load.

    Returns:
        ``(model, tokenizer)``; ``model`` is a ``peft.PeftModel`` when ``lora`` or ``adapter``
        is given. The tokenizer gets ``pad_token = eos_token`` when it has no pad token.
        For KTO/DPO pass this model with ``ref_model=None``: see the module docstring.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if lora is not None and adapter is not None:
        raise ValueError("pass either `lora` (a new adapter) or `adapter` (a saved one), not both")
    hub_kwargs: dict[str, Any] = {"trust_remote_code": bool(trust_remote_code)}
    if token is not None:
        hub_kwargs["token"] = token
    if revision is not None:
        hub_kwargs["revision"] = revision

    model_kwargs: dict[str, Any] = {"dtype": dtype, **hub_kwargs}
    if device_map is not None:
        model_kwargs["device_map"] = device_map
    if quantization is not None:
        model_kwargs["quantization_config"] = bnb_config(quantization)
    logger.info("loading %s (quantization=%s, dtype=%s)", model_name_or_path, quantization, dtype)
    model = AutoModelForCausalLM.from_pretrained(str(model_name_or_path), **model_kwargs)
    tokenizer = AutoTokenizer.from_pretrained(str(model_name_or_path), **hub_kwargs)
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        # Batched training pads; the eos token is the usual stand-in (TRL does the same).
        tokenizer.pad_token = tokenizer.eos_token

    if quantization is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
        if lora is None and adapter is None:
            logger.warning("a %s-quantised model can only be trained through an adapter: pass `lora=`", quantization)

    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter), is_trainable=True,
                                          **({"token": token} if token is not None else {}))
    elif lora is not None:
        from peft import get_peft_model

        model = get_peft_model(model, _with_targets(lora, model))
    return model, tokenizer


def _with_targets(lora: LoraConfig, model: Any) -> LoraConfig:
    """A copy of ``lora`` whose unset ``target_modules`` are the projections ``model`` has."""
    import copy

    lora = copy.deepcopy(lora)  # the caller's config may be reused for another model
    if lora.target_modules is None or (
        not isinstance(lora.target_modules, str) and set(lora.target_modules) == set(LORA_TARGET_MODULES)
    ):
        found = lora_target_modules(model)
        # "all-linear" is PEFT's own fallback (every linear layer but the output head).
        lora.target_modules = set(found) if found else "all-linear"
    if lora.task_type is None:
        lora.task_type = "CAUSAL_LM"
    return lora
