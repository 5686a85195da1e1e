"""Policy loading (josh_hf.trainer.models): LoRA targets, QLoRA on CPU, trust_remote_code,
and the KTO/DPO reference model under PEFT (no second copy of the weights)."""

from __future__ import annotations

import inspect
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from josh_hf.trainer.models import (
    LORA_TARGET_MODULES,
    REFERENCE_ADAPTER_NAME,
    bnb_config,
    count_parameters,
    default_lora_config,
    is_quantized,
    load_policy,
    lora_target_modules,
    reference_lora_config,
)

# The tiny model: hidden 64, MLP 128, 4 heads of 16, 2 KV heads (K/V width 32), 2 layers.
# LoRA parameters of one layer at rank r: A (in x r) + B (r x out) for each projection.
_LORA_PER_LAYER_PER_RANK = (64 + 64) + (64 + 32) * 2 + (64 + 64) + (64 + 128) * 2 + (128 + 64)  # q, k+v, o, gate+up, down


def _lora_params(r: int, layers: int = 2) -> int:
    return _LORA_PER_LAYER_PER_RANK * r * layers


def _bnb_cpu_4bit_works() -> bool:
    """Whether this bitsandbytes build quantises to 4 bit on CPU (it does from 0.46 on)."""
    try:
        import bitsandbytes.functional as F

        F.quantize_4bit(torch.randn(64, 64), quant_type="nf4")
    except Exception:  # noqa: BLE001 - any failure means: not on this machine
        return False
    return True


def test_lora_targets_every_projection_layer(tiny_model_dir: Path) -> None:
    model, tokenizer = load_policy(tiny_model_dir, lora=default_lora_config(r=8))
    assert set(model.peft_config["default"].target_modules) == set(LORA_TARGET_MODULES)
    wrapped = sorted({n.split(".")[-1] for n, m in model.named_modules() if hasattr(m, "lora_A") and n})
    assert wrapped == sorted(LORA_TARGET_MODULES)
    total, trainable = count_parameters(model)
    assert trainable == _lora_params(8) == 16384
    base_total, _ = count_parameters(model.get_base_model())
    assert total == base_total  # the base model's count includes its LoRA layers: one model in memory
    # Only LoRA weights train; lm_head/embeddings stay frozen.
    assert all(("lora_" in n) == p.requires_grad for n, p in model.named_parameters())
    assert tokenizer.pad_token == "<|endoftext|>"  # the tiny tokenizer's own pad token is kept


def test_reference_lora_settings() -> None:
    config = reference_lora_config()
    assert (config.r, config.lora_alpha, config.lora_dropout) == (64, 64, 0.05)
    assert set(config.target_modules) == set(LORA_TARGET_MODULES)
    assert config.task_type == "CAUSAL_LM" and config.bias == "none"
    assert reference_lora_config(r=8).r == 8


def test_lora_targets_fall_back_to_all_linear_without_projection_names() -> None:
    from peft import get_peft_model
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64, n_positions=32))
    assert lora_target_modules(gpt2) == []  # c_attn/c_proj/c_fc are Conv1D, not *_proj Linear

    from josh_hf.trainer.models import _with_targets

    config = _with_targets(default_lora_config(r=2), gpt2)
    assert config.target_modules == "all-linear"
    peft_model = get_peft_model(gpt2, config)
    assert sorted({n.split(".")[-1] for n, m in peft_model.named_modules() if hasattr(m, "lora_A")}) == [
        "c_attn", "c_fc", "c_proj"
    ]


def test_explicit_targets_are_kept(tiny_model_dir: Path) -> None:
    model, _ = load_policy(tiny_model_dir, lora=default_lora_config(r=4, target_modules=["q_proj", "v_proj"]))
    assert set(model.peft_config["default"].target_modules) == {"q_proj", "v_proj"}
    assert count_parameters(model)[1] == ((64 + 64) + (64 + 32)) * 4 * 2


