"""push_josh_model against a LOCAL STAND-IN of the Hub's HTTP API (josh_hf.testing.hub_standin):
real ``huggingface_hub``/``transformers``/``peft`` clients upload to it and load back from it.
No request leaves 127.0.0.1."""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from huggingface_hub import HfApi, ModelCard
from peft import PeftModel, get_peft_model_state_dict
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from josh_hf.testing.hub_standin import LocalHubStandIn
from josh_hf.trainer.card import render_model_card
from josh_hf.trainer.hub import known_secrets, push_josh_model, redact, save_for_hub
from josh_hf.trainer.models import default_lora_config, load_policy

# Token-shaped, so the pattern-based redaction would catch it too; never a real token.
TOKEN = "hf_StandInTokenNotReal0123456789abcdef"

CARD_INFO: dict[str, Any] = {
    "method": "kto",
    "config": {"beam_size": 4, "max_steps": 10, "rounds": 1, "agent_format": "native", "user_simulator": "agenda"},
    "training": {"lr": 1e-4, "beta": 0.1, "lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.0},
    "harvest": {"tasks": 3, "examples": {"sft": 2, "kto": 9, "dpo": 4}},
    "eval_before": {"average_reward": 0.25, "success_rate": 0.0, "split": "test", "num_tasks": 3,
                    "user_simulator": "agenda"},
    "eval_after": {"average_reward": 0.5, "success_rate": 1 / 3, "split": "test", "num_tasks": 3,
                   "user_simulator": "agenda"},
}


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[LocalHubStandIn]:
    """The stand-in, with huggingface_hub pointed at it and a private download cache."""
    with LocalHubStandIn() as standin, standin.activate(cache_dir=tmp_path / "hub-cache"):
        yield standin


def _adapter_model(tiny_model_dir: Path) -> tuple[Any, Any]:
    """A LoRA model whose adapter is not the identity (random B), so a lost adapter shows."""
    model, tokenizer = load_policy(tiny_model_dir, lora=default_lora_config(r=4, lora_alpha=8, lora_dropout=0.0))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    return model.eval(), tokenizer


def _logits(model: Any, tokenizer: Any) -> torch.Tensor:
    batch = tokenizer(["I need a train to cambridge on friday."], return_tensors="pt")
    with torch.no_grad():
        return model(**batch).logits


def test_push_adapter_and_load_it_back(hub: LocalHubStandIn, tiny_model_dir: Path) -> None:
    model, tokenizer = _adapter_model(tiny_model_dir)
    info = {**CARD_INFO, "base_model": str(tiny_model_dir)}
    commit = push_josh_model(model, tokenizer, "someone/tiny-josh", card_info=info, token=TOKEN, private=True)

    repo = hub.repo("someone/tiny-josh")
    assert repo.private and commit.oid == repo.sha and commit.commit_url.endswith(f"/someone/tiny-josh/commit/{repo.sha}")
    files = set(HfApi().list_repo_files("someone/tiny-josh"))
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md", "tokenizer.json"} <= files
    assert "model.safetensors" not in files  # the adapter only, not the base weights
    assert "adapter_model.safetensors" in repo.lfs  # went through the LFS batch API, as on the Hub
    writes = [r for r in hub.requests if r.method in ("POST", "PUT") and not r.path.startswith("/_standin_lfs/")]
    assert writes and all(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in writes)
    assert not hub.unhandled

    # Loaded back through the Hub client: the adapter weights are the pushed ones ...
    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), "someone/tiny-josh")
    pushed = get_peft_model_state_dict(model)
    again = get_peft_model_state_dict(loaded)
    assert pushed.keys() == again.keys() and len(pushed) == 28
    assert all(torch.equal(pushed[k], again[k]) for k in pushed)
    assert torch.equal(_logits(loaded.eval(), tokenizer), _logits(model, tokenizer))
    assert len(AutoTokenizer.from_pretrained("someone/tiny-josh")) == len(tokenizer)

    # ... and the card is the rendered one.
    card = ModelCard.load("someone/tiny-josh")
    expected = render_model_card({**info, "repo_id": "someone/tiny-josh", "merged": False})
    assert card.content == expected == repo.files["README.md"].decode()
    assert card.data.library_name == "peft" and card.data.base_model == str(tiny_model_dir)
    assert {r.metric_type: r.metric_value for r in card.data.eval_results} == {
        "average_reward": 0.5, "success_rate": 1 / 3}

    # The card's "how to load" snippet runs as written and gives the same model.
    snippet = re.search(r"## How to load it\n\n```python\n(.*?)```", card.content, re.DOTALL).group(1)
    scope: dict[str, Any] = {}
    exec(snippet, scope)  # noqa: S102 - our own card's code, against the stand-in
    assert torch.equal(_logits(scope["model"].eval(), scope["tokenizer"]), _logits(model, tokenizer))


