"""Publishing: the report file and the Slack message. One I/O concern: delivery."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

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