def test_lora_and_adapter_are_exclusive(tiny_model_dir: Path) -> None:
    with pytest.raises(ValueError, match="either `lora`"):
        load_policy(tiny_model_dir, lora=default_lora_config(), adapter="someone/adapter")


def test_saved_adapter_loads_trainable(tiny_model_dir: Path, tmp_path: Path) -> None:
    model, _ = load_policy(tiny_model_dir, lora=default_lora_config(r=4))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.fill_(0.01)
    model.save_pretrained(tmp_path / "adapter")
    again, _ = load_policy(tiny_model_dir, adapter=tmp_path / "adapter")
    b = {n: p for n, p in again.named_parameters() if "lora_B" in n}
    assert b and all(torch.all(p == 0.01) and p.requires_grad for p in b.values())


@pytest.mark.skipif(not _bnb_cpu_4bit_works(), reason="this bitsandbytes build cannot quantise on CPU")
@pytest.mark.parametrize("quantization", ["4bit", "8bit"])
def test_qlora_on_cpu_forward_backward(tiny_model_dir: Path, quantization: str) -> None:
    import bitsandbytes as bnb

    model, tokenizer = load_policy(tiny_model_dir, quantization=quantization, lora=default_lora_config(r=4))
    layer_type = bnb.nn.Linear4bit if quantization == "4bit" else bnb.nn.Linear8bitLt
    base_layers = {n: m.base_layer for n, m in model.named_modules() if n.endswith(tuple(LORA_TARGET_MODULES))
                   and hasattr(m, "base_layer")}
    assert len(base_layers) == 14 and all(isinstance(m, layer_type) for m in base_layers.values())
    if quantization == "4bit":
        q = model.get_base_model().config.quantization_config
        assert (q.bnb_4bit_quant_type, q.bnb_4bit_use_double_quant, q.bnb_4bit_compute_dtype) == (
            "nf4", True, torch.bfloat16)
        weight = next(iter(base_layers.values())).weight
        assert weight.quant_state.quant_type == "nf4" and weight.dtype == torch.uint8
    base = model.get_base_model()
    assert is_quantized(model) and is_quantized(base)
    assert getattr(base, f"is_loaded_in_{quantization}") is True
    assert count_parameters(model)[1] == _lora_params(4)
    # prepare_model_for_kbit_training keeps the norms in fp32 and freezes every base weight.
    assert all(p.dtype == torch.float32 for n, p in model.named_parameters() if "norm" in n)
    assert all(not p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)

    batch = tokenizer(["I need a train to cambridge.", "Book a table for 2."], return_tensors="pt", padding=True)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    loss = model(**batch, labels=labels).loss
    assert torch.isfinite(loss)
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert grads and all(g is not None for g in grads.values())
    # B starts at zero, so only B gets a gradient on the first step (A's is B^T-scaled: zero).
    assert all(g.abs().sum() > 0 for n, g in grads.items() if "lora_B" in n)
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0).step()
    with torch.no_grad():
        assert model(**batch, labels=labels).loss.item() != pytest.approx(loss.item(), abs=1e-6)


def test_bnb_config_rejects_unknown_modes() -> None:
    with pytest.raises(ValueError, match="4bit"):
        bnb_config("2bit")  # type: ignore[arg-type]


def test_trust_remote_code_is_off_by_default(tiny_model_dir: Path, tmp_path: Path) -> None:
    assert inspect.signature(load_policy).parameters["trust_remote_code"].default is False
    # A checkpoint whose config points at repository code that would leave a marker file if run.
    folder = tmp_path / "custom"
    shutil.copytree(tiny_model_dir, folder)
    marker = tmp_path / "remote_code_ran"
    (folder / "configuration_custom.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
        "from transformers import Qwen2Config\n\nclass CustomConfig(Qwen2Config):\n    model_type = 'custom'\n"
    )
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "configuration_custom.CustomConfig"}
    config["model_type"] = "custom"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="trust_remote_code"):
        load_policy(folder)
    assert not marker.exists()


# -- reference model for KTO / DPO under PEFT ----------------------------------------------