def test_push_merged_model(hub: LocalHubStandIn, tiny_model_dir: Path) -> None:
    model, tokenizer = _adapter_model(tiny_model_dir)
    before = _logits(model, tokenizer)
    push_josh_model(model, tokenizer, "someone/tiny-josh-merged", card_info=CARD_INFO, merged=True, token=TOKEN)

    files = set(hub.repo("someone/tiny-josh-merged").files)
    assert {"config.json", "model.safetensors", "README.md", "tokenizer.json"} <= files
    assert not any(f.startswith("adapter_") for f in files)
    merged = AutoModelForCausalLM.from_pretrained("someone/tiny-josh-merged").eval()
    assert not any("lora" in k for k in merged.state_dict())
    torch.testing.assert_close(_logits(merged, tokenizer), before, rtol=1e-5, atol=1e-5)
    # The caller's model was not merged in place: still the same trainable adapter.
    assert isinstance(model, PeftModel) and torch.equal(_logits(model, tokenizer), before)
    card = ModelCard.load("someone/tiny-josh-merged")
    assert card.data.library_name == "transformers" and "merged" in card.data.tags
    assert card.data.base_model == str(tiny_model_dir)  # filled in from the model


def test_only_the_trained_adapter_is_pushed_not_trls_reference_copy(
    hub: LocalHubStandIn, tiny_model_dir: Path
) -> None:
    model, tokenizer = _adapter_model(tiny_model_dir)
    # What TRL's KTO/DPO trainers do to a PeftModel passed with ref_model=None.
    model.add_adapter("ref", model.peft_config["default"])
    push_josh_model(model, tokenizer, "someone/with-ref", card_info=CARD_INFO, token=TOKEN)
    files = hub.repo("someone/with-ref").files
    assert not any(f.startswith("ref/") for f in files)
    weights = load_file(Path(HfApi().hf_hub_download("someone/with-ref", "adapter_model.safetensors")))
    assert weights.keys() == get_peft_model_state_dict(model, adapter_name="default").keys()


def test_merged_push_refused_for_a_quantised_base(tiny_model_dir: Path, tmp_path: Path) -> None:
    model, tokenizer = load_policy(tiny_model_dir, quantization="8bit", lora=default_lora_config(r=4))
    with pytest.raises(ValueError, match="cannot push a merged model from a 8bit base"):
        save_for_hub(model, tokenizer, tmp_path / "out", card_info={}, merged=True)
    # The adapter itself is fine, and the card records the quantisation it was trained on.
    save_for_hub(model, tokenizer, tmp_path / "out", card_info={})
    card = ModelCard((tmp_path / "out" / "README.md").read_text())
    assert "| quantization | 8bit |" in card.content and "BitsAndBytesConfig(load_in_8bit=True)" in card.content


def test_adapter_push_needs_a_peft_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with pytest.raises(ValueError, match="not a PeftModel"):
        save_for_hub(model, None, tmp_path / "out", card_info={})


@pytest.mark.parametrize("source", ["argument", "environment"])
def test_token_is_never_logged_printed_or_written(
    source: str,
    hub: LocalHubStandIn,
    tiny_model_dir: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, every level: huggingface_hub, transformers, peft, ours
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no saved login of the machine's user
    if source == "environment":
        monkeypatch.setenv("HF_TOKEN", TOKEN)
    model, tokenizer = _adapter_model(tiny_model_dir)
    # A careless caller put the token in the run's config: it must not reach the card.
    info = copy.deepcopy(CARD_INFO)
    info["config"]["hub_token"] = TOKEN
    info["training"]["push_command"] = f"josh-hf train --hub_token {TOKEN}"
    push_josh_model(model, tokenizer, "someone/secret-test", card_info=info,
                    token=TOKEN if source == "argument" else None)
    ModelCard.load("someone/secret-test")
    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), "someone/secret-test")

    # It was used: every write carried it ...
    writes = [r for r in hub.requests if r.method == "POST"]
    assert len(writes) >= 3 and all(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in writes)
    # ... and it appears nowhere else.
    captured = capsys.readouterr()
    assert TOKEN not in captured.out and TOKEN not in captured.err
    assert caplog.records and TOKEN not in caplog.text
    assert all(TOKEN not in record.getMessage() for record in caplog.records)
    stored = hub.repo("someone/secret-test").files
    assert stored and all(TOKEN.encode() not in data for data in stored.values())
    card = stored["README.md"].decode()
    assert "| config: hub_token | hf_*** |" in card and "--hub_token hf_***" in card
    written = [p for p in tmp_path.rglob("*") if p.is_file()]  # the download cache, HF_HOME
    assert written and all(TOKEN.encode() not in p.read_bytes() for p in written)


def test_a_token_in_a_saved_file_stops_the_upload(tiny_model_dir: Path, tmp_path: Path) -> None:
    model, tokenizer = _adapter_model(tiny_model_dir)
    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.init_kwargs["token"] = TOKEN  # would be written into tokenizer_config.json
    with pytest.raises(RuntimeError, match="contains a Hub token") as err:
        save_for_hub(model, tokenizer, tmp_path / "out", card_info={}, secrets=[TOKEN])
    assert TOKEN not in str(err.value)


def test_redact() -> None:
    assert redact(f"Bearer {TOKEN}!", secrets=[]) == "Bearer hf_***!"  # by shape
    assert redact("token=abc123secret", secrets=["abc123secret"]) == "token=hf_***"  # by value
    assert redact("hf_short and hf_hub_download", secrets=[]) == "hf_short and hf_hub_download"  # words survive
    assert redact(12, secrets=[]) == "12"


def test_known_secrets_reads_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    assert known_secrets("given") == ["given"]
    monkeypatch.setenv("HF_TOKEN", "from-env")
    assert sorted(known_secrets("given")) == ["from-env", "given"]
