"""JOSH trainers end to end on a tiny random model, ToolWOZ tasks and the agenda user, on CPU.

A random model never reaches a goal, so a harvest of it alone would be empty. The policy is
therefore wrapped in :class:`Nudge`: it generates for every request as usual (so the harvest
really runs the model being trained), and then, for every FIRST child (odd node id, recovered
from the request's seed), its ReAct text is replaced by the task's next goal call (and, after
the result, a SPEAK). Every step then collapses on the first child, the second child (the
model's own turn, from the same prompt) is the juxtaposed failure, and a task whose goals are
all met by the last step is an SFT example: every method gets a known, non-empty dataset.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from josh_hf.agents.react import APIRETURN, COMMAND_END
from josh_hf.agents.turn import stable_seed
from josh_hf.backends.base import Backend, GenerationOutput
from josh_hf.josh import node_seed, read_trees
from josh_hf.trainer import (
    JOSHDPOConfig,
    JOSHDPOTrainer,
    JOSHKTOConfig,
    JOSHKTOTrainer,
    JOSHSFTConfig,
    JOSHSFTTrainer,
    round_schedule,
)

# Two search goals each (searches never fail, so golden conversations have no tool error).
TASKS = ["MUL0032", "MUL0276", "MUL0401"]
SEED = 7
SPEAK = f"SPEAK Done. Anything else? {COMMAND_END}"
# ReAct without the tool list: the tiny model's byte-level tokens would make the full prompt
# (every tool schema) thousands of tokens long, and CPU training steps slow.
SYSTEM = "You are a booking agent. Reply with APICALL or SPEAK commands, each closed by <COMMAND_END>."


@pytest.fixture(scope="module")
def toolwoz():
    from josh_hf.toolwoz import ToolWOZ

    return ToolWOZ.load(None)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    from josh_hf.testing.templates import TRAINING_CHAT_TEMPLATE

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.chat_template = TRAINING_CHAT_TEMPLATE  # renders identically, with {% generation %} markers
    return tok


class Nudge(Backend):
    """The real policy backend, with the goal call written into first children's turns (see the
    module docstring). Records whether the model was in eval mode without gradients each call."""

    name = "nudge"

    def __init__(self, inner: Backend, toolwoz, task_ids: list[str], seed: int):
        self.inner, self.toolwoz = inner, toolwoz
        self.modes: list[tuple[bool, bool]] = []
        # generation seed -> (task, node id): JOSH seeds each node with node_seed(seed, task, id)
        # and each generation with stable_seed(that, generations so far on the path).
        self.where = {stable_seed(node_seed(seed, t, n), g): (t, n) for t in task_ids for n in range(40) for g in range(40)}

    def generate(self, requests):
        model = self.inner.model
        model = model.get_base_model() if hasattr(model, "get_base_model") else model  # PeftModel.generate skips its forward
        hook = model.register_forward_pre_hook(
            lambda m, a: self.modes.append((m.training, torch.is_grad_enabled())))
        try:
            outputs = self.inner.generate(requests)
        finally:
            hook.remove()
        for i, request in enumerate(requests):
            task_node = self.where.get(request.sampling.seed)
            if task_node is None or task_node[1] % 2 == 0:
                continue
            last = request.messages[-1]
            if last["content"].startswith(APIRETURN):  # the goal call's result: close the turn
                outputs[i] = GenerationOutput(text=SPEAK, raw=SPEAK)
            elif last["role"] == "user" and not last["content"].startswith("ERROR"):  # a new turn
                goals = self.toolwoz.task(task_node[0]).goal_calls
                made = sum("APICALL" in m["content"] for m in request.messages if m["role"] == "assistant")
                goal = goals[min(made, len(goals) - 1)]
                text = f"APICALL {json.dumps({'name': goal.name, 'parameters': dict(goal.arguments)})} {COMMAND_END}"
                outputs[i] = GenerationOutput(text=text, raw=text)
        return outputs


def nudged(cls):
    """``cls`` whose harvest backend is the policy wrapped in :class:`Nudge`."""

    class Nudged(cls):
        def josh_backend(self):
            self.nudge = Nudge(super().josh_backend(), self.toolwoz, TASKS, self.args.seed)
            self.nudges = [*getattr(self, "nudges", []), self.nudge]
            return self.nudge

    Nudged.__name__ = cls.__name__
    return Nudged


def settings(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    base = dict(  # noqa: C408 - keyword form reads like the YAML configs
        output_dir=str(tmp_path), use_cpu=True, report_to="none", seed=SEED, bf16=False, gradient_checkpointing=False,
        josh_rounds=2, josh_tasks_per_round=2, josh_task_ids=TASKS, josh_beam_size=2, josh_max_steps=2,
        josh_agent_format="react", josh_system_prompt=SYSTEM, josh_max_new_tokens=16, max_steps=2, per_device_train_batch_size=2,
        learning_rate=1e-3, warmup_steps=0, logging_steps=1, save_strategy="steps", save_steps=1000,
        lora_r=4, lora_alpha=8, lora_target_modules=["q_proj", "v_proj"], max_length=None, dataloader_num_workers=0,
    )
    return {**base, **overrides}


def make(cls, config_cls, tmp_path, tiny_model_dir, tokenizer, toolwoz, **overrides):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    return nudged(cls)(model, args=config_cls(**settings(tmp_path, **overrides)), processing_class=tokenizer,
                       toolwoz=toolwoz)


def lora(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters() if "lora_" in k and ".default." in k}


def josh_logs(trainer) -> list[dict[str, Any]]:
    return [e for e in trainer.josh_log_history if "josh/round" in e]


# -- the three trainers, two rounds each --------------------------------------------------------

METHODS = [
    pytest.param(JOSHSFTTrainer, JOSHSFTConfig, "sft", id="sft"),
    pytest.param(JOSHKTOTrainer, JOSHKTOConfig, "kto", id="kto"),
    pytest.param(JOSHDPOTrainer, JOSHDPOConfig, "dpo", id="dpo"),
]


@pytest.mark.parametrize(("cls", "config_cls", "method"), METHODS)
def test_two_rounds_end_to_end(cls, config_cls, method, tmp_path, tiny_model_dir, tokenizer, toolwoz):
    from josh_hf.josh.harvest import harvest_counts

    evaluate = method == "kto"  # one trainer also evaluates between rounds (each costs a few conversations)
    trainer = make(cls, config_cls, tmp_path, tiny_model_dir, tokenizer, toolwoz,
                   josh_eval_tasks=1 if evaluate else 0, josh_eval_before=evaluate,
                   josh_eval_max_visible_messages=4)
    before = lora(trainer.model)
    assert before and all(float(v.abs().sum()) == 0 for k, v in before.items() if "lora_B" in k)
    trainer.train()
    after = lora(trainer.model)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert any("lora_B" in k for k in changed), "the adapter did not train"

    schedule = round_schedule(TASKS, 2, 2, SEED)
    logs = josh_logs(trainer)
    assert [e["josh/round"] for e in logs] == [1, 2]
    for r, entry in enumerate(logs, 1):
        folder = tmp_path / f"round-{r}"
        records = read_trees(folder / "trees.jsonl")
        # The round searched exactly its scheduled tasks with this run's settings.
        assert [t.task_id for t in records] == schedule[r - 1]
        assert all(t.config["beam_size"] == 2 and t.config["max_steps"] == 2 and t.seed == SEED for t in records)
        counts = harvest_counts([t.to_dict() for t in records])
        expected = {"sft": counts["sft"], "kto": counts["kto_desirable"] + counts["kto_undesirable"],
                    "dpo": counts["dpo"]}[method]
        assert entry["josh/examples"] == expected > 0
        assert entry["josh/tasks"] == 2
        assert entry["josh/reward"] == pytest.approx(sum(t.reward for t in records) / 2)
        assert entry["josh/success"] == pytest.approx(sum(t.success for t in records) / 2)
        assert entry["josh/turns_per_second"] > 0 and entry["josh/trained"] == 1
        # The round ended with a checkpoint that says so, beside the harvest.
        state = json.loads(next(folder.glob("checkpoint-*/josh_state.json")).read_text())
        assert state["round"] == r and state["complete"] and state["tasks"] == schedule[r - 1]
        if evaluate:
            assert 0 <= entry["josh/eval_reward"] <= 1 and "josh/eval_success" in entry
    # Every harvest generation ran the policy in eval mode without gradients.
    modes = [m for n in trainer.nudges for m in n.modes]
    assert modes and set(modes) == {(False, False)}
    assert trainer.model.training  # ...and training mode came back
    if evaluate:
        info = trainer.josh_card_info()
        assert info["eval_before"] is not None and info["eval_after"]["average_reward"] == logs[-1]["josh/eval_reward"]
        assert info["method"] == "kto" and info["trainer_class"] == "JOSHKTOTrainer"
        assert info["harvest"]["examples"] == {"kto": sum(e["josh/examples"] for e in logs)}
        assert [r["josh_reward"] for r in info["rounds"]] == [e["josh/reward"] for e in logs]
        assert info["config"]["beam_size"] == 2 and info["training"]["lora_r"] == 4
        assert (tmp_path / "README.md").is_file()  # the JOSH card, written with each checkpoint


def test_resume_after_round_one_repeats_the_uninterrupted_run(tmp_path, tiny_model_dir, tokenizer, toolwoz):
    full = make(JOSHKTOTrainer, JOSHKTOConfig, tmp_path / "full", tiny_model_dir, tokenizer, toolwoz)
    full.train()

    class Crash(RuntimeError):
        pass

    crashing = make(JOSHKTOTrainer, JOSHKTOConfig, tmp_path / "cut", tiny_model_dir, tokenizer, toolwoz)
    harvest = crashing.josh_harvest

    def harvest_then_crash(r, tasks):
        if r == 2:
            raise Crash("killed before round 2")
        return harvest(r, tasks)

    crashing.josh_harvest = harvest_then_crash
    with pytest.raises(Crash):
        crashing.train()
    assert not (tmp_path / "cut" / "round-2").exists()

    resumed = make(JOSHKTOTrainer, JOSHKTOConfig, tmp_path / "cut", tiny_model_dir, tokenizer, toolwoz)
    resumed.train(resume_from_checkpoint=True)
    # Round 2 only, on the same tasks, harvested by the same round-1 policy: the same trees...
    assert [e["josh/round"] for e in josh_logs(resumed)] == [2]
    a, b = (read_trees(tmp_path / d / "round-2" / "trees.jsonl") for d in ("full", "cut"))
    assert [t.task_id for t in a] == [t.task_id for t in b] == round_schedule(TASKS, 2, 2, SEED)[1]
    assert [t.to_dict() for t in a] == [t.to_dict() for t in b]
    # ...the same figures and the same final adapter.
    timing = ("josh/harvest_seconds", "josh/turns_per_second")
    assert {k: v for k, v in josh_logs(resumed)[0].items() if k not in timing} == \
        {k: v for k, v in josh_logs(full)[1].items() if k not in timing}
    wa, wb = lora(full.model), lora(resumed.model)
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)
    assert [h["round"] for h in resumed.josh_card_info()["rounds"]] == [1, 2]


def test_offline_training_on_harvest_files(tmp_path, tiny_model_dir, tokenizer, toolwoz):
    # Trees written earlier (here: round 1 of a JOSH run; `josh-hf harvest` writes the same format).
    first = make(JOSHDPOTrainer, JOSHDPOConfig, tmp_path / "online", tiny_model_dir, tokenizer, toolwoz, josh_rounds=1)
    first.train()
    trees = tmp_path / "online" / "round-1" / "trees.jsonl"
    for cls, config_cls in ((JOSHSFTTrainer, JOSHSFTConfig), (JOSHKTOTrainer, JOSHKTOConfig), (JOSHDPOTrainer, JOSHDPOConfig)):
        out = tmp_path / f"offline-{cls.__name__}"
        trainer = make(cls, config_cls, out, tiny_model_dir, tokenizer, toolwoz, harvest_files=[str(trees)],
                       save_strategy="no")
        before = lora(trainer.model)
        trainer.train()
        after = lora(trainer.model)
        assert any(not torch.equal(before[k], after[k]) for k in before if "lora_B" in k)
        assert not hasattr(trainer, "nudge")  # nothing was harvested
        assert trainer.josh_card_info()["rounds"][0]["tasks"] == 2


def test_bad_settings_fail_before_any_model_is_loaded(tmp_path):
    cases = {
        "josh_beam_size": 0, "josh_temperature": 0.0, "josh_agent_format": "xml", "josh_task_split": "test",
        "user_simulator": "llm-goal", "quantization": "3bit", "josh_rounds": -1, "hub_token": "hf_secret",
    }
    for name, value in cases.items():
        with pytest.raises(ValueError, match=name.split("_")[0] if name == "user_simulator" else name) as err:
            JOSHKTOConfig(output_dir=str(tmp_path), use_cpu=True, **{name: value})
        assert "hf_secret" not in str(err.value)


def test_defaults_are_the_references(tmp_path):
    kto = JOSHKTOConfig(output_dir=str(tmp_path), use_cpu=True)
    assert (kto.beta, kto.desirable_weight, kto.undesirable_weight, kto.learning_rate) == (0.1, 1.0, 2.71, 5e-7)
    lora_config = kto.lora_config()
    assert (lora_config.r, lora_config.lora_alpha, lora_config.lora_dropout) == (64, 64, 0.05)
    assert set(lora_config.target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert (kto.josh_beam_size, kto.josh_max_steps, kto.josh_agent_format, kto.trust_remote_code) == (8, 15, "react", False)
    sft = JOSHSFTConfig(output_dir=str(tmp_path), use_cpu=True)
    assert sft.assistant_only_loss and sft.learning_rate == 2e-5 and sft.weight_decay == 0.01


def test_round_schedule_never_repeats_within_a_pass():
    pool = [f"T{i}" for i in range(7)]
    rounds = round_schedule(pool, 5, 3, 1)
    assert [len(r) for r in rounds] == [3] * 5 and all(len(set(r)) == 3 for r in rounds)
    first_pass = [t for r in rounds for t in r][:7]
    assert sorted(first_pass) == pool  # every task once before any repeats
    assert rounds == round_schedule(pool, 5, 3, 1) and rounds != round_schedule(pool, 5, 3, 2)


def test_task_pool_falls_back_to_validation_without_train(tmp_path, tiny_model_dir, tokenizer, toolwoz, caplog):
    trainer = make(JOSHKTOTrainer, JOSHKTOConfig, tmp_path, tiny_model_dir, tokenizer, toolwoz, josh_task_ids=None)
    with caplog.at_level("WARNING"):
        pool = trainer.josh_task_pool()
    assert pool == [t.id for t in toolwoz.split("validation")] and "no train split" in caplog.text


def test_qlora_loading_and_harvest_on_cpu(tmp_path, tiny_model_dir, tokenizer, toolwoz):
    """A 4-bit NF4 base with a LoRA adapter builds and harvests on CPU. (Its optimisation step is
    not run here: bitsandbytes 0.50's CPU 4-bit matmul fails in backward with an in-place error.)"""
    pytest.importorskip("bitsandbytes")
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.bfloat16)
    try:
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, quantization_config=quant)
    except Exception as e:  # noqa: BLE001 - bitsandbytes without a CPU 4-bit backend
        pytest.skip(f"4-bit loading unavailable here: {e}")
    args = JOSHSFTConfig(**settings(tmp_path, josh_rounds=1, quantization="4bit", max_steps=1))
    trainer = nudged(JOSHSFTTrainer)(model, args=args, processing_class=tokenizer, toolwoz=toolwoz)
    assert trainer.model.get_base_model().is_loaded_in_4bit and lora(trainer.model)
    records, figures = trainer.josh_harvest(1, round_schedule(TASKS, 1, 2, SEED)[0])
    assert [r["task_id"] for r in records] == round_schedule(TASKS, 1, 2, SEED)[0] and figures["tasks"] == 2
    assert len(trainer.josh_dataset(records)) > 0
    assert {m for m in trainer.nudge.modes} == {(False, False)}


@pytest.mark.parametrize("method", ["sft", "kto", "dpo"])
def test_cli_parses_each_example_config(method):
    from trl import TrlParser

    from josh_hf.commands.train import TrainScriptArguments, peek_method
    from josh_hf.trainer import CONFIG_CLASSES

    path = Path(__file__).parent.parent / "examples" / f"train_{method}.yaml"
    assert peek_method(["--config", str(path)]) == method
    script, config = TrlParser((TrainScriptArguments, CONFIG_CLASSES[method])).parse_args_and_config(
        ["--config", str(path), "--use_cpu", "true", "--bf16", "false", "--josh_rounds", "3"])
    assert script.method == method and config.josh_rounds == 3 and config.lora_r == 64
    assert isinstance(config, CONFIG_CLASSES[method]) and config.hub_token is None


def test_cli_refuses_a_bad_field_before_loading(tmp_path, capsys):
    from josh_hf.cli import main

    code = main(["train", "--method", "dpo", "--model_name_or_path", str(tmp_path / "missing"), "--output_dir",
                 str(tmp_path / "out"), "--use_cpu", "true", "--bf16", "false", "--josh_agent_format", "xml"])
    assert code == 2 and "josh_agent_format" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
