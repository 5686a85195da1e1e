"""Push a JOSH-trained adapter (or merged model) with its model card to the Hugging Face Hub.

Tokens: ``push_josh_model(token=None)`` lets ``huggingface_hub`` resolve one from ``HF_TOKEN``
or the saved login (``hf auth login``). A token is only ever handed to ``HfApi``: this module
never logs or prints it, :func:`redact` scrubs it from anything it does log, the card info is
scrubbed before rendering, and the folder is checked for it before anything is uploaded.
"""

from __future__ import annotations

import copy
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .card import render_model_card
from .models import REFERENCE_ADAPTER_NAME, is_quantized

logger = logging.getLogger(__name__)

__all__ = ["known_secrets", "push_josh_model", "redact", "save_for_hub"]

REDACTED = "hf_***"
# User access tokens are "hf_" + 34 letters; OAuth ones "hf_oauth_...". 20+ keeps ordinary words out.
_TOKEN_PATTERN = re.compile(r"\bhf_[A-Za-z0-9_]{20,}")
_TOKEN_ENV_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HUGGINGFACEHUB_API_TOKEN")


def known_secrets(*extra: str | bool | None) -> list[str]:
    """The token strings to keep out of logs and files: ``extra`` (e.g. a ``token=`` argument),
    the token environment variables and the saved login."""
    secrets = [s for s in extra if isinstance(s, str) and s]
    secrets += [os.environ[v].strip() for v in _TOKEN_ENV_VARS if os.environ.get(v, "").strip()]
    # The saved login is read from its file, not with huggingface_hub.get_token(): that one may
    # exchange an OIDC token over the network, which rendering a card must never do.
    try:
        from huggingface_hub import constants

        token_path = Path(os.environ.get("HF_TOKEN_PATH") or constants.HF_TOKEN_PATH)
        saved = token_path.read_text(encoding="utf-8").strip() if token_path.is_file() else ""
    except (OSError, ImportError, UnicodeDecodeError):
        saved = ""
    if saved:
        secrets.append(saved)
    # Longest first, so a token that contains another is replaced whole.
    return sorted(set(secrets), key=len, reverse=True)


def redact(text: Any, secrets: Iterable[str | None] | None = None, *, by_shape: bool = True) -> str:
    """``text`` (made a string) with every known token, and (``by_shape``) anything shaped like
    a Hub token (``hf_`` + 20 or more characters), replaced by ``hf_***``.

    ``secrets`` defaults to :func:`known_secrets`; pass extra ones (e.g. a ``token=``) in it.
    """
    out = str(text)
    for secret in sorted({s for s in (secrets if secrets is not None else known_secrets()) if s},
                         key=len, reverse=True):
        out = out.replace(secret, REDACTED)
    return _TOKEN_PATTERN.sub(REDACTED, out) if by_shape else out


def _redact_tree(value: Any, secrets: list[str]) -> Any:
    """``value`` with :func:`redact` applied to every string in it (dicts, lists, tuples)."""
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, Mapping):
        return {redact(k, secrets) if isinstance(k, str) else k: _redact_tree(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_redact_tree(v, secrets) for v in value)
    return value


def _is_peft_model(model: Any) -> bool:
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)


def _active_adapter(model: Any) -> str:
    """The adapter being trained: the active one that is not TRL's frozen ``"ref"`` copy."""
    active = model.active_adapter
    names = [active] if isinstance(active, str) else list(active)
    names = [n for n in names if n != REFERENCE_ADAPTER_NAME] or [
        n for n in model.peft_config if n != REFERENCE_ADAPTER_NAME
    ]
    if not names:
        raise ValueError("the model has no trained adapter to push (only TRL's reference copy)")
    return names[0]


def _quantization_of(model: Any) -> str | None:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(base, "is_loaded_in_4bit", False):
        return "4bit"
    if getattr(base, "is_loaded_in_8bit", False):
        return "8bit"
    return None


def _base_model_name(model: Any) -> str | None:
    if _is_peft_model(model):
        config = model.peft_config.get(_active_adapter(model))
        if config is not None and config.base_model_name_or_path:
            return str(config.base_model_name_or_path)
    return getattr(getattr(model, "config", None), "_name_or_path", None) or None


