"""A local stand-in for the Slack Web API, for tests that drive the real slack_sdk WebClient.

It answers the methods the project uses, checks the bot token, knows a few
channels, records every request, and can be told to fail the next calls
(HTTP 429 with Retry-After, HTTP 5xx) to exercise the client's retries.
"""

from __future__ import annotations

import itertools
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

VALID_TOKEN = "xoxb-test-token"
CHANNELS = {"#growth": "C0GROWTH", "growth": "C0GROWTH", "C0GROWTH": "C0GROWTH", "#alerts": "C0ALERTS"}


@dataclass
class Call:
    method: str
    token: str | None
    body: dict[str, Any]


@dataclass
class SlackStandIn:
    host: str = "127.0.0.1"
    calls: list[Call] = field(default_factory=list)
    failures: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    messages: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._ts = itertools.count(1)
        self._lock = threading.Lock()
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode("utf-8") if length else ""
                if "json" in (self.headers.get("Content-Type") or ""):
                    body = json.loads(raw or "{}")
                else:
                    body = {k: v[0] for k, v in parse_qs(raw).items()}
                auth = self.headers.get("Authorization") or ""
                token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else body.get("token")
                method = self.path.rsplit("/", 1)[-1]
                status, headers, payload = standin._answer(method, token, body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer((self.host, 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/api/"

    def start(self) -> SlackStandIn:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def fail_next(self, status: int, headers: dict[str, str] | None = None, times: int = 1) -> None:
        self.failures.extend([(status, headers or {})] * times)

    def calls_to(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def _answer(self, method: str, token: str | None, body: dict[str, Any]) -> tuple[int, dict[str, str], dict]:
        with self._lock:
            self.calls.append(Call(method, token, body))
            if self.failures:
                status, headers = self.failures.pop(0)
                return status, headers, {"ok": False, "error": "ratelimited" if status == 429 else "internal_error"}
            if token != VALID_TOKEN:
                return 200, {}, {"ok": False, "error": "invalid_auth"}
            if method == "auth.test":
                return 200, {}, {"ok": True, "team": "test", "user": "growth-bot"}
            channel = CHANNELS.get(str(body.get("channel", "")))
            if method in {"chat.postMessage", "chat.update"} and channel is None:
                return 200, {}, {"ok": False, "error": "channel_not_found"}
            if method == "chat.postMessage":
                ts = f"1700000000.{next(self._ts):06d}"
                self.messages[ts] = {"channel": channel, **body}
                return 200, {}, {"ok": True, "channel": channel, "ts": ts, "message": {"text": body.get("text")}}
            if method == "chat.update":
                ts = str(body.get("ts"))
                if ts not in self.messages:
                    return 200, {}, {"ok": False, "error": "message_not_found"}
                self.messages[ts] = {"channel": channel, **body}
                return 200, {}, {"ok": True, "channel": channel, "ts": ts}
            return 200, {}, {"ok": False, "error": "unknown_method"}