def _conversation(i: int) -> dict[str, Any]:
    return {
        "prompt": [{"role": "user", "content": f"I need a train to cambridge on day {i}."}],
        "good": [{"role": "assistant", "content": "Sure, what time would you like to leave?"}],
        "bad": [{"role": "assistant", "content": "ERROR: INVALID API CALL!"}],
    }


def _kto_dataset():
    from datasets import Dataset

    rows = []
    for i in range(4):
        c = _conversation(i)
        rows.append({"prompt": c["prompt"], "completion": c["good"] if i % 2 else c["bad"], "label": bool(i % 2)})
    return Dataset.from_list(rows)


def _dpo_dataset():
    from datasets import Dataset

    return Dataset.from_list([{"prompt": c["prompt"], "chosen": c["good"], "rejected": c["bad"]}
                              for c in map(_conversation, range(4))])


def _trainer(method: str, model: Any, tokenizer: Any, tmp_path: Path, peft_config: Any = None) -> Any:
    from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer

    common = {"output_dir": str(tmp_path), "max_steps": 1, "per_device_train_batch_size": 2, "report_to": "none",
              "use_cpu": True, "save_strategy": "no", "learning_rate": 1e-2, "max_length": None}
    if method == "kto":
        return KTOTrainer(model=model, ref_model=None, args=KTOConfig(**common), train_dataset=_kto_dataset(),
                          processing_class=tokenizer, peft_config=peft_config)
    return DPOTrainer(model=model, ref_model=None, args=DPOConfig(**common), train_dataset=_dpo_dataset(),
                      processing_class=tokenizer, peft_config=peft_config)


@pytest.mark.parametrize("method", ["kto", "dpo"])
def test_reference_is_the_policy_with_its_adapter_frozen_not_a_copy(
    method: str, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """load_policy's PeftModel goes to the trainer with ref_model=None: TRL keeps no reference
    model, adds a frozen "ref" copy of the adapter (adapter-sized), and shares the base weights."""
    model, tokenizer = load_policy(tiny_model_dir, lora=default_lora_config(r=4))
    base_total = count_parameters(model.get_base_model())[0] - _lora_params(4)  # the bare model
    base_ptrs = {n: p.data_ptr() for n, p in model.named_parameters() if "lora_" not in n}

    trainer = _trainer(method, model, tokenizer, tmp_path)
    assert trainer.ref_model is None
    assert set(trainer.model.peft_config) == {"default", REFERENCE_ADAPTER_NAME}
    total, trainable = count_parameters(trainer.model)
    assert trainable == _lora_params(4)
    assert total == base_total + 2 * _lora_params(4)  # base once + adapter + its frozen copy
    assert total < 1.5 * base_total  # not doubled
    # The base weights are the very tensors load_policy loaded.
    assert {n: p.data_ptr() for n, p in trainer.model.named_parameters() if "lora_" not in n} == base_ptrs

    trainer.train()
    assert trainer.state.global_step == 1
    lora_b = {n: p for n, p in trainer.model.named_parameters() if "lora_B" in n}
    # The trained adapter moved; the reference copy is still the initial (zero) B.
    assert any(p.abs().sum() > 0 for n, p in lora_b.items() if ".default." in n)
    assert all(torch.all(p == 0) for n, p in lora_b.items() if f".{REFERENCE_ADAPTER_NAME}." in n)


@pytest.mark.parametrize("method", ["kto", "dpo"])
def test_reference_with_peft_config_is_the_base_with_the_adapter_disabled(
    method: str, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """The other TRL route: base model + peft_config. TRL wraps it; no reference copy at all."""
    model, tokenizer = load_policy(tiny_model_dir)
    base_total = count_parameters(model)[0]
    trainer = _trainer(method, model, tokenizer, tmp_path, peft_config=default_lora_config(r=4))
    assert trainer.ref_model is None
    assert set(trainer.model.peft_config) == {"default"}
    assert count_parameters(trainer.model)[0] == base_total + _lora_params(4)