def save_for_hub(model: Any, tokenizer: Any, folder: str | Path, *, card_info: Mapping[str, Any],
                 merged: bool = False, secrets: Iterable[str] = ()) -> Path:
    """Write what :func:`push_josh_model` uploads into ``folder``: the adapter (or merged model),
    the tokenizer and ``README.md`` (the model card). Returns ``folder``.

    The adapter is the trained one only (``adapter_config.json`` + ``adapter_model.safetensors``
    at the folder's root, as ``PeftModel.from_pretrained(base, repo_id)`` expects), never TRL's
    ``"ref"`` copy. ``merged=True`` folds the adapter into a *copy* of the model (the caller's
    model stays a trainable ``PeftModel``; the copy costs the model's memory once more) and is
    refused for 4/8-bit bases: merging into quantised weights would round the adapter away, so
    reload the base unquantised, load the adapter and merge that instead.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    secret_list = known_secrets(*secrets)
    if merged and is_quantized(model):
        raise ValueError(
            f"cannot push a merged model from a {_quantization_of(model) or 'quantised'} base: merging a LoRA "
            "adapter into bitsandbytes weights loses it. Push the adapter (merged=False), or reload the base "
            "in bf16/fp16, apply the adapter with PeftModel.from_pretrained and push that with merged=True."
        )
    if not merged and not _is_peft_model(model):
        raise ValueError("the model is not a PeftModel, so there is no adapter to push: pass merged=True "
                         "to push the full model")

    info = dict(_redact_tree(dict(card_info), secret_list))
    info["merged"] = merged
    info.setdefault("base_model", _base_model_name(model))
    quantization = _quantization_of(model)
    if quantization and not (info.get("training") or {}).get("quantization"):
        info["training"] = {**(info.get("training") or {}), "quantization": quantization}

    if merged:
        to_save = copy.deepcopy(model)
        if _is_peft_model(to_save):
            to_save = to_save.merge_and_unload(adapter_names=[_active_adapter(model)])
        to_save.save_pretrained(folder)
        del to_save
    else:
        name = _active_adapter(model)
        # PEFT writes an adapter not named "default" into a sub-folder of that name; stage it and
        # move the files to the root so the repo loads as an adapter.
        with tempfile.TemporaryDirectory() as stage:
            model.save_pretrained(stage, selected_adapters=[name])
            source = Path(stage) if name == "default" else Path(stage) / name
            for item in source.iterdir():
                if item.is_file() and item.name != "README.md":  # PEFT's stub card: ours replaces it
                    shutil.copy2(item, folder / item.name)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    (folder / "README.md").write_text(render_model_card(info), encoding="utf-8")
    _check_no_secrets(folder, secret_list)
    return folder


def _check_no_secrets(folder: Path, secrets: list[str]) -> None:
    """Refuse to upload a folder in which any token appears (without saying which token)."""
    needles = [s.encode() for s in secrets if s]
    for path in folder.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            if any(n in data for n in needles):
                raise RuntimeError(f"refusing to upload: {path.name} contains a Hub token")


def push_josh_model(
    model: Any,
    tokenizer: Any,
    repo_id: str,
    *,
    card_info: Mapping[str, Any],
    merged: bool = False,
    private: bool = False,
    token: str | None = None,
    commit_message: str = "Upload JOSH-trained model with josh-hf",
    revision: str | None = None,
) -> Any:
    """Create ``repo_id`` (if needed) and upload the adapter (or, with ``merged=True``, the
    merged model), the tokenizer and the model card rendered from ``card_info`` (see
    :func:`josh_hf.trainer.card.render_model_card`), in one commit.

    Args:
        model: a ``peft.PeftModel`` (adapter push) or, with ``merged=True``, a ``PeftModel`` on
            an unquantised base or a plain ``PreTrainedModel``.
        tokenizer: saved next to the weights (``None`` to skip).
        repo_id: ``owner/name`` on the Hub.
        card_info: what the card records; ``repo_id`` and ``merged`` are filled in, and
            ``base_model`` / ``training.quantization`` from the model when missing.
        merged: push the merged model instead of the adapter.
        private: create the repo private.
        token: a Hub token; ``None`` uses ``HF_TOKEN`` or the saved login. Never logged.
        commit_message: the commit's summary.
        revision: branch to push to (default ``main``).

    Returns:
        The ``huggingface_hub.CommitInfo`` of the upload (``commit_url``, ``oid``, ``repo_url``).
    """
    from huggingface_hub import HfApi

    info = {**dict(card_info), "repo_id": repo_id}
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="josh-hf-push-") as tmp:
        folder = save_for_hub(model, tokenizer, tmp, card_info=info, merged=merged,
                              secrets=[token] if token else [])
        files = sorted(p.name for p in Path(tmp).iterdir())
        logger.info("pushing %s (%s) to %s: %s", "merged model" if merged else "adapter",
                    redact(info.get("base_model") or "?", [token] if token else None), redact(repo_id),
                    ", ".join(files))
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        commit = api.upload_folder(repo_id=repo_id, repo_type="model", folder_path=folder,
                                   commit_message=commit_message, revision=revision)
    logger.info("pushed to %s", redact(commit.commit_url))
    return commit
