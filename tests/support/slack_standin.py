"""A local stand-in for the Slack Web API, for tests that drive the real slack_sdk WebClient.

It answers the methods the project uses, checks the bot token, knows a few
channels, records every request in ``calls`` (tests assert on what it received),
and can be scripted to fail the next calls, optionally only those to one method:
HTTP 429 with Retry-After or HTTP 5xx (``fail_next``), a Slack refusal such as
``missing_scope`` (``refuse_next``), an answer that comes too late for the client's
timeout (``delay_next``) or never comes (``drop_next``: the connection is closed). A
delayed or dropped request is carried out first, as Slack would have done.

What it checks, as Slack does:

* every Web API method needs the bot token (``Authorization: Bearer``);
* ``chat.postMessage`` / ``chat.update``: a known channel (name or ID); at most 50
  blocks, section text at most 3,000 characters, header text at most 150, section
  fields at most 2,000 each and 10 in all, context elements at most 10: else
  ``invalid_blocks`` with the reasons in ``response_metadata.messages``; ``text`` at
  most 40,000 characters (``msg_too_long``);
* ``conversations.list``: one channel per page with ``response_metadata.next_cursor``
  (pagination is exercised), ``types`` and ``exclude_archived`` honoured;
* ``conversations.history``: a channel *ID*; the channel's messages newest first, ``limit``
  a page (``next_cursor``), each message's ``metadata`` only with ``include_all_metadata``
  (messages keep the ``metadata`` they were posted or last updated with);
* ``conversations.replies``: a channel *ID* and the ``ts`` of one of its messages
  (else ``thread_not_found``); the message, then one reply per file shared into its thread
  (``files``: id, name, title), ``limit`` a page (``next_cursor``);
* ``files.getUploadURLExternal``: ``filename`` and ``length``; answers an ``upload_url``
  on this server (``/upload/<file_id>``, no token needed, like Slack's pre-signed URL);
* the upload POST: the raw bytes are recorded (``Call.raw``), answered ``OK - <n>``;
* ``files.completeUploadExternal``: ``channel_id`` must be a channel *ID* the workspace
  has (a name is ``channel_not_found``), every file must have been uploaded with the
  announced length, ``thread_ts`` must be a message in that channel.

The SDK sends every Web API call as a POST, whatever the method's documented verb:
form-encoded (``conversations.list``, the ``files.*`` methods) or JSON
(``chat.postMessage``, ``chat.update``).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

VALID_TOKEN = "xoxb-test-token"
CHANNELS = {
    "#growth": "C0GROWTH",
    "growth": "C0GROWTH",
    "C0GROWTH": "C0GROWTH",
    "#alerts": "C0ALERTS",
    "alerts": "C0ALERTS",
    "C0ALERTS": "C0ALERTS",
    "#growth-private": "G0PRIVATE",
    "growth-private": "G0PRIVATE",
    "G0PRIVATE": "G0PRIVATE",
}
"""What chat.postMessage accepts as ``channel`` (Slack takes names and IDs there)."""

CONVERSATIONS: list[dict[str, Any]] = [
    {"id": "C0ALERTS", "name": "alerts", "is_private": False, "is_archived": False},
    {"id": "C0OLDGROWTH", "name": "old-growth", "is_private": False, "is_archived": True},
    {"id": "G0PRIVATE", "name": "growth-private", "is_private": True, "is_archived": False},
    {"id": "C0GROWTH", "name": "growth", "is_private": False, "is_archived": False},
]
"""What conversations.list pages through, one per page; #growth comes last."""

CHANNEL_IDS = {c["id"] for c in CONVERSATIONS if not c["is_archived"]}

MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3000
MAX_HEADER_TEXT = 150
MAX_FIELD_TEXT = 2000
MAX_FIELDS = 10
MAX_CONTEXT_ELEMENTS = 10
MAX_MESSAGE_TEXT = 40000


