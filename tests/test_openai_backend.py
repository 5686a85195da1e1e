"""OpenAIBackend against a real ``transformers serve`` and against a scripted stdlib HTTP server."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from josh_hf.backends import GenerationRequest, SamplingParams, ToolCallOutput
from josh_hf.backends.openai_backend import OpenAIBackend

PROMPTS = ["hi", "book a train", "I am looking for a cheap hotel in the north.", "no"]


def _request(text: str, **sampling: Any) -> GenerationRequest:
    return GenerationRequest(
        messages=[{"role": "user", "content": text}],
        sampling=SamplingParams(**{"max_new_tokens": 8, **sampling}),
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ------------------------------------------------------------------- real `transformers serve`


@pytest.fixture(scope="module")
def serve_url(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``transformers serve`` pinned to the tiny model on 127.0.0.1, offline; yields its /v1 URL."""
    for module in ("fastapi", "uvicorn"):
        pytest.importorskip(module, reason="`transformers serve` needs transformers[serving] (fastapi, uvicorn)")
    cli = shutil.which("transformers", path=str(Path(sys.executable).parent)) or shutil.which("transformers")
    if cli is None:
        pytest.skip("the `transformers` CLI is not installed")
    port = _free_port()
    log_path = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [cli, "serve", str(tiny_model_dir), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"transformers serve exited ({proc.returncode}):\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"transformers serve not ready after 120 s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_serve_concurrent_completions_match_local_greedy(serve_url: str, tiny_model_dir: Path, tiny_backend) -> None:
    backend = OpenAIBackend(str(tiny_model_dir), base_url=serve_url, max_concurrency=4, timeout=60, max_retries=0)
    outputs = backend.generate([_request(p) for p in PROMPTS])
    assert [o.error for o in outputs] == [None] * len(PROMPTS)
    local = tiny_backend.generate([_request(p) for p in PROMPTS])
    for remote, mine in zip(outputs, local):
        # Same weights, same chat template, greedy: the server and the local backend agree.
        assert remote.prompt_tokens == mine.prompt_tokens
        assert remote.completion_tokens == mine.completion_tokens
        assert remote.text == mine.text
        assert remote.finish_reason in ("length", "stop")
    assert len({o.text for o in outputs}) > 1


def test_serve_renders_tools(serve_url: str, tiny_model_dir: Path) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "search_hotel",
                "description": "Find hotels.",
                "parameters": {"type": "object", "properties": {}},
            },
        }
    ]
    backend = OpenAIBackend(str(tiny_model_dir), base_url=serve_url, max_retries=0)
    history = [
        {"role": "user", "content": "hotel?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"type": "function", "id": "c1", "function": {"name": "search_hotel", "arguments": {}}}],
        },
        {"role": "tool", "tool_call_id": "c1", "name": "search_hotel", "content": "[]"},
    ]
    with_tools, without = backend.generate(
        [
            GenerationRequest(messages=history, tools=tools, sampling=SamplingParams(max_new_tokens=2)),
            GenerationRequest(messages=history[:1], sampling=SamplingParams(max_new_tokens=2)),
        ]
    )
    assert with_tools.error is None and without.error is None
    assert with_tools.prompt_tokens > without.prompt_tokens + 30


def test_serve_errors_become_outputs(serve_url: str, tiny_model_dir: Path) -> None:
    wrong = OpenAIBackend("no-such-model", base_url=serve_url, max_retries=0)
    out = wrong.generate([_request("hi")])[0]
    assert out.error is not None and "400" in out.error and out.text == ""
    # transformers serve rejects fields it does not know (top_k) with 422: an error, not a crash,
    # and not retried (a client error).
    backend = OpenAIBackend(str(tiny_model_dir), base_url=serve_url, max_retries=3, sleep=lambda s: None)
    bad, good = backend.generate([_request("hi", top_k=5), _request("hi")])
    assert bad.error is not None and "422" in bad.error
    assert good.error is None
    assert sorted(backend.attempts) == [1, 1]


# ------------------------------------------------------------------ scripted stdlib server


class _Script:
    """Responses served in order: (status, headers, body, delay_seconds)."""

    def __init__(self, responses: list[tuple[int, dict[str, str], Any, float]]):
        self.responses = list(responses)
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.lock = threading.Lock()


def _completion(message: dict[str, Any], finish: str = "stop") -> dict[str, Any]:
    return {
        "id": "cmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
    }


@pytest.fixture
def scripted_server() -> Iterator[tuple[str, _Script]]:
    script = _Script([])

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", 0))
            body = json.loads(self.rfile.read(length) or b"{}")
            with script.lock:
                script.bodies.append(body)
                script.headers.append({k.lower(): v for k, v in self.headers.items()})
                status, headers, payload, delay = (
                    script.responses.pop(0) if script.responses else (500, {}, {"error": "script exhausted"}, 0.0)
                )
            time.sleep(delay)
            if payload == "echo":  # answer with the request's last message, to check the output order
                payload = _completion({"content": body["messages"][-1]["content"]})
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                for key, value in {"content-type": "application/json", **headers}.items():
                    self.send_header(key, value)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except OSError:
                pass  # the client timed out and went away

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", script
    finally:
        server.shutdown()
        server.server_close()


