"""Publishing: the report file and the Slack message. One I/O concern: delivery."""

from __future__ import annotations

import json
import logging
import os
import re
import time
from pathlib import Path
from urllib.error import HTTPError

from framework.errors import DeliveryError
from framework.report import Delivery

log = logging.getLogger("growth.publish")

DEFAULT_SLACK_API_URL = "https://slack.com/api/"


def write_report(report_json: str, path: str | Path) -> Path:
    """Write the JSON report atomically (write a temp file, then rename)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(report_json, encoding="utf-8")
    tmp.replace(target)
    return target


def write_blocks(blocks: list[dict], path: str | Path) -> Path:
    return write_report(json.dumps({"blocks": blocks}, indent=2, ensure_ascii=False) + "\n", path)


def slack_client(token: str, base_url: str | None = None, max_retries: int = 3):
    """A slack_sdk WebClient that retries rate limits, 5xx and connection errors (bounded)."""
    from slack_sdk import WebClient
    from slack_sdk.http_retry.builtin_handlers import (
        ConnectionErrorRetryHandler,
        RateLimitErrorRetryHandler,
        ServerErrorRetryHandler,
    )

    client = WebClient(
        token=token,
        base_url=base_url or os.environ.get("SLACK_API_URL") or DEFAULT_SLACK_API_URL,
        timeout=30,
    )
    client.retry_handlers = [
        ConnectionErrorRetryHandler(max_retry_count=max_retries),
        RateLimitErrorRetryHandler(max_retry_count=max_retries),
        ServerErrorRetryHandler(max_retry_count=max_retries),
    ]
    return client


def _call(channel: str, send):
    """Run one Slack call; Slack's refusals and transport failures become DeliveryError."""
    from slack_sdk.errors import SlackApiError, SlackClientError

    try:
        return send()
    except SlackApiError as exc:
        reason = exc.response.get("error", "unknown_error") if exc.response is not None else "unknown_error"
        raise DeliveryError(f"Slack refused the digest for {channel}: {reason}", reason=reason) from None
    except (SlackClientError, OSError) as exc:
        raise DeliveryError(f"Slack could not be reached for {channel}: {type(exc).__name__}") from None


def post_message(token: str, channel: str, text: str, blocks: list[dict], base_url: str | None = None) -> Delivery:
    """Post the digest with chat.postMessage. Raises DeliveryError with Slack's reason."""
    delivery, _ = deliver(token, channel, text, blocks, base_url=base_url)
    return delivery


def deliver(
    token: str,
    channel: str,
    text: str,
    blocks: list[dict],
    previous_channel_id: str | None = None,
    previous_ts: str | None = None,
    base_url: str | None = None,
) -> tuple[Delivery, str | None]:
    """Exactly once per (framework, as_of, channel): update the earlier message when there is
    one (chat.update), else post (chat.postMessage). Returns the delivery and the channel ID."""
    client = slack_client(token, base_url)
    if previous_ts and previous_channel_id:
        try:
            response = _call(channel, lambda: client.chat_update(
                channel=previous_channel_id, ts=previous_ts, text=text, blocks=blocks))
            log.info("updated the digest in %s (ts %s)", channel, previous_ts)
            return Delivery(channel=channel, status="updated", ts=previous_ts), response.get("channel")
        except DeliveryError as exc:
            if exc.reason not in {"message_not_found", "cant_update_message"}:
                raise
            log.warning("the earlier digest in %s is gone (%s): posting anew", channel, exc.reason)
    response = _call(channel, lambda: client.chat_postMessage(
        channel=channel, text=text, blocks=blocks, unfurl_links=False))
    ts = response.get("ts")
    log.info("posted the digest to %s (ts %s)", channel, ts)
    return Delivery(channel=channel, status="posted", ts=ts), response.get("channel")


# --------------------------------------------------------------------------- channels, chart, alert

CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{6,}$")
"""A Slack conversation ID: public (C), private (G) or direct (D). Channel names are lower case."""

MAX_CHANNEL_PAGES = 100
UPLOAD_ATTEMPTS = 2
RETRY_UPLOAD_STATUSES = {429, 500, 502, 503, 504}
"""The file bytes go to a pre-signed URL that the SDK's retry handlers do not cover: one more
attempt of the whole upload after a 429/5xx there (nothing is shared before the last step)."""

_HINTS = {
    "invalid_auth": "check SLACK_BOT_TOKEN or the Secret block 'slack-bot-token'",
    "not_authed": "check SLACK_BOT_TOKEN or the Secret block 'slack-bot-token'",
    "token_revoked": "the bot token was revoked: install the app again",
    "account_inactive": "the bot token was revoked: install the app again",
    "not_in_channel": "invite the bot to the channel",
    "channel_not_found": "is the bot invited?",
}


