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
from tasks.faults import fault_point

log = logging.getLogger("growth.publish")

DEFAULT_SLACK_API_URL = "https://slack.com/api/"
SLACK_TIMEOUT_ENV = "GROWTH_SLACK_TIMEOUT"
DEFAULT_SLACK_TIMEOUT = 30
"""Seconds to wait for one Slack answer (``GROWTH_SLACK_TIMEOUT`` overrides it)."""
DIGEST_EVENT = "growth_digest"
"""The message metadata event type that marks a digest, so that an earlier post whose answer
was lost (a timeout, a killed process) is found again instead of posted twice."""
POST_ATTEMPTS = 2
ALERT_TEXT_CHARS = 3000
"""The quality alert's notification text at most (Slack truncates text past 40,000 and
advises under 4,000; the blocks carry the details)."""
HISTORY_PAGES = 5
CHART_OWED = "chart_owed"
"""gf_deliveries.status of a digest that is in Slack (its ts recorded) but whose funnel chart
is not yet in its thread."""


def check_writable(path: str | Path, label: str) -> None:
    """Raise UsageError (exit 2) when an output file cannot be written there: before a run, so
    that it fails in a second and not after it has computed, stored and posted everything."""
    from framework.errors import UsageError

    target = Path(path)
    probe = target.with_name(target.name + ".probe")
    try:
        if target.is_dir():
            raise IsADirectoryError(21, "is a directory")
        target.parent.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UsageError(f"{label} {path}: cannot write there ({exc.strerror or exc})") from None


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


def _timeout() -> float:
    try:
        value = float(os.environ.get(SLACK_TIMEOUT_ENV) or DEFAULT_SLACK_TIMEOUT)
    except ValueError:
        return DEFAULT_SLACK_TIMEOUT
    return value if value > 0 else DEFAULT_SLACK_TIMEOUT