def test_retry_after_then_tool_calls(scripted_server: tuple[str, _Script], monkeypatch: pytest.MonkeyPatch) -> None:
    url, script = scripted_server
    monkeypatch.setenv("JOSH_TEST_KEY", "sk-test-123")
    limited = (429, {"retry-after": "1"}, {"error": {"message": "slow down"}}, 0.0)
    ok = _completion(
        {
            "content": None,
            "tool_calls": [
                {
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "search_hotel", "arguments": '{"area": "north"}'},
                },
                {"id": "call_b", "type": "function", "function": {"name": "book_hotel", "arguments": '{"name": '}},
            ],
        },
        finish="tool_calls",
    )
    script.responses = [limited, limited, (200, {}, ok, 0.0)]
    delays: list[float] = []
    backend = OpenAIBackend(
        "m", base_url=url, api_key_env="JOSH_TEST_KEY", max_retries=5, backoff_base=0.01, sleep=delays.append
    )
    request = GenerationRequest(
        messages=[
            {"role": "user", "content": "hotel"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"type": "function", "id": "c0", "function": {"name": "f", "arguments": {"x": 1}}}],
            },
            {"role": "tool", "tool_call_id": "c0", "name": "f", "content": "done"},
        ],
        tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}],
        sampling=SamplingParams(temperature=0.7, top_p=0.9, top_k=20, max_new_tokens=33, seed=5, stop=("END",)),
    )
    out = backend.generate([request])[0]

    assert out.error is None
    assert delays == [1.0, 1.0]  # Retry-After honoured (the jittered back-off is smaller here)
    assert backend.attempts == [3] and len(script.bodies) == 3
    assert out.tool_calls == [
        ToolCallOutput("search_hotel", {"area": "north"}, id="call_a"),
        ToolCallOutput("book_hotel", '{"name": ', id="call_b"),  # broken JSON stays raw
    ]
    assert out.finish_reason == "tool_calls" and (out.prompt_tokens, out.completion_tokens) == (11, 7)

    sent = script.bodies[-1]
    assert sent["messages"][1]["tool_calls"][0]["function"]["arguments"] == '{"x": 1}'  # dict → JSON string
    assert sent["messages"][1]["content"] is None
    assert (sent["temperature"], sent["top_p"], sent["top_k"], sent["max_tokens"], sent["seed"], sent["stop"]) == (
        0.7,
        0.9,
        20,
        33,
        5,
        ["END"],
    )
    assert script.headers[-1]["authorization"] == "Bearer sk-test-123"
    assert "sk-test-123" not in repr(backend)


def test_server_errors_retried_client_errors_not(scripted_server: tuple[str, _Script]) -> None:
    url, script = scripted_server
    script.responses = [
        (503, {}, {"error": "busy"}, 0.0),
        (200, {}, _completion({"content": "hello"}), 0.0),
    ]
    delays: list[float] = []
    backend = OpenAIBackend("m", base_url=url, max_retries=2, backoff_base=0.5, sleep=delays.append)
    out = backend.generate([_request("hi")])[0]
    assert (out.text, out.error, out.tool_calls) == ("hello", None, [])
    assert len(delays) == 1 and 0.25 <= delays[0] <= 0.5  # equal-jitter back-off of attempt 0

    script.responses = [(400, {}, {"error": {"message": "bad"}}, 0.0)]
    delays.clear()
    out = backend.generate([_request("hi")])[0]
    assert out.error is not None and "400" in out.error and delays == []


def test_timeout_and_connection_errors(scripted_server: tuple[str, _Script]) -> None:
    url, script = scripted_server
    slow = (200, {}, _completion({"content": "late"}), 1.5)
    script.responses = [slow, slow]
    delays: list[float] = []
    backend = OpenAIBackend("m", base_url=url, timeout=0.3, max_retries=1, backoff_base=0.01, sleep=delays.append)
    out = backend.generate([_request("hi")])[0]
    assert out.error is not None and "Timeout" in out.error
    assert len(delays) == 1 and backend.attempts == [2]

    closed = OpenAIBackend(
        "m", base_url=f"http://127.0.0.1:{_free_port()}/v1", max_retries=2, backoff_base=0.01, sleep=delays.append
    )
    out = closed.generate([_request("hi")])[0]
    assert out.error is not None and "Connection" in out.error and closed.attempts == [3]


def test_many_requests_keep_order(scripted_server: tuple[str, _Script]) -> None:
    url, script = scripted_server
    # Later requests answer faster, so completions arrive out of order.
    script.responses = [(200, {}, "echo", 0.02 * (12 - i)) for i in range(12)]
    backend = OpenAIBackend("m", base_url=url, max_concurrency=4, max_retries=0)
    outs = backend.generate([_request(f"q{i}") for i in range(12)])
    assert [o.text for o in outs] == [f"q{i}" for i in range(12)]
    assert len(script.bodies) == 12
