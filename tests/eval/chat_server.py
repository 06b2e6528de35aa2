"""A local OpenAI-compatible chat server for tests: `POST /v1/chat/completions` on 127.0.0.1.

A `ThreadingHTTPServer` on a free port, answering with the OpenAI chat-completion JSON; the reply
text comes from `respond(request_json) -> str` (a scripted responder or a real local model). With
`fail="500"` it answers HTTP 500, with `fail="json"` a body that is not JSON. Every request body is
kept in `requests`, so a test can check what the client sent.
"""

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ChatServer:
    def __init__(self, respond: Callable[[dict], str], fail: str | None = None):
        self.respond, self.fail, self.requests = respond, fail, []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep pytest's output clean
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                server.requests.append({"path": self.path, "body": body})
                if self.path.rstrip("/") != "/v1/chat/completions":
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                if server.fail == "500":
                    return self._send(500, {"error": {"message": "scripted failure"}})
                if server.fail == "json":
                    return self._send(200, b"{this is not json", raw=True)
                return self._send(200, completion(server.respond(body), body.get("model") or "scripted"))

            def _send(self, status: int, payload, raw: bool = False) -> None:
                data = payload if raw else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "ChatServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


def completion(text: str, model: str) -> dict:
    """OpenAI's chat.completion object holding one assistant message."""
    return {
        "id": "chatcmpl-local",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "local-test",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }
