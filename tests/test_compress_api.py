"""The OpenAI-compatible endpoint compressor (promptintern.compress_api) against a local fake server."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import promptintern.compress_api as compress_api
from promptintern.compress import compress_template, split_protected
from test_compress import ASSERTS, FENCE, TEMPLATE

# What a good compressor answers: the prose shortened, every protected span verbatim.
COMPRESSED = (
    "Software programmer: write Python functions for tasks, pass test cases.\n"
    "Task: {task_description}\n"
    f"Answer one code block:\n{FENCE}\nTest cases:\n{ASSERTS}\nReturn result."
)


def chat_completion(content: str) -> dict:
    """An OpenAI chat.completion object, as the API documents it."""
    return {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "gpt-4",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 500, "completion_tokens": 120, "total_tokens": 620},
    }


class FakeEndpoint:
    """A local /v1 that answers with the queued (status, body, delay_s) replies and records requests."""

    def __init__(self) -> None:
        self.replies: list[tuple[int, dict, float]] = []
        self.requests: list[dict] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                endpoint.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                status, answer, delay_s = endpoint.replies.pop(0)
                time.sleep(delay_s)
                data = json.dumps(answer).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up (timeout test)
                    pass

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def reply(self, status: int = 200, body: dict | None = None, delay_s: float = 0.0) -> None:
        self.replies.append((status, body if body is not None else chat_completion(COMPRESSED), delay_s))


@pytest.fixture
def endpoint(monkeypatch):
    monkeypatch.setattr(compress_api, "RETRY_DELAY_S", 0.0)
    fake = FakeEndpoint()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


def compress(endpoint_url, model_dir, rate=0.3, **kwargs):
    return compress_template(TEMPLATE, rate, method="api", model_dir=model_dir, endpoint=endpoint_url,
                             api_model="gpt-4", **kwargs)


def test_sends_an_openai_chat_request_and_measures_the_answer(endpoint, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("PI_TEST_KEY", "sk-test-123")
    endpoint.reply()
    result = compress(endpoint.url, tiny_model_dir, api_key_env="PI_TEST_KEY")

    assert result.text == COMPRESSED and result.method == "api"
    assert result.tokens_after < result.tokens_before and result.rate_achieved < 0.7
    (request,) = endpoint.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["Authorization"] == "Bearer sk-test-123"
    body = request["body"]
    assert body["model"] == "gpt-4" and body["temperature"] == 0
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    user = body["messages"][1]["content"]
    assert user.endswith(TEMPLATE) and "30%" in user
    assert "code blocks" in user and "assert" in user and "{name}" in user


def test_no_key_no_authorization_header(endpoint, tiny_model_dir, monkeypatch):
    monkeypatch.delenv("PI_TEST_KEY", raising=False)
    endpoint.reply()
    compress(endpoint.url, tiny_model_dir, api_key_env="PI_TEST_KEY")
    assert "Authorization" not in endpoint.requests[0]["headers"]


def test_one_retry_on_a_server_error(endpoint, tiny_model_dir):
    endpoint.reply(503, {"error": {"message": "overloaded"}})
    endpoint.reply()
    assert compress(endpoint.url, tiny_model_dir).text == COMPRESSED
    assert len(endpoint.requests) == 2


def test_second_server_error_names_url_and_status(endpoint, tiny_model_dir):
    endpoint.reply(500, {"error": {"message": "boom"}})
    endpoint.reply(502, {"error": {"message": "bad gateway"}})
    with pytest.raises(compress_api.ApiCompressionError, match=rf"{endpoint.url}/chat/completions.*HTTP 502"):
        compress(endpoint.url, tiny_model_dir)
    assert len(endpoint.requests) == 2


def test_client_error_is_not_retried_and_names_the_key_variable(endpoint, tiny_model_dir):
    endpoint.reply(401, {"error": {"message": "invalid api key"}})
    with pytest.raises(compress_api.ApiCompressionError, match=r"HTTP 401.*invalid api key.*\$PI_TEST_KEY"):
        compress(endpoint.url, tiny_model_dir, api_key_env="PI_TEST_KEY")
    assert len(endpoint.requests) == 1


def test_timeout_is_retried_then_reported(endpoint, tiny_model_dir):
    endpoint.reply(delay_s=1.0)
    endpoint.reply(delay_s=1.0)
    with pytest.raises(compress_api.ApiCompressionError, match=rf"{endpoint.url}.*timeout 0.2 s"):
        compress(endpoint.url, tiny_model_dir, api_timeout_s=0.2)
    assert len(endpoint.requests) == 2


def test_unreachable_endpoint(tiny_model_dir, monkeypatch):
    import socket

    monkeypatch.setattr(compress_api, "RETRY_DELAY_S", 0.0)
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    with pytest.raises(compress_api.ApiCompressionError,
                       match=rf"POST {url}/chat/completions failed.*compression.endpoint"):
        compress(url, tiny_model_dir)


def test_a_dropped_protected_span_is_an_error(endpoint, tiny_model_dir):
    endpoint.reply(body=chat_completion(COMPRESSED.replace(ASSERTS.splitlines()[1], "")))
    with pytest.raises(RuntimeError, match=rf"protected span.*assert min_cost.*'gpt-4' at {endpoint.url}"):
        compress(endpoint.url, tiny_model_dir)


def test_an_answer_without_content_is_an_error(endpoint, tiny_model_dir):
    endpoint.reply(body={"choices": []})
    with pytest.raises(compress_api.ApiCompressionError, match="no choices"):
        compress(endpoint.url, tiny_model_dir)


def test_without_endpoint_says_how_to_configure_it(tiny_model_dir):
    with pytest.raises(ValueError, match=r"compression.endpoint is not set.*--set compression.endpoint=.*"
                                         r"--set compression.api_model="):
        compress_template(TEMPLATE, 0.3, method="api", model_dir=tiny_model_dir)


def test_pipeline_records_endpoint_never_the_key(endpoint, tiny_model_dir, tiny_data_dir, tmp_path, monkeypatch):
    from promptintern import pipeline
    from promptintern.config import CompressionConfig

    monkeypatch.setenv("PI_TEST_KEY", "sk-secret-456")
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    pipeline.prepare_dataset("nl2bash", str(tiny_data_dir), 4, "test", 2, 0, dataset)
    # a well-behaved answer: every third word of the prose, the protected spans verbatim
    answer = "".join(" ".join(s.text.split()[::3]) + " " if s.compress else s.text
                     for s in split_protected(pipeline.load_template(dataset).text))
    endpoint.reply(body=chat_completion(answer))
    cfg = CompressionConfig(method="api", endpoint=endpoint.url, api_model="gpt-4", api_key_env="PI_TEST_KEY")
    out = tmp_path / "out"
    out.mkdir()
    stats = pipeline.compress(dataset, 0.3, cfg, tiny_model_dir, out)
    assert stats["endpoint"] == endpoint.url and stats["api_model"] == "gpt-4"
    assert stats["api_key_env"] == "PI_TEST_KEY" and stats["rate_achieved"] < 0.6
    assert "sk-secret-456" not in (out / "stats.json").read_text()
    assert endpoint.requests[0]["headers"]["Authorization"] == "Bearer sk-secret-456"


# --- config ----------------------------------------------------------------------------------


def test_config_checks_the_api_fields():
    from pydantic import ValidationError

    from promptintern.config import CompressionConfig

    with pytest.raises(ValidationError, match="compression.endpoint.*base URL"):
        CompressionConfig(method="api", endpoint="localhost:8000/v1")
    with pytest.raises(ValidationError, match="compression.endpoint is not set.*--set compression.endpoint="):
        CompressionConfig(method="api")
    with pytest.raises(ValidationError, match="compression.model is not set.*token-classification"):
        CompressionConfig(method="llmlingua2")
    with pytest.raises(ValidationError, match=r"compression.api_key_env: give the \*name\* of") as err:
        CompressionConfig(api_key_env="sk-live-abc123")
    assert "sk-live-abc123" not in str(err.value)  # a key pasted by mistake is not echoed into logs
