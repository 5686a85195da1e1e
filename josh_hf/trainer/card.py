"""Model cards for JOSH-trained models, rendered from the Jinja templates in ``model_cards/``.

The YAML front matter is built with ``huggingface_hub.ModelCardData`` / ``EvalResult`` so it
follows the Hub's model-card metadata conventions (``library_name``, ``base_model``, ``tags``,
``datasets``, ``model-index``); the body comes from ``model_cards/josh_adapter.md.j2``.

Where the templates are found (:func:`model_cards_dir`): ``josh_hf/model_cards`` inside the
installed package when the wheel ships them there (see the package-data note in the
project's ``pyproject.toml``), else the ``model_cards/`` folder at the root of a source
checkout (also what an editable install sees).
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "MODEL_CARD_TEMPLATE",
    "build_card_data",
    "framework_versions",
    "model_cards_dir",
    "render_model_card",
]

MODEL_CARD_TEMPLATE = "josh_adapter.md.j2"
"""The template for adapters and merged models (one template: the differences are small)."""

METHOD_NAMES = {
    "sft": "supervised fine-tuning on the successful conversations",
    "kto": "KTO on desirable (successful) and undesirable (failed) turns",
    "dpo": "DPO on pairs of successful and failed turns with the same context",
}
FRAMEWORKS: tuple[tuple[str, str], ...] = (
    # (name shown, distribution name)
    ("josh-hf", "josh-hf"),
    ("transformers", "transformers"),
    ("TRL", "trl"),
    ("PEFT", "peft"),
    ("PyTorch", "torch"),
    ("Datasets", "datasets"),
    ("huggingface_hub", "huggingface_hub"),
    ("accelerate", "accelerate"),
)
# Setting rows of the "How it was made" table: (label, where to look). First present wins.
_SETTINGS: tuple[tuple[str, tuple[tuple[str, ...], ...]], ...] = (
    ("base model", (("base_model",),)),
    ("method", (("method",),)),
    ("TRL trainer", (("trainer_class",),)),
    ("agent format", (("config", "agent_format"),)),
    ("user simulator (JOSH search)", (("config", "user_simulator"), ("config", "user"))),
    ("agent sampling", (("config", "sampling"),)),
    ("beam size", (("config", "beam_size"),)),
    ("max JOSH steps", (("config", "max_steps"),)),
    ("rounds", (("config", "rounds"),)),
    ("tasks per round", (("config", "tasks_per_round"),)),
    ("learning rate", (("training", "lr"), ("training", "learning_rate"))),
    ("beta", (("training", "beta"),)),
    ("epochs", (("training", "epochs"), ("training", "num_train_epochs"))),
    ("LoRA r", (("training", "lora_r"), ("training", "lora", "r"))),
    ("LoRA alpha", (("training", "lora_alpha"), ("training", "lora", "alpha"), ("training", "lora", "lora_alpha"))),
    ("LoRA dropout", (("training", "lora_dropout"), ("training", "lora", "dropout"),
                      ("training", "lora", "lora_dropout"))),
    ("quantization", (("training", "quantization"),)),
)
_ROUND_KEYS = ("round", "josh_reward", "josh_success", "examples", "turns_per_second", "eval_reward", "eval_success")


def model_cards_dir() -> Path:
    """The folder holding the model-card templates (packaged copy first, then the source tree)."""
    candidates: list[Path] = []
    override = os.environ.get("JOSH_HF_MODEL_CARDS")
    if override:
        candidates.append(Path(override))
    try:
        packaged = importlib.resources.files("josh_hf") / "model_cards"
        candidates.append(Path(str(packaged)))
    except (ModuleNotFoundError, TypeError):  # not importable as a regular package
        pass
    # josh_hf/trainer/card.py -> repository root (source checkout or editable install)
    candidates.append(Path(__file__).resolve().parents[2] / "model_cards")
    for folder in candidates:
        if (folder / MODEL_CARD_TEMPLATE).is_file():
            return folder
    raise FileNotFoundError(
        f"model card template {MODEL_CARD_TEMPLATE} not found in {[str(c) for c in candidates]}; "
        "install josh-hf with its package data or set JOSH_HF_MODEL_CARDS to the model_cards folder"
    )


def framework_versions(names: Iterable[tuple[str, str]] = FRAMEWORKS) -> list[tuple[str, str]]:
    """``(name, version)`` of each framework, read now from the installed distributions."""
    out = []
    for label, dist in names:
        try:
            out.append((label, importlib.metadata.version(dist)))
        except importlib.metadata.PackageNotFoundError:
            out.append((label, "not installed"))
    return out


def _get(info: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = info
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _first(info: Mapping[str, Any], paths: Iterable[tuple[str, ...]]) -> Any:
    return next((v for v in (_get(info, p) for p in paths) if v is not None), None)


def _cell(value: Any) -> str:
    """A Markdown table cell: floats to 4 decimals, JSON for structures, pipes escaped."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}"  # 4 significant digits: scores and learning rates (1e-05) alike
    if isinstance(value, (dict, list, tuple)):
        value = json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    return str(value).replace("|", "\\|").replace("\n", " ")