def slack_client(token: str, base_url: str | None = None, max_retries: int = 3, safe_only: bool = False):
    """A slack_sdk WebClient that retries rate limits, 5xx and connection errors (bounded).

    ``safe_only``: retry only failures where Slack cannot have acted on the request (a
    connection that could not be made or a request that could not be sent, 429, 5xx); a
    dropped or timed-out *answer* is left to the caller, for calls that are not idempotent
    (chat.postMessage: the message may exist)."""
    from urllib.error import URLError

    from slack_sdk import WebClient
    from slack_sdk.http_retry.builtin_handlers import (
        ConnectionErrorRetryHandler,
        RateLimitErrorRetryHandler,
        ServerErrorRetryHandler,
    )

    client = WebClient(
        token=token,
        base_url=base_url or os.environ.get("SLACK_API_URL") or DEFAULT_SLACK_API_URL,
        timeout=_timeout(),
    )
    connection = (
        ConnectionErrorRetryHandler(max_retry_count=max_retries, error_types=[URLError])
        if safe_only
        else ConnectionErrorRetryHandler(max_retry_count=max_retries)
    )
    client.retry_handlers = [
        connection,
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
        raise DeliveryError(
            f"Slack could not be reached for {channel}: {type(exc).__name__}", reason="connection_error"
        ) from None


def post_message(token: str, channel: str, text: str, blocks: list[dict], base_url: str | None = None) -> Delivery:
    """Post the digest with chat.postMessage. Raises DeliveryError with Slack's reason."""
    delivery, _ = deliver(token, channel, text, blocks, base_url=base_url)
    return delivery


AMBIGUOUS_STATUSES = {502, 504}
"""A gateway's error: the request may have reached Slack and been carried out."""


def _ambiguous(exc: BaseException) -> bool:
    """A failure after the request was sent: Slack may have acted on it (a timed-out or
    dropped answer, a gateway's 502/504). Connection failures before sending come as
    URLError and are not; 500/503 are retried by the client (slack_sdk's ServerErrorRetryHandler)."""
    from http.client import HTTPException
    from urllib.error import URLError

    from slack_sdk.errors import SlackApiError

    if isinstance(exc, SlackApiError):
        return getattr(exc.response, "status_code", None) in AMBIGUOUS_STATUSES
    return isinstance(exc, OSError | HTTPException) and not isinstance(exc, URLError)


def digest_marker(framework: str, as_of: str, channel: str) -> dict:
    """The message metadata of one digest (framework, as_of, channel): how an earlier post of it is
    recognised in the channel's history."""
    return {"event_type": DIGEST_EVENT,
            "event_payload": {"framework": framework, "as_of": str(as_of), "channel": channel}}


def find_posted(client, channel: str, marker: dict) -> tuple[str, str] | None:
    """(channel ID, ts) of a message in ``channel``'s recent history that carries ``marker``
    (conversations.history, the newest HISTORY_PAGES x 200 messages), else None.
    Needs the scope channels:history (groups:history for a private channel)."""
    channel_id = resolve_channel_id(client, channel)
    history = _messages(f"the history of {channel}", lambda cursor: client.conversations_history(
        channel=channel_id, limit=200, cursor=cursor, include_all_metadata=True))
    for message in history:
        metadata = message.get("metadata") or {}
        if (metadata.get("event_type") == marker["event_type"]
                and metadata.get("event_payload") == marker["event_payload"] and message.get("ts")):
            return channel_id, str(message["ts"])
    return None


def _messages(subject: str, read_page):
    """The messages of a paged read (conversations.history, .replies): ``read_page(cursor)``
    for at most HISTORY_PAGES pages, following ``response_metadata.next_cursor``."""
    cursor: str | None = None
    for _ in range(HISTORY_PAGES):
        response = _slack_call(subject, lambda cursor=cursor: read_page(cursor))
        yield from response.get("messages") or []
        cursor = (response.get("response_metadata") or {}).get("next_cursor") or None
        if not cursor:
            return


LOOKUP_UNAVAILABLE = {"missing_scope", "not_in_channel", "channel_not_found", "connection_error"}
"""Lookup failures after which posting is still right (nothing to find, or no way to look)."""


def chart_in_thread(token: str, channel: str, thread_ts: str, title: str, base_url: str | None = None) -> bool:
    """Whether a file titled ``title`` is already in the thread of ``thread_ts`` (conversations.replies,
    at most HISTORY_PAGES x 200 replies). Needs channels:history (groups:history for a private
    channel); when the thread cannot be read (LOOKUP_UNAVAILABLE), False with a warning: the
    caller uploads, and a second copy is possible. Other failures raise DeliveryError."""
    client = slack_client(token, base_url)
    try:
        channel_id = resolve_channel_id(client, channel)
        thread = _messages(f"the thread of the digest in {channel}", lambda cursor: client.conversations_replies(
            channel=channel_id, ts=thread_ts, limit=200, cursor=cursor))
        return any(f.get("title") == title for message in thread for f in message.get("files") or [])
    except DeliveryError as exc:
        if exc.reason not in LOOKUP_UNAVAILABLE:
            raise
        log.warning("could not look for the chart in the digest's thread in %s (%s): uploading it",
                    channel, exc.reason)
    return False


def _recover(client, channel: str, marker: dict) -> tuple[str, str] | None:
    try:
        return find_posted(client, channel, marker)
    except DeliveryError as exc:
        if exc.reason not in LOOKUP_UNAVAILABLE:
            raise
        log.warning("could not look for an earlier digest in %s (%s): posting", channel, exc.reason)
        return None


def _update(client, channel: str, channel_id: str, ts: str, text: str, blocks: list[dict], marker: dict | None):
    extra = {"metadata": marker} if marker else {}  # kept on the message, for a later search
    return _call(channel, lambda: client.chat_update(channel=channel_id, ts=ts, text=text, blocks=blocks, **extra))


def deliver(
    token: str,
    channel: str,
    text: str,
    blocks: list[dict],
    previous_channel_id: str | None = None,
    previous_ts: str | None = None,
    base_url: str | None = None,
    marker: dict | None = None,
    search: bool = False,
) -> tuple[Delivery, str | None]:
    """Exactly once per (framework, as_of, channel): update the earlier message when there is
    one (chat.update), else post (chat.postMessage). Returns the delivery and the channel ID.

    ``marker`` (see :func:`digest_marker`) goes into the post's metadata. With ``search``
    (an earlier attempt may have posted without its ts being kept), the channel's history is
    searched for the marker first and a message found is updated. A post whose answer is lost
    (timeout, dropped connection) is never blindly repeated: with a marker, the history is
    searched and the post repeated only when nothing was found (POST_ATTEMPTS in all); without
    one, it is a DeliveryError. Rate limits, 5xx and refused connections are retried by the
    client (bounded)."""
    client = slack_client(token, base_url)
    if previous_ts and previous_channel_id:
        try:
            response = _update(client, channel, previous_channel_id, previous_ts, text, blocks, marker)
            log.info("updated the digest in %s (ts %s)", channel, previous_ts)
            return Delivery(channel=channel, status="updated", ts=previous_ts), response.get("channel")
        except DeliveryError as exc:
            if exc.reason not in {"message_not_found", "cant_update_message"}:
                raise
            log.warning("the earlier digest in %s is gone (%s): posting anew", channel, exc.reason)
    elif marker and search:
        found = _recover(client, channel, marker)
        if found is not None:
            channel_id, ts = found
            _update(client, channel, channel_id, ts, text, blocks, marker)
            log.info("found the digest posted earlier in %s (ts %s): updated it", channel, ts)
            return Delivery(channel=channel, status="posted", ts=ts), channel_id
    poster = slack_client(token, base_url, safe_only=True)
    extra = {"metadata": marker} if marker else {}
    for attempt in range(1, POST_ATTEMPTS + 1):
        try:
            response = poster.chat_postMessage(
                channel=channel, text=text, blocks=blocks, unfurl_links=False, **extra)
        except Exception as exc:  # noqa: BLE001 - classified below; others become DeliveryError
            if not _ambiguous(exc):  # Slack's refusal or a connection never made: as _call words it
                _call(channel, lambda exc=exc: _reraise(exc))
                raise
            what = type(exc).__name__
            if getattr(exc, "response", None) is not None:
                what = f"HTTP {exc.response.status_code}"
            log.warning("Slack's answer to the digest post in %s was lost (%s)", channel, what)
            if marker is None or attempt == POST_ATTEMPTS:
                raise DeliveryError(
                    f"Slack could not be reached for {channel}: {what} "
                    "(the digest may have been posted; the next run or `growth deliver` finds it)",
                    reason="answer_lost",  # not retried blindly: flows.daily.SLACK_TRANSIENT leaves it out
                ) from None
            found = _recover(client, channel, marker)
            if found is not None:
                channel_id, ts = found
                log.info("the lost post reached %s (ts %s)", channel, ts)
                return Delivery(channel=channel, status="posted", ts=ts), channel_id
            continue
        ts = response.get("ts")
        fault_point("slack.posted")
        log.info("posted the digest to %s (ts %s)", channel, ts)
        return Delivery(channel=channel, status="posted", ts=ts), response.get("channel")
    raise AssertionError("unreachable")


def _reraise(exc: BaseException):
    raise exc


def deliver_once(store, token: str, report, ui_url: str | None = None, chart: Path | None = None) -> Delivery:
    """Deliver ``report`` (a framework.report.Report) to its channel exactly once per
    (framework, as_of, channel), keeping the message in ``store`` (a tasks.store.MetricStore):
    the stored ts is updated (chat.update); before a first post its intent is recorded
    (status ``pending``), so that a run killed between Slack's answer and the store's record
    makes the next one search the channel (:func:`deliver`'s ``search``) instead of posting
    again. When the quality gate failed, the message is the data-quality alert. The funnel
    chart goes into the thread of a first post, and of a later update while the record says
    it is still owed (CHART_OWED). Raises DeliveryError (the outcome recorded)."""
    from datetime import date

    from framework.digest import (
        escape_mrkdwn,
        fallback_text,
        render_blocks,
        render_quality_alert_blocks,
        render_quality_alert_text,
    )

    as_of = date.fromisoformat(report.result.as_of)
    channel = report.delivery.channel
    failed_gate = report.data_quality.status == "failed"
    previous = store.get_delivery(report.framework, as_of, channel)
    if failed_gate:  # the notification text is mrkdwn too: data in it must not mention anyone
        text = escape_mrkdwn(render_quality_alert_text(report, ui_url))
        if len(text) > ALERT_TEXT_CHARS:
            text = text[: ALERT_TEXT_CHARS - 1] + "…"
        blocks = render_quality_alert_blocks(report, ui_url)
    else:
        text, blocks = fallback_text(report), render_blocks(report, ui_url)
    owed_before = previous is not None and previous.status == CHART_OWED  # the message's chart
    if previous is None:
        store.record_delivery(report.framework, as_of, channel, None, None, "pending")
    try:
        delivery, channel_id = deliver(
            token, channel, text, blocks,
            previous_channel_id=previous.channel_id if previous else None,
            previous_ts=previous.ts if previous else None,
            marker=digest_marker(report.framework, report.result.as_of, channel),
            search=previous is not None and previous.ts is None,
        )
    except DeliveryError:
        # keeps a stored ts; and a chart still owed stays owed (a failed update pays nothing)
        store.record_delivery(report.framework, as_of, channel, None, None, CHART_OWED if owed_before else "failed")
        raise
    # The chart goes into the thread of a new message, or of one whose chart is still owed:
    # a run killed or an upload failed after the post was recorded, no chart could be drawn,
    # or the message was a quality alert (no chart) that a passing run turns into the digest.
    # The record says CHART_OWED until the upload is done, so the next delivery sends it.
    owed = bool(delivery.ts) and (delivery.status == "posted" or owed_before)
    store.record_delivery(report.framework, as_of, channel, channel_id, delivery.ts,
                          CHART_OWED if owed else delivery.status)
    if owed and chart is not None and not failed_gate:
        fault_point("slack.chart")
        title = f"{report.framework} funnel {as_of}"
        # A message this attempt posted (or found after a lost answer) has no chart yet. One it
        # updated may have it after all: an upload whose answer was lost, a store that failed to
        # record it. Look before uploading again (needs channels:history; without it, upload: a
        # second copy is better than none).
        if delivery.status != "updated" or not chart_in_thread(token, channel_id or channel, delivery.ts, title):
            upload_chart(token, channel_id or channel, delivery.ts, chart, title)
        store.record_delivery(report.framework, as_of, channel, channel_id, delivery.ts, delivery.status)
    if failed_gate:
        return Delivery(channel=delivery.channel, status="skipped", ts=delivery.ts)  # the digest itself was not published
    return delivery


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
