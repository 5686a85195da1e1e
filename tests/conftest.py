"""Shared fixtures. ``tiny_model_dir`` builds one tiny random chat model per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Nothing in the test suite may reach the Hub; fail fast instead of waiting on the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved tiny Qwen2-architecture chat model + tokenizer (Hermes tool-call template).

    Load it with ``AutoModelForCausalLM`` / ``AutoTokenizer`` or ``TransformersBackend(path)``.
    Treat it as read-only: it is shared by every test in the session.
    """
    from josh_hf.testing import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny_model"), seed=0)


@pytest.fixture(scope="session")
def tiny_backend(tiny_model_dir: Path):
    """A ``TransformersBackend`` on the tiny model, shared by the session (don't mutate it)."""
    from josh_hf.backends.transformers_backend import TransformersBackend

    return TransformersBackend(tiny_model_dir)


@pytest.fixture(scope="module")
def private_datasets_cache(tmp_path_factory: pytest.TempPathFactory):
    """Keep the Arrow caches that ``load_dataset`` prepares out of the user's ~/.cache
    (modules opt in with ``pytestmark = pytest.mark.usefixtures("private_datasets_cache")``)."""
    import datasets

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path_factory.mktemp("datasets_cache")))
        yield


@pytest.fixture
def wait_for_records():
    """``wait(count, n, proc, what)``: poll until ``count()`` reaches ``n`` while the subprocess
    ``proc`` runs (the kill-and-resume tests kill it right after); fails if it ends first."""
    import time

    def wait(count, n: int, proc, what: str, timeout: float = 240) -> None:
        start = time.time()
        while time.time() - start < timeout:
            if count() >= n:
                return
            if proc.poll() is not None:
                pytest.fail(f"the run ended before it could be killed (rc={proc.returncode})")
            time.sleep(0.05)
        pytest.fail(f"no {what} written in time")

    return wait