def _is_hub_id(value: Any) -> bool:
    """``owner/name`` that is not a local path (what ``datasets``/``base_model`` metadata accept)."""
    if not isinstance(value, str) or value.count("/") != 1 or value.startswith((".", "/", "~")):
        return False
    return not Path(value).exists()


def _user_simulator(info: Mapping[str, Any], evaluation: Mapping[str, Any] | None) -> str | None:
    return ((evaluation or {}).get("user_simulator")
            or _first(info, (("config", "user_simulator"), ("config", "user"), ("user_simulator",))))


def _quantization(info: Mapping[str, Any]) -> str | None:
    q = _get(info, ("training", "quantization"))
    return str(q) if q else None


def build_card_data(info: Mapping[str, Any]):
    """The ``huggingface_hub.ModelCardData`` (YAML front matter) for ``info``.

    ``model-index`` holds the ToolWOZ results of this model (``eval_after``): average reward
    and success rate, on dataset ``ToolWOZ`` with its split, and the user simulator both in
    the dataset's ``args`` and in the metric names. Without ``eval_after`` there is no
    ``model-index`` (the Hub requires results in it).
    """
    from huggingface_hub import EvalResult, ModelCardData

    method = str(info.get("method") or "").lower() or None
    merged = bool(info.get("merged"))
    quantization = _quantization(info)
    tags = ["trl", "josh", *( [method] if method else []), "toolwoz", "tool-calling",
            "qlora" if quantization == "4bit" else "lora"]
    if merged:
        tags.append("merged")
    tags.extend(t for t in info.get("tags") or () if t not in tags)
    dataset = info.get("dataset")
    datasets = [dataset] if _is_hub_id(dataset) else None
    repo_id = info.get("repo_id")
    model_name = (str(repo_id).rsplit("/", 1)[-1] if repo_id else None) or "josh-model"

    eval_results = None
    after = info.get("eval_after") or {}
    if after and (after.get("average_reward") is not None or after.get("success_rate") is not None):
        user = _user_simulator(info, after)
        user_note = f" ({user} user simulator)" if user else ""
        common = {
            "task_type": "text-generation",
            "task_name": "Tool-calling dialogue",
            "dataset_type": dataset if _is_hub_id(dataset) else "toolwoz",
            "dataset_name": "ToolWOZ",
            "dataset_split": after.get("split"),
            "dataset_args": {k: v for k, v in (("user_simulator", user), ("num_tasks", after.get("num_tasks")))
                             if v is not None} or None,
        }
        eval_results = []
        for key, metric_type, label in (("average_reward", "average_reward", "Average reward"),
                                        ("success_rate", "success_rate", "Success rate")):
            if after.get(key) is not None:
                eval_results.append(EvalResult(metric_type=metric_type, metric_value=float(after[key]),
                                               metric_name=f"{label}{user_note}", **common))
    base_model = info.get("base_model")
    return ModelCardData(
        base_model=str(base_model) if base_model else None,
        library_name="transformers" if merged else "peft",
        pipeline_tag="text-generation",
        license=info.get("license"),
        language=info.get("language", "en"),
        datasets=datasets,
        tags=tags,
        # model_name is the model-index entry's name; without results it would be a stray key.
        model_name=model_name if eval_results else None,
        eval_results=eval_results or None,
    )


def _settings_rows(info: Mapping[str, Any]) -> list[tuple[str, str]]:
    rows = []
    used: set[tuple[str, ...]] = set()
    for label, paths in _SETTINGS:
        value = _first(info, paths)
        used.update(paths)
        if value is not None:
            rows.append((label, _cell(value)))
    # Settings the table does not name still belong in the card (the config is the record).
    for section in ("config", "training"):
        for key, value in (info.get(section) or {}).items():
            if (section, key) not in used and not isinstance(value, Mapping) and value is not None:
                rows.append((f"{section}: {key}", _cell(value)))
    return rows


def _harvest_rows(info: Mapping[str, Any]) -> list[tuple[str, str]]:
    harvest = info.get("harvest") or {}
    rows = []
    if harvest.get("tasks") is not None:
        rows.append(("tasks searched", _cell(harvest["tasks"])))
    for name, count in (harvest.get("examples") or {}).items():
        rows.append((f"{name} examples", _cell(count)))
    return rows