def _slack_call(subject: str, send):
    """Like :func:`_call` for the calls added here: Slack's refusals, rejected upload bytes
    and transport failures become DeliveryError with a reason; the token is never echoed."""
    from slack_sdk.errors import SlackApiError, SlackClientError, SlackRequestError

    try:
        return send()
    except SlackApiError as exc:
        response = exc.response
        reason = response.get("error", "unknown_error") if response is not None else "unknown_error"
        hint = _HINTS.get(reason)
        if reason == "missing_scope" and response is not None and response.get("needed"):
            hint = f"the bot token needs the scope {response.get('needed')}"
        message = f"Slack refused {subject}: {reason}" + (f" ({hint})" if hint else "")
        raise DeliveryError(message, reason=reason) from None
    except HTTPError as exc:  # only the upload of the bytes raises it (API calls answer errors)
        raise DeliveryError(
            f"Slack rejected the file bytes of {subject}: HTTP {exc.code}", reason="upload_failed"
        ) from None
    except SlackRequestError as exc:
        raise DeliveryError(f"Slack could not take {subject}: {exc}", reason="upload_failed") from None
    except (SlackClientError, OSError) as exc:
        raise DeliveryError(
            f"Slack could not be reached for {subject}: {type(exc).__name__}",
            reason="connection_error",
        ) from None


def resolve_channel_id(client, channel: str) -> str:
    """The conversation ID of ``channel``: an ID (C…, G…, D…) passes through; a name
    ('#growth' or 'growth') is looked up with conversations.list (public and private
    channels the bot can see, archived excluded, all pages). Raises DeliveryError."""
    channel = channel.strip()
    if CHANNEL_ID.match(channel):
        return channel
    name = channel.removeprefix("#").lower()
    cursor: str | None = None
    for _ in range(MAX_CHANNEL_PAGES):
        response = _slack_call(
            f"the channel list (looking up {channel})",
            lambda cursor=cursor: client.conversations_list(
                types="public_channel,private_channel",
                exclude_archived=True,
                limit=200,
                cursor=cursor,
            ),
        )
        for conversation in response.get("channels") or []:
            if str(conversation.get("name", "")).lower() == name and conversation.get("id"):
                return str(conversation["id"])
        cursor = (response.get("response_metadata") or {}).get("next_cursor") or None
        if not cursor:
            break
    raise DeliveryError(
        f"Slack channel {channel} not found (is the bot invited?)", reason="channel_not_found"
    )


def upload_chart(
    token: str,
    channel: str,
    thread_ts: str,
    png_path: str | Path,
    title: str,
    base_url: str | None = None,
) -> str | None:
    """Upload the funnel chart into the digest's thread with files_upload_v2
    (files.getUploadURLExternal, the bytes to the returned URL, files.completeUploadExternal,
    which needs a channel ID: names are resolved). Returns the file ID. Raises DeliveryError.

    Not idempotent by itself: on a re-run that updated the digest, the chart is already
    in the thread (skip the upload, or accept a second copy)."""
    path = Path(png_path)
    if not path.is_file():
        raise DeliveryError(f"the chart {path} does not exist", reason="chart_missing")
    client = slack_client(token, base_url)
    channel_id = resolve_channel_id(client, channel)

    def send():
        for attempt in range(1, UPLOAD_ATTEMPTS + 1):
            try:
                return client.files_upload_v2(
                    channel=channel_id,
                    thread_ts=thread_ts,
                    file=str(path),
                    filename=path.name,
                    title=title,
                    initial_comment=None,
                )
            except HTTPError as exc:  # the bytes' POST: not covered by the retry handlers
                if attempt == UPLOAD_ATTEMPTS or exc.code not in RETRY_UPLOAD_STATUSES:
                    raise
                wait = _retry_after(exc)
                log.warning("Slack answered HTTP %s to the chart bytes: again in %.0f s", exc.code, wait)
                time.sleep(wait)
        raise AssertionError("unreachable")

    response = _slack_call(f"the chart upload to {channel}", send)
    file = response.get("file") or next(iter(response.get("files") or []), None) or {}
    file_id = file.get("id")
    log.info("uploaded the chart to %s (thread %s, file %s)", channel, thread_ts, file_id)
    return file_id


def _retry_after(exc: HTTPError, default: float = 1.0, cap: float = 30.0) -> float:
    try:
        return min(cap, max(0.0, float(exc.headers.get("Retry-After", default))))
    except (TypeError, ValueError, AttributeError):
        return default
