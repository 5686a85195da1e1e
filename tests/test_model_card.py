"""Model cards of JOSH-trained models (josh_hf.trainer.card): Hub metadata, sections, degradation."""

from __future__ import annotations

import copy
import importlib.metadata
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from huggingface_hub import ModelCard

from josh_hf.trainer.card import MODEL_CARD_TEMPLATE, build_card_data, model_cards_dir, render_model_card

REPO_ROOT = Path(__file__).resolve().parents[1]

INFO: dict[str, Any] = {
    "base_model": "Qwen/Qwen2.5-7B-Instruct",
    "method": "kto",
    "trainer_class": "KTOTrainer",
    "config": {"beam_size": 8, "max_steps": 30, "rounds": 2, "tasks_per_round": 100, "agent_format": "native",
               "sampling": {"temperature": 1.0, "top_p": 0.95}, "user_simulator": "agenda", "credit": "turn"},
    "training": {"lr": 1e-05, "beta": 0.1, "epochs": 1, "lora_r": 64, "lora_alpha": 64, "lora_dropout": 0.05,
                 "quantization": "4bit"},
    "rounds": [
        {"round": 1, "josh_reward": 0.8125, "josh_success": 0.62, "examples": 512, "turns_per_second": 3.5,
         "eval_reward": 0.7031, "eval_success": 0.51},
        {"round": 2, "josh_reward": 0.875, "josh_success": 0.7, "examples": 640, "turns_per_second": 3.25},
    ],
    "harvest": {"tasks": 200, "examples": {"sft": 140, "kto": 1152, "dpo": 380}},
    "eval_before": {"average_reward": 0.6125, "success_rate": 0.4, "split": "test", "num_tasks": 450,
                    "user_simulator": "agenda"},
    "eval_after": {"average_reward": 0.7375, "success_rate": 0.5533, "split": "test", "num_tasks": 450,
                   "user_simulator": "agenda"},
    "dataset": "someone/toolwoz",
    "repo_id": "someone/qwen-josh-kto",
}


def _headings(text: str) -> list[str]:
    return re.findall(r"^#+ (.+)$", text, re.MULTILINE)


