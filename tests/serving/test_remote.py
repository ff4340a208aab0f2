"""The OpenAI-compatible client against a small HTTP server started in the test (a stand-in for vLLM)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from neurogate.errors import ConfigError, EndpointError
from neurogate.evaluation.remote import Endpoint, generate_remote, served_models

EOS = 2


@dataclass
class Script:
    """What the fake server does: fail the first ``fail`` posts with ``status``, wait ``delay`` seconds per
    reply, and record every request body."""

    fail: int = 0
    status: int = 503
    delay: float = 0.0
    with_ids: bool = True
    bodies: list[dict[str, Any]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def reply_for(body: dict[str, Any]) -> tuple[str, list[int], bool]:
    """A deterministic reply: the model name and the prompt reversed, one token per character, cut at
    ``max_tokens``; it ends its turn when it fits."""
    prompt = body["messages"][-1]["content"] if "messages" in body else body["prompt"]
    full = f"{body['model']}:{prompt[::-1]}"
    text = full[: body["max_tokens"]]
    finished = len(full) <= body["max_tokens"]
    return text, [ord(c) for c in text] + ([EOS] if finished else []), finished


def handler_for(script: Script) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def send(self, status: int, data: Any) -> None:
            blob = json.dumps(data).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(blob)))
            self.end_headers()
            self.wfile.write(blob)

        def do_GET(self) -> None:
            self.send(200, {"object": "list", "data": [{"id": "base"}, {"id": "cna-m0"}]})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with script.lock:
                script.bodies.append(body)
                script.paths.append(self.path)
                failing = script.fail > 0
                script.fail -= int(failing)
                script.in_flight += 1
                script.most_in_flight = max(script.most_in_flight, script.in_flight)
            time.sleep(script.delay)
            with script.lock:  # counted out before answering, so the client's next request cannot overlap
                script.in_flight -= 1
            if failing:
                self.send(script.status, {"error": {"message": "scripted failure"}})
            elif body["model"] not in ("base", "cna-m0"):
                self.send(404, {"error": {"message": f"The model `{body['model']}` does not exist."}})
            else:
                self.send(200, self.completion(body))

        def completion(self, body: dict[str, Any]) -> dict[str, Any]:
            text, ids, finished = reply_for(body)
            choice: dict[str, Any] = {"index": 0, "finish_reason": "stop" if finished else "length"}
            choice |= {"stop_reason": None} if finished else {}
            choice |= (
                {"message": {"role": "assistant", "content": text}} if "messages" in body else {"text": text}
            )
            if script.with_ids:
                choice["token_ids"] = ids
            return {"choices": [choice], "usage": {"completion_tokens": len(ids)}}

    return Handler


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up (the timeout test) leaves a broken pipe behind; that is expected


@pytest.fixture
def server() -> Iterator[tuple[str, Script]]:
    script = Script()
    httpd = QuietServer(("127.0.0.1", 0), handler_for(script))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", script
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_replies_come_back_in_prompt_order_with_concurrency(server: tuple[str, Script]) -> None:
    url, script = server
    script.delay = 0.05
    prompts = [f"prompt number {i}" for i in range(12)]
    out = generate_remote(Endpoint(url, concurrency=4), prompts, model="cna-m0", max_new_tokens=64)
    assert [g.prompt for g in out] == prompts
    assert [g.text for g in out] == [f"cna-m0:{p[::-1]}" for p in prompts]
    assert all(g.finished and g.token_ids == [ord(c) for c in g.text] for g in out)  # end of turn left out
    assert 2 <= script.most_in_flight <= 4


def test_request_fields_follow_the_generation_options(server: tuple[str, Script]) -> None:
    url, script = server
    out = generate_remote(url, ["hello"], max_new_tokens=5, system_prompt="Be brief.", seed=7)
    assert out[0].text == "base:" and not out[0].finished  # no model named: the server's first one
    body = script.bodies[-1]
    assert script.paths[-1] == "/v1/chat/completions"
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hello"},
    ]
    assert body["temperature"] == 0.0 and body["max_tokens"] == 5 and body["seed"] == 7
    assert body["return_token_ids"] is True and body["repetition_penalty"] == 1.0
    generate_remote(
        Endpoint(url, extra_body={}),
        ["x"],
        model="base",
        greedy=False,
        temperature=0.7,
        top_p=0.9,
        chat=False,
        system_prompt="S",
        stop_at_eos=False,
    )
    body = script.bodies[-1]
    assert script.paths[-1] == "/v1/completions" and body["prompt"] == "S\n\nx"
    assert body["temperature"] == 0.7 and body["top_p"] == 0.9 and body["ignore_eos"] is True
    assert "return_token_ids" not in body


def test_token_ids_from_a_tokenizer_when_the_server_sends_none(server: tuple[str, Script]) -> None:
    url, script = server
    script.with_ids = False

    class Chars:
        def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
            return [ord(c) for c in text]

    assert generate_remote(url, ["ab"], model="base")[0].token_ids == []
    assert generate_remote(url, ["ab"], model="base", tokenizer=Chars())[0].token_ids == [
        ord(c) for c in "base:ba"
    ]


def test_transient_failures_are_retried(server: tuple[str, Script]) -> None:
    url, script = server
    script.fail = 2
    out = generate_remote(Endpoint(url, retries=2, backoff=0.01), ["one"], model="base")
    assert out[0].text == "base:eno" and len(script.bodies) == 3
    script.fail, script.status = 5, 429
    with pytest.raises(EndpointError, match=r"after 2 tries \(last: HTTP 429: scripted failure\)"):
        generate_remote(Endpoint(url, retries=1, backoff=0.01), ["one"], model="base")


def test_client_errors_are_not_retried_and_say_what_the_server_said(server: tuple[str, Script]) -> None:
    url, script = server
    with pytest.raises(EndpointError, match="HTTP 404: The model `cna-m9` does not exist"):
        generate_remote(Endpoint(url, retries=3), ["a", "b", "c"], model="cna-m9")
    assert len(script.bodies) <= 3  # one try per prompt at most, none repeated
    assert served_models(Endpoint(url)) == ["base", "cna-m0"]


def test_unreachable_server_and_bad_settings() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # a port nobody listens on once the socket closes
    with pytest.raises(EndpointError, match="Is the server running"):
        generate_remote(Endpoint(f"http://127.0.0.1:{port}/v1", retries=1, backoff=0.01), ["a"], model="x")
    with pytest.raises(ConfigError, match="http"):
        Endpoint("127.0.0.1:8000/v1")
    with pytest.raises(ConfigError, match="concurrency"):
        Endpoint("http://127.0.0.1:8000/v1", concurrency=0)
    with pytest.raises(ConfigError, match="max_new_tokens"):
        generate_remote("http://127.0.0.1:8000/v1", ["a"], model="x", max_new_tokens=0)
    with pytest.raises(ConfigError, match="wrap a single prompt"):
        generate_remote("http://127.0.0.1:8000/v1", "a", model="x")
    assert generate_remote("http://127.0.0.1:8000/v1", [], model="x") == []


def test_a_slow_answer_is_an_error_not_a_retry(server: tuple[str, Script]) -> None:
    url, script = server
    script.delay = 0.5
    with pytest.raises(EndpointError, match=r"did not answer within 0.1 s"):
        generate_remote(Endpoint(url, timeout=0.1, retries=3), ["a"], model="base")
    assert len(script.bodies) == 1  # a busy server is not sent the same request again
