"""A local OpenAI-compatible chat-completions server for tests (no network).

It plays a calculator: asked anything, it calls the `add` tool on the two numbers in the
user's message; given the tool's result, it answers with it. On `/embeddings` it answers
with hashed bag-of-words vectors (64 dims: texts sharing words are close). It can fail its
first N requests with HTTP 503, and it records every request it got.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class StubState:
    fail_first: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _reply(body: dict[str, Any]) -> dict[str, Any]:
    messages = body["messages"]
    tool_results = [m for m in messages if m.get("role") == "tool"]
    base = {
        "id": f"chatcmpl-{len(messages)}",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": body["model"],
        "usage": {"prompt_tokens": 30 + len(messages), "completion_tokens": 7, "total_tokens": 37},
    }
    if tool_results:
        message = {"role": "assistant", "content": f"The stub says {tool_results[-1]['content']}."}
        finish = "stop"
    else:
        user = [m for m in messages if m.get("role") == "user"][-1]["content"]
        text = user if isinstance(user, str) else json.dumps(user)
        a, b = (float(n) for n in re.findall(r"-?\d+(?:\.\d+)?", text)[:2])
        message = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": f"call_{len(messages)}",
                    "type": "function",
                    "function": {"name": "add", "arguments": json.dumps({"a": a, "b": b})},
                }
            ],
        }
        finish = "tool_calls"
    return {**base, "choices": [{"index": 0, "message": message, "finish_reason": finish}]}


EMBEDDING_DIMS = 64


def _embedding(text: str) -> list[float]:
    import hashlib

    vector = [0.0] * EMBEDDING_DIMS
    for word in re.findall(r"[a-z0-9]+", text.lower()):
        digest = hashlib.sha256(word.encode()).digest()
        vector[digest[0] % EMBEDDING_DIMS] += 1.0 if digest[1] % 2 else -1.0
    return vector


def _embeddings(body: dict[str, Any]) -> dict[str, Any]:
    inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
    return {
        "object": "list",
        "model": body["model"],
        "data": [
            {"object": "embedding", "index": i, "embedding": _embedding(t)}
            for i, t in enumerate(inputs)
        ],
        "usage": {"prompt_tokens": 1, "total_tokens": 1},
    }


@contextmanager
def openai_stub(fail_first: int = 0, port: int = 0) -> Iterator[tuple[str, StubState]]:
    """Serve on 127.0.0.1 (on `port`, 0: any free one); yields (base_url, state)."""
    state = StubState(fail_first=fail_first)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            body = json.loads(self.rfile.read(length))
            with state.lock:
                state.requests.append(body)
                failing = len(state.requests) <= state.fail_first
            if not self.path.endswith(("/chat/completions", "/embeddings")):
                self.send_response(404)
                self.end_headers()
                return
            if failing:
                payload = json.dumps({"error": {"message": "overloaded", "type": "server_error"}})
                status = 503
            elif self.path.endswith("/embeddings"):
                payload = json.dumps(_embeddings(body))
                status = 200
            else:
                payload = json.dumps(_reply(body))
                status = 200
            data = payload.encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", state
    finally:
        server.shutdown()
        server.server_close()