def _score_rows(info: Mapping[str, Any]) -> list[list[str]]:
    rows = []
    for label, key in (("base model (before)", "eval_before"), ("this model (after)", "eval_after")):
        e = info.get(key)
        if e:
            rows.append([label, _cell(e.get("split")), _cell(e.get("num_tasks")), _cell(_user_simulator(info, e)),
                         _cell(e.get("average_reward")), _cell(e.get("success_rate"))])
    return rows


def render_model_card(info: Mapping[str, Any], *, template: str = MODEL_CARD_TEMPLATE) -> str:
    """The README.md (YAML front matter + Markdown) of a JOSH-trained adapter or merged model.

    ``info`` keys (all optional; missing ones leave their rows or sections out):
    ``base_model``, ``method`` (``"sft"|"kto"|"dpo"``), ``trainer_class``, ``merged`` (bool),
    ``config`` (JOSH settings: beam_size, max_steps, rounds, tasks_per_round, agent_format,
    sampling, user_simulator, ...), ``training`` (lr, beta, epochs, lora_r/lora_alpha/
    lora_dropout or ``lora: {r, alpha, dropout}``, quantization), ``rounds`` (list of
    ``{round, josh_reward, josh_success, examples, turns_per_second, eval_reward,
    eval_success}``), ``harvest`` (``{tasks, examples: {sft, kto, dpo}}``), ``eval_before`` /
    ``eval_after`` (``{average_reward, success_rate, split, num_tasks, user_simulator}``),
    ``dataset`` (Hub id of ToolWOZ, or a local path), ``repo_id``, ``license``, ``tags``.
    Framework versions are read at render time. A Hub token found in the text (the value of
    ``HF_TOKEN`` or of the saved login) is replaced by ``hf_***``; ``push_josh_model`` also
    scrubs the token it was given and anything token-shaped.
    """
    import jinja2

    card_data = build_card_data(info)
    merged = bool(info.get("merged"))
    method = str(info.get("method") or "").lower()
    repo_id = info.get("repo_id")
    base_model = info.get("base_model") or "<base model>"
    eval_after = dict(info.get("eval_after") or {}) or None
    eval_before = dict(info.get("eval_before") or {}) or None
    for e in (eval_after, eval_before):
        if e is not None:
            e["user_simulator"] = _user_simulator(info, e) or "n/a"
            for key in ("average_reward", "success_rate"):
                e[key] = _cell(e.get(key))
            for key in ("split", "num_tasks"):
                e[key] = e.get(key) if e.get(key) is not None else "n/a"
    quantization = _quantization(info)
    versions = framework_versions()
    if quantization:
        versions += framework_versions((("bitsandbytes", "bitsandbytes"),))
    rounds_rows = [[_cell(r.get(k)) for k in _ROUND_KEYS] for r in info.get("rounds") or ()]
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(model_cards_dir())),
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
        # Every variable is passed below; a typo in the template should fail, not vanish.
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # Markdown, not HTML
    )
    text = env.get_template(template).render(
        card_data=card_data.to_yaml(),
        title=f"{repo_id} (JOSH {method.upper()})" if repo_id and method else (repo_id or "JOSH-trained model"),
        merged=merged,
        base_model=base_model,
        base_model_link=(f"[`{base_model}`](https://huggingface.co/{base_model})" if _is_hub_id(base_model)
                         else f"`{base_model}`"),
        trainer_class=info.get("trainer_class") or (f"{method.upper()}Trainer" if method else "Trainer"),
        method_name=METHOD_NAMES.get(method, method or "method not recorded"),
        eval_after=eval_after,
        eval_before=eval_before,
        settings_rows=_settings_rows(info),
        harvest_rows=_harvest_rows(info),
        rounds_rows=rounds_rows,
        score_rows=_score_rows(info),
        repo_ref=repo_id or "<this repo>",
        quantization=quantization,
        agent_format=_get(info, ("config", "agent_format")) or "native",
        eval_user=(eval_after or {}).get("user_simulator") if eval_after and eval_after["user_simulator"] != "n/a"
        else (_first(info, (("config", "user_simulator"), ("config", "user"))) or "agenda"),
        versions=versions,
    )
    from .hub import known_secrets, redact  # .hub imports this module: import at call time

    # A token that slipped into the info (a config that recorded it, say) never reaches the card.
    # Known values only: a pattern could also hit legitimate text in model names or settings.
    return redact(text, known_secrets(), by_shape=False)


def __getattr__(name: str) -> Any:
    # push_josh_model and redact live in .hub, which imports this module; resolving them lazily
    # lets callers import them from here too without an import cycle.
    if name in ("push_josh_model", "redact"):
        from . import hub

        return getattr(hub, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