@dataclass
class Call:
    """One request as the server received it. ``body`` holds the parsed parameters (for the
    upload POST: ``file_id`` and ``length``); ``raw`` the request's bytes."""

    method: str
    token: str | None
    body: dict[str, Any]
    raw: bytes = b""
    path: str = ""


def block_errors(blocks: Any) -> list[str]:
    """Why Slack would answer ``invalid_blocks`` to these blocks (empty when it would not)."""
    if isinstance(blocks, str):
        try:
            blocks = json.loads(blocks)
        except ValueError:
            return ["[ERROR] blocks is not valid JSON"]
    if not isinstance(blocks, list):
        return ["[ERROR] blocks must be an array"]
    errors: list[str] = []
    if len(blocks) > MAX_BLOCKS:
        errors.append(f"[ERROR] no more than {MAX_BLOCKS} items allowed [json-pointer:/blocks]")
    for i, block in enumerate(blocks):
        where = f"/blocks/{i}"
        if not isinstance(block, dict) or "type" not in block:
            errors.append(f"[ERROR] missing required field: type [json-pointer:{where}]")
            continue
        kind = block["type"]
        text = (block.get("text") or {}).get("text", "") if isinstance(block.get("text"), dict) else ""
        if kind == "section":
            if len(text) > MAX_SECTION_TEXT:
                errors.append(
                    f"[ERROR] must be less than {MAX_SECTION_TEXT + 1} characters "
                    f"[json-pointer:{where}/text/text]"
                )
            fields = block.get("fields") or []
            if len(fields) > MAX_FIELDS:
                errors.append(f"[ERROR] no more than {MAX_FIELDS} items allowed [json-pointer:{where}/fields]")
            for j, f in enumerate(fields):
                if len(str(f.get("text", ""))) > MAX_FIELD_TEXT:
                    errors.append(
                        f"[ERROR] must be less than {MAX_FIELD_TEXT + 1} characters "
                        f"[json-pointer:{where}/fields/{j}/text]"
                    )
            if not text and not fields:
                errors.append(f"[ERROR] must provide text or fields [json-pointer:{where}]")
        elif kind == "header":
            if len(text) > MAX_HEADER_TEXT:
                errors.append(
                    f"[ERROR] must be less than {MAX_HEADER_TEXT + 1} characters "
                    f"[json-pointer:{where}/text/text]"
                )
        elif kind == "context":
            elements = block.get("elements") or []
            if len(elements) > MAX_CONTEXT_ELEMENTS:
                errors.append(
                    f"[ERROR] no more than {MAX_CONTEXT_ELEMENTS} items allowed "
                    f"[json-pointer:{where}/elements]"
                )
            for j, element in enumerate(elements):
                if len(str(element.get("text", ""))) > MAX_SECTION_TEXT:
                    errors.append(
                        f"[ERROR] must be less than {MAX_SECTION_TEXT + 1} characters "
                        f"[json-pointer:{where}/elements/{j}/text]"
                    )
    return errors


