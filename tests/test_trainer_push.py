"""A JOSH trainer's ``push_to_hub``: adapter and card uploaded to a local stand-in of the Hub's
HTTP API (``LocalHubStandIn``; no real Hub), then loaded back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_harvest import records  # hand-built tree records with known SFT examples

from josh_hf.testing.hub_standin import LocalHubStandIn
from josh_hf.trainer import JOSHSFTConfig, JOSHSFTTrainer


@pytest.fixture()
def hub(tmp_path: Path):
    with LocalHubStandIn() as standin, standin.activate(cache_dir=tmp_path / "hub-cache"):
        yield standin


def test_trainer_push_to_hub_round_trip(tmp_path, tiny_model_dir, hub):
    from huggingface_hub import ModelCard
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from josh_hf.testing.templates import TRAINING_CHAT_TEMPLATE

    trees = tmp_path / "trees.jsonl"
    trees.write_text("".join(json.dumps(r) + "\n" for r in records()))
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.chat_template = TRAINING_CHAT_TEMPLATE
    args = JOSHSFTConfig(
        output_dir=str(tmp_path / "out"), use_cpu=True, report_to="none", bf16=False, gradient_checkpointing=False,
        harvest_files=[str(trees)], max_steps=1, per_device_train_batch_size=1, learning_rate=1e-3, warmup_steps=0,
        save_strategy="no", lora_r=4, lora_alpha=8, lora_target_modules=["q_proj", "v_proj"], max_length=None,
        hub_model_id="someone/josh-sft-tiny",
    )
    trainer = JOSHSFTTrainer(AutoModelForCausalLM.from_pretrained(tiny_model_dir), args=args,
                             processing_class=tokenizer)
    trainer.train()
    trainer.push_to_hub(token="hf_standin_token_123")

    card = ModelCard.load("someone/josh-sft-tiny")
    assert "josh" in card.data.tags and "sft" in card.data.tags
    assert card.data.library_name == "peft"
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    loaded = PeftModel.from_pretrained(base, "someone/josh-sft-tiny")
    pushed = {k: v for k, v in trainer.model.state_dict().items() if "lora_" in k}
    got = {k: v for k, v in loaded.state_dict().items() if "lora_" in k}
    assert pushed.keys() == got.keys() and pushed
    assert all(torch.equal(pushed[k].cpu(), got[k]) for k in pushed)
    assert "hf_standin_token_123" not in str(card)