def _table(text: str, header: str) -> list[list[str]]:
    """The rows (cells) of the Markdown table whose header line starts with ``header``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]])
    return rows


def test_metadata_follows_hub_conventions() -> None:
    text = render_model_card(INFO)
    card = ModelCard(text)  # parses the YAML front matter into ModelCardData
    data = card.data
    assert data.library_name == "peft"
    assert data.base_model == "Qwen/Qwen2.5-7B-Instruct"
    assert data.pipeline_tag == "text-generation"
    assert data.datasets == ["someone/toolwoz"]
    assert data.tags == ["trl", "josh", "kto", "toolwoz", "tool-calling", "qlora"]
    assert data.model_name == "qwen-josh-kto"
    # The raw YAML too: the Hub reads "model-index", not the Python attribute names.
    front = yaml.safe_load(text.split("---\n")[1])
    assert front["library_name"] == "peft" and front["base_model"] == "Qwen/Qwen2.5-7B-Instruct"
    (entry,) = front["model-index"]
    (result,) = entry["results"]
    assert entry["name"] == "qwen-josh-kto"
    assert result["task"] == {"type": "text-generation", "name": "Tool-calling dialogue"}
    assert result["dataset"] == {"name": "ToolWOZ", "type": "someone/toolwoz", "split": "test",
                                 "args": {"user_simulator": "agenda", "num_tasks": 450}}
    assert result["metrics"] == [
        {"type": "average_reward", "value": 0.7375, "name": "Average reward (agenda user simulator)"},
        {"type": "success_rate", "value": 0.5533, "name": "Success rate (agenda user simulator)"},
    ]
    # ... and huggingface_hub reads them back as EvalResults with the given numbers.
    values = {r.metric_type: r.metric_value for r in data.eval_results}
    assert values == {"average_reward": 0.7375, "success_rate": 0.5533}
    assert {r.dataset_split for r in data.eval_results} == {"test"}


def test_body_sections_and_tables() -> None:
    text = render_model_card(INFO)
    assert _headings(text) == ["someone/qwen-josh-kto (JOSH KTO)", "How it was made", "Harvest", "Rounds",
                               "ToolWOZ scores", "How to load it", "Framework versions", "Citation"]
    settings = dict(_table(text, "| setting |"))
    assert settings["base model"] == "Qwen/Qwen2.5-7B-Instruct"
    assert settings["TRL trainer"] == "KTOTrainer"
    assert settings["beam size"] == "8" and settings["max JOSH steps"] == "30"
    assert settings["rounds"] == "2" and settings["tasks per round"] == "100"
    assert settings["user simulator (JOSH search)"] == "agenda"
    assert settings["agent sampling"] == '{"temperature": 1.0, "top_p": 0.95}'
    assert settings["learning rate"] == "1e-05" and settings["beta"] == "0.1"
    assert (settings["LoRA r"], settings["LoRA alpha"], settings["LoRA dropout"]) == ("64", "64", "0.05")
    assert settings["quantization"] == "4bit"
    assert settings["config: credit"] == "turn"  # a setting the table has no row for is still recorded
    assert _table(text, "| | count |") == [["tasks searched", "200"], ["sft examples", "140"],
                                           ["kto examples", "1152"], ["dpo examples", "380"]]
    assert _table(text, "| round |") == [["1", "0.8125", "0.62", "512", "3.5", "0.7031", "0.51"],
                                        ["2", "0.875", "0.7", "640", "3.25", "n/a", "n/a"]]
    assert _table(text, "| model |") == [
        ["base model (before)", "test", "450", "agenda", "0.6125", "0.4"],
        ["this model (after)", "test", "450", "agenda", "0.7375", "0.5533"],
    ]
    assert "average reward of **0.7375** and a success rate of **0.5533** (base model: 0.6125 and 0.4)" in text
    # Framework versions are the installed ones, read at render time.
    for name, dist in (("transformers", "transformers"), ("TRL", "trl"), ("PEFT", "peft"), ("PyTorch", "torch"),
                       ("Datasets", "datasets"), ("josh-hf", "josh-hf"), ("bitsandbytes", "bitsandbytes")):
        assert f"- {name}: {importlib.metadata.version(dist)}\n" in text
    assert "PeftModel.from_pretrained(base, \"someone/qwen-josh-kto\")" in text
    assert "BitsAndBytesConfig(load_in_4bit=True" in text  # the QLoRA way to load it
    assert "josh-hf evaluate --model Qwen/Qwen2.5-7B-Instruct --adapter someone/qwen-josh-kto" in text
    assert "author  = {Lattimer, Barrett Martin and Gangal, Varun and McDonald, Ryan and Yang, Yi}" in text
    assert "arXiv:2409.04617" in text


def test_merged_model_card() -> None:
    info = {**copy.deepcopy(INFO), "merged": True, "training": {"lr": 2e-5, "lora_r": 16}}
    text = render_model_card(info)
    data = ModelCard(text).data
    assert data.library_name == "transformers"
    assert data.tags == ["trl", "josh", "kto", "toolwoz", "tool-calling", "lora", "merged"]
    assert 'AutoModelForCausalLM.from_pretrained("someone/qwen-josh-kto", dtype="auto")' in text
    assert "PeftModel" not in text and "BitsAndBytesConfig" not in text
    assert "bitsandbytes:" not in text  # not quantised: not listed
    assert "josh-hf evaluate --model someone/qwen-josh-kto --agent_format native --user agenda" in text


@pytest.mark.parametrize("method,trainer", [("sft", "SFTTrainer"), ("dpo", "DPOTrainer")])
def test_method_names_the_trainer(method: str, trainer: str) -> None:
    info = {k: v for k, v in copy.deepcopy(INFO).items() if k != "trainer_class"}
    info["method"] = method
    text = render_model_card(info)
    assert f"TRL's `{trainer}`" in text and ModelCard(text).data.tags[2] == method


def test_empty_info_degrades_gracefully() -> None:
    text = render_model_card({})
    data = ModelCard(text).data
    assert data.library_name == "peft" and data.eval_results is None and data.base_model is None
    assert "model-index" not in text and "model_name" not in text
    assert _headings(text) == ["JOSH-trained model", "How it was made", "ToolWOZ scores", "How to load it",
                               "Framework versions", "Citation"]
    assert "_No training settings were recorded._" in text and "_Not evaluated on ToolWOZ yet._" in text
    assert "n/a" not in text.split("## How it was made")[0]  # no half-empty summary sentence


def test_partial_information() -> None:
    info = {
        "base_model": "Qwen/Qwen2.5-0.5B-Instruct",
        "method": "dpo",
        "eval_before": {"average_reward": 0.5, "split": "test"},  # no success rate, no simulator
        "eval_after": {"average_reward": 0.625},  # nothing else known
        "config": {"user": "llm-guide"},  # the simulator under the search config's other key
        "dataset": "/data/toolwoz",  # a local build: not a Hub dataset id
    }
    text = render_model_card(info)
    data = ModelCard(text).data
    assert data.datasets is None
    (result,) = data.eval_results
    assert (result.metric_type, result.metric_value, result.dataset_type) == ("average_reward", 0.625, "toolwoz")
    assert result.dataset_split is None and result.dataset_args == {"user_simulator": "llm-guide"}
    assert result.metric_name == "Average reward (llm-guide user simulator)"
    assert _table(text, "| model |") == [
        ["base model (before)", "test", "n/a", "llm-guide", "0.5", "n/a"],
        ["this model (after)", "n/a", "n/a", "llm-guide", "0.625", "n/a"],
    ]
    assert "Harvest" not in _headings(text) and "Rounds" not in _headings(text)


def test_eval_before_alone_has_no_model_index() -> None:
    text = render_model_card({"eval_before": {"average_reward": 0.5, "success_rate": 0.25}})
    assert ModelCard(text).data.eval_results is None
    assert _table(text, "| model |") == [["base model (before)", "n/a", "n/a", "n/a", "0.5", "0.25"]]


def test_table_cells_escape_pipes_and_newlines() -> None:
    text = render_model_card({"config": {"agent_format": "react|native", "note": "two\nlines"}})
    settings = dict(_table(text, "| setting |"))
    assert settings["agent format"] == "react\\|native" and settings["config: note"] == "two lines"


def test_card_data_extra_tags_and_license() -> None:
    data = build_card_data({**INFO, "license": "apache-2.0", "tags": ["qwen2", "trl"]})
    assert data.license == "apache-2.0"
    assert data.tags[-1] == "qwen2" and data.tags.count("trl") == 1


def test_templates_come_from_model_cards(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A source checkout (or editable install) uses the repository's model_cards/ folder.
    # josh_hf/model_cards is a link to the top-level folder, so the wheel ships the templates
    assert model_cards_dir().resolve() == (REPO_ROOT / "model_cards").resolve()
    assert (REPO_ROOT / "model_cards" / MODEL_CARD_TEMPLATE).is_file()
    # An explicit folder wins (e.g. a customised template).
    (tmp_path / MODEL_CARD_TEMPLATE).write_text("---\n{{ card_data }}\n---\n# custom {{ repo_ref }}\n")
    monkeypatch.setenv("JOSH_HF_MODEL_CARDS", str(tmp_path))
    text = render_model_card({"repo_id": "a/b"})
    assert text.endswith("# custom a/b\n") and ModelCard(text).data.library_name == "peft"


def test_a_token_in_the_info_never_reaches_the_card(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    token = "hf_CardTestTokenNotReal0123456789"
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_TOKEN", token)
    text = render_model_card({"config": {"hub_token": token, "note": f"pushed with {token}"}})
    assert token not in text
    settings = dict(_table(text, "| setting |"))
    assert settings["config: hub_token"] == "hf_***" and settings["config: note"] == "pushed with hf_***"