@dataclass
class SlackStandIn:
    host: str = "127.0.0.1"
    token: str = VALID_TOKEN  # the one bot token it accepts
    calls: list[Call] = field(default_factory=list)
    failures: list[tuple[int, dict[str, str], str | None]] = field(default_factory=list)
    messages: dict[str, dict[str, Any]] = field(default_factory=dict)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    refusals: list[tuple[str, dict[str, Any], str | None]] = field(default_factory=list)
    answers: list[tuple[str, float, str | None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._ts = itertools.count(1)
        self._file_ids = itertools.count(1)
        self._lock = threading.Lock()
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                url = urlsplit(self.path)
                if url.path.startswith("/upload/"):
                    file_id = url.path.rsplit("/", 1)[-1]
                    status, headers, payload = standin._upload(file_id, raw, self.path)
                    self._reply(status, headers, payload.encode(), "text/plain; charset=utf-8")
                    return
                text = raw.decode("utf-8")
                if "json" in (self.headers.get("Content-Type") or ""):
                    body = json.loads(text or "{}")
                else:
                    body = {k: v[0] for k, v in parse_qs(text).items()}
                body.update({k: v[0] for k, v in parse_qs(url.query).items() if k not in body})
                auth = self.headers.get("Authorization") or ""
                token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else body.get("token")
                method = url.path.rsplit("/", 1)[-1]
                status, headers, answer = standin._answer(method, token, body, raw, self.path)
                late = standin._take_answer(method)
                if late is not None and late[0] == "drop":  # carried out, never answered
                    self.close_connection = True
                    return
                if late is not None:
                    time.sleep(late[1])
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up waiting
                    self._reply(status, headers, json.dumps(answer).encode(), "application/json; charset=utf-8")

            def _reply(self, status: int, headers: dict[str, str], data: bytes, content_type: str) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer((self.host, 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def root(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/"

    @property
    def url(self) -> str:
        return f"{self.root}api/"

    def start(self) -> SlackStandIn:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def fail_next(
        self,
        status: int,
        headers: dict[str, str] | None = None,
        times: int = 1,
        method: str | None = None,
    ) -> None:
        """Answer the next ``times`` requests (to ``method`` only, when given; ``"upload"``
        for the file bytes' POST) with HTTP ``status``."""
        self.failures.extend([(status, headers or {}, method)] * times)

    def refuse_next(self, error: str, times: int = 1, method: str | None = None, **extra: Any) -> None:
        """Answer the next ``times`` API calls (to ``method`` only, when given) with HTTP 200
        ``{"ok": false, "error": error, **extra}`` (e.g. ``missing_scope``, ``needed=...``)."""
        self.refusals.extend([(error, extra, method)] * times)

    def delay_next(self, seconds: float, times: int = 1, method: str | None = None) -> None:
        """Carry out the next ``times`` API calls, then wait ``seconds`` before answering."""
        self.answers.extend([("delay", seconds, method)] * times)

    def drop_next(self, times: int = 1, method: str | None = None) -> None:
        """Carry out the next ``times`` API calls, then close the connection without an answer."""
        self.answers.extend([("drop", 0.0, method)] * times)

    def calls_to(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def channel_messages(self, channel_id: str) -> list[dict[str, Any]]:
        """The messages of a channel (by ID), oldest first, each with its ``ts``."""
        return [{**m, "ts": ts} for ts, m in sorted(self.messages.items()) if m.get("channel_id") == channel_id]

    # ----------------------------------------------------------------------- answers

    def _take_failure(self, method: str) -> tuple[int, dict[str, str]] | None:
        for i, (status, headers, only) in enumerate(self.failures):
            if only is None or only == method:
                del self.failures[i]
                return status, headers
        return None

    def _take_answer(self, method: str) -> tuple[str, float] | None:
        with self._lock:
            for i, (kind, seconds, only) in enumerate(self.answers):
                if only is None or only == method:
                    del self.answers[i]
                    return kind, seconds
        return None

    def _take_refusal(self, method: str) -> dict[str, Any] | None:
        for i, (error, extra, only) in enumerate(self.refusals):
            if only is None or only == method:
                del self.refusals[i]
                return {"ok": False, "error": error, **extra}
        return None

    def _upload(self, file_id: str, raw: bytes, path: str) -> tuple[int, dict[str, str], str]:
        with self._lock:
            self.calls.append(Call("upload", None, {"file_id": file_id, "length": len(raw)}, raw, path))
            failure = self._take_failure("upload")
            if failure is not None:
                return failure[0], failure[1], "error"
            pending = self.files.get(file_id)
            if pending is None:
                return 404, {}, "file not found"
            pending["content"] = raw
            return 200, {}, f"OK - {len(raw)}"

    def _answer(
        self, method: str, token: str | None, body: dict[str, Any], raw: bytes, path: str
    ) -> tuple[int, dict[str, str], dict]:
        with self._lock:
            self.calls.append(Call(method, token, body, raw, path))
            failure = self._take_failure(method)
            if failure is not None:
                status, headers = failure
                return status, headers, {"ok": False, "error": "ratelimited" if status == 429 else "internal_error"}
            if token != self.token:
                return 200, {}, {"ok": False, "error": "invalid_auth"}
            refusal = self._take_refusal(method)
            if refusal is not None:
                return 200, {}, refusal
            if method == "auth.test":
                return 200, {}, {"ok": True, "team": "test", "user": "growth-bot"}
            if method in {"chat.postMessage", "chat.update"}:
                return self._chat(method, body)
            if method == "conversations.list":
                return self._conversations_list(body)
            if method == "conversations.history":
                return self._conversations_history(body)
            if method == "conversations.replies":
                return self._conversations_replies(body)
            if method == "files.getUploadURLExternal":
                return self._get_upload_url(body)
            if method == "files.completeUploadExternal":
                return self._complete_upload(body)
            return 200, {}, {"ok": False, "error": "unknown_method"}

    def _chat(self, method: str, body: dict[str, Any]) -> tuple[int, dict[str, str], dict]:
        channel = CHANNELS.get(str(body.get("channel", "")))
        if channel is None:
            return 200, {}, {"ok": False, "error": "channel_not_found"}
        if len(str(body.get("text") or "")) > MAX_MESSAGE_TEXT:
            return 200, {}, {"ok": False, "error": "msg_too_long"}
        if "blocks" in body:
            errors = block_errors(body["blocks"])
            if errors:
                return 200, {}, {"ok": False, "error": "invalid_blocks", "response_metadata": {"messages": errors}}
        if method == "chat.postMessage":
            ts = f"1700000000.{next(self._ts):06d}"
            self.messages[ts] = {**body, "channel_id": channel}
            return 200, {}, {"ok": True, "channel": channel, "ts": ts, "message": {"text": body.get("text")}}
        ts = str(body.get("ts"))
        if ts not in self.messages:
            return 200, {}, {"ok": False, "error": "message_not_found"}
        self.messages[ts] = {**body, "channel_id": channel}
        return 200, {}, {"ok": True, "channel": channel, "ts": ts}

    def _conversations_list(self, body: dict[str, Any]) -> tuple[int, dict[str, str], dict]:
        types = set(str(body.get("types") or "public_channel").split(","))
        exclude_archived = str(body.get("exclude_archived", "")).lower() in {"1", "true"}
        visible = [
            c
            for c in CONVERSATIONS
            if ("private_channel" if c["is_private"] else "public_channel") in types
            and not (exclude_archived and c["is_archived"])
        ]
        cursor = str(body.get("cursor") or "")
        try:
            index = int(cursor.removeprefix("page-")) if cursor else 0
        except ValueError:
            return 200, {}, {"ok": False, "error": "invalid_cursor"}
        page = visible[index : index + 1]
        following = f"page-{index + 1}" if index + 1 < len(visible) else ""
        return 200, {}, {"ok": True, "channels": page, "response_metadata": {"next_cursor": following}}

    def _conversations_history(self, body: dict[str, Any]) -> tuple[int, dict[str, str], dict]:
        channel_id = str(body.get("channel") or "")
        if channel_id not in CHANNEL_IDS:
            return 200, {}, {"ok": False, "error": "channel_not_found"}
        with_metadata = str(body.get("include_all_metadata", "")).lower() in {"1", "true"}
        newest_first = list(reversed(self.channel_messages(channel_id)))
        try:
            limit = int(body.get("limit") or 100)
            start = int(str(body.get("cursor") or "hist-0").removeprefix("hist-"))
        except ValueError:
            return 200, {}, {"ok": False, "error": "invalid_cursor"}
        page = [
            {"type": "message", "ts": m["ts"], "text": m.get("text"),
             **({"metadata": m["metadata"]} if with_metadata and m.get("metadata") else {})}
            for m in newest_first[start : start + limit]
        ]
        following = f"hist-{start + limit}" if start + limit < len(newest_first) else ""
        return 200, {}, {"ok": True, "messages": page, "has_more": bool(following),
                         "response_metadata": {"next_cursor": following}}

    def _conversations_replies(self, body: dict[str, Any]) -> tuple[int, dict[str, str], dict]:
        channel_id, ts = str(body.get("channel") or ""), str(body.get("ts") or "")
        if channel_id not in CHANNEL_IDS:
            return 200, {}, {"ok": False, "error": "channel_not_found"}
        parent = self.messages.get(ts)
        if parent is None or parent.get("channel_id") != channel_id:
            return 200, {}, {"ok": False, "error": "thread_not_found"}
        thread = [{"type": "message", "ts": ts, "text": parent.get("text")}]
        for n, (file_id, f) in enumerate(sorted(self.files.items()), start=1):
            if f.get("shared") and f.get("channel_id") == channel_id and str(f.get("thread_ts")) == ts:
                thread.append({"type": "message", "ts": f"{ts[:-6]}{int(ts[-6:]) + n:06d}", "thread_ts": ts,
                               "files": [{"id": file_id, "name": f["filename"], "title": f["title"]}]})
        try:
            limit = int(body.get("limit") or 1000)
            start = int(str(body.get("cursor") or "rep-0").removeprefix("rep-"))
        except ValueError:
            return 200, {}, {"ok": False, "error": "invalid_cursor"}
        following = f"rep-{start + limit}" if start + limit < len(thread) else ""
        return 200, {}, {"ok": True, "messages": thread[start : start + limit], "has_more": bool(following),
                         "response_metadata": {"next_cursor": following}}

    def _get_upload_url(self, body: dict[str, Any]) -> tuple[int, dict[str, str], dict]:
        filename = body.get("filename")
        try:
            length = int(body.get("length", ""))
        except ValueError:
            return 200, {}, {"ok": False, "error": "invalid_arguments"}
        if not filename or length <= 0:
            return 200, {}, {"ok": False, "error": "invalid_arguments"}
        file_id = f"F{next(self._file_ids):07d}"
        self.files[file_id] = {"filename": filename, "length": length, "content": None}
        return 200, {}, {"ok": True, "upload_url": f"{self.root}upload/{file_id}", "file_id": file_id}

    def _complete_upload(self, body: dict[str, Any]) -> tuple[int, dict[str, str], dict]:
        channel_id = body.get("channel_id")
        if channel_id is not None and channel_id not in CHANNEL_IDS:
            return 200, {}, {"ok": False, "error": "channel_not_found"}
        thread_ts = body.get("thread_ts")
        if thread_ts is not None:
            message = self.messages.get(str(thread_ts))
            if message is None or message.get("channel_id") != channel_id:
                return 200, {}, {"ok": False, "error": "invalid_thread_ts"}
        try:
            entries = json.loads(body.get("files") or "[]")
        except ValueError:
            return 200, {}, {"ok": False, "error": "invalid_arguments"}
        shared = []
        for entry in entries:
            pending = self.files.get(str(entry.get("id")))
            if pending is None or pending["content"] is None:
                return 200, {}, {"ok": False, "error": "file_not_found"}
            if len(pending["content"]) != pending["length"]:
                return 200, {}, {"ok": False, "error": "file_size_mismatch"}
        for entry in entries:
            pending = self.files[str(entry["id"])]
            title = entry.get("title") or pending["filename"]
            pending.update({"title": title, "channel_id": channel_id, "thread_ts": thread_ts, "shared": True})
            shared.append({"id": entry["id"], "name": pending["filename"], "title": title})
        return 200, {}, {"ok": True, "files": shared}
