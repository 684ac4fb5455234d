"""Slack faults, each for real: the real slack_sdk WebClient against the scripted stand-in
(tests/support/slack_standin.py), and a port with nothing listening.

What is retried: 429 (after Retry-After), 5xx, connections that could not be made. What is
not repeated blindly: a post whose answer was lost (timeout, dropped connection), because
Slack may have posted it; the channel's history is searched for the digest's metadata
marker instead. What fails at once (exit 5): a bad token, an unknown channel.
"""

from __future__ import annotations

import time

import pytest

from framework.errors import DeliveryError
from tasks.publish import POST_ATTEMPTS, deliver, digest_marker, find_posted, slack_client
from tests.support.slack_standin import VALID_TOKEN

BLOCKS = [{"type": "section", "text": {"type": "mrkdwn", "text": "*Deploy a flow* 38.2%"}}]
MARKER = digest_marker("Test Framework", "2026-03-01", "#growth")
MAX_RETRIES = 3  # tasks.publish.slack_client's default


def _send(slack, **kw):
    return deliver(VALID_TOKEN, kw.pop("channel", "#growth"), "Growth digest", BLOCKS, base_url=slack.url, **kw)


def test_rate_limit_waits_for_retry_after_then_posts(slack) -> None:
    slack.fail_next(429, {"Retry-After": "2"}, method="chat.postMessage")
    started = time.monotonic()
    delivery, channel_id = _send(slack, marker=MARKER)
    waited = time.monotonic() - started
    assert delivery.status == "posted" and channel_id == "C0GROWTH"
    assert len(slack.calls_to("chat.postMessage")) == 2
    assert waited >= 2.0  # Retry-After honoured
    assert len(slack.channel_messages("C0GROWTH")) == 1


def test_rate_limit_forever_is_bounded_and_exit_5(slack) -> None:
    slack.fail_next(429, {"Retry-After": "0"}, times=10, method="chat.postMessage")
    with pytest.raises(DeliveryError) as err:
        _send(slack, marker=MARKER)
    assert err.value.exit_code == 5 and err.value.reason == "ratelimited"
    assert len(slack.calls_to("chat.postMessage")) == 1 + MAX_RETRIES
    assert slack.messages == {}


@pytest.mark.parametrize("status", [500, 503])
def test_server_errors_are_retried_then_post(slack, status: int) -> None:
    slack.fail_next(status, times=2, method="chat.postMessage")
    delivery, _ = _send(slack, marker=MARKER)
    assert delivery.status == "posted"
    assert len(slack.calls_to("chat.postMessage")) == 3
    assert len(slack.channel_messages("C0GROWTH")) == 1


@pytest.mark.parametrize("status", [502, 504])
def test_gateway_errors_search_before_posting_again(slack, status: int) -> None:
    """A gateway's 502/504 may hide a post that happened: search, then post again once."""
    slack.fail_next(status, method="chat.postMessage")
    delivery, _ = _send(slack, marker=MARKER)
    assert delivery.status == "posted"
    assert len(slack.calls_to("conversations.history")) == 1
    assert len(slack.calls_to("chat.postMessage")) == POST_ATTEMPTS
    assert len(slack.channel_messages("C0GROWTH")) == 1
    slack.fail_next(status, times=POST_ATTEMPTS, method="chat.postMessage")
    with pytest.raises(DeliveryError) as err:
        _send(slack, marker=digest_marker("Test Framework", "2026-03-02", "#growth"))
    assert err.value.exit_code == 5 and f"HTTP {status}" in str(err.value)


def test_server_errors_forever_are_bounded_and_exit_5(slack) -> None:
    slack.fail_next(503, times=10, method="chat.postMessage")
    with pytest.raises(DeliveryError) as err:
        _send(slack, marker=MARKER)
    assert err.value.exit_code == 5
    assert len(slack.calls_to("chat.postMessage")) == 1 + MAX_RETRIES
    assert slack.messages == {}


def _closed_port() -> int:
    """A loopback port nothing listens on: 1 (tcpmux), never bound here. (A port picked free
    and closed could be taken by another process before the test connects.)"""
    return 1


def test_connection_refused_is_retried_a_bounded_number_of_times_then_exit_5() -> None:
    url = f"http://127.0.0.1:{_closed_port()}/api/"
    started = time.monotonic()
    with pytest.raises(DeliveryError) as err:
        deliver(VALID_TOKEN, "#growth", "t", BLOCKS, base_url=url, marker=MARKER)
    elapsed = time.monotonic() - started
    assert err.value.exit_code == 5 and err.value.reason == "connection_error"
    assert "could not be reached for #growth: URLError" in str(err.value)
    assert VALID_TOKEN not in str(err.value)
    # slack_sdk's default backoff (0.5 s x 2^n, with jitter) for 3 retries: about 3.5 s, bounded
    assert 1.0 < elapsed < 15


def test_timed_out_post_is_found_in_the_history_not_posted_twice(slack, monkeypatch) -> None:
    monkeypatch.setenv("GROWTH_SLACK_TIMEOUT", "1")
    slack.delay_next(3, method="chat.postMessage")  # Slack posts, the answer comes too late
    delivery, channel_id = _send(slack, marker=MARKER)
    assert delivery.status == "posted" and channel_id == "C0GROWTH"
    (message,) = slack.channel_messages("C0GROWTH")
    assert delivery.ts == message["ts"] and message["metadata"] == MARKER
    assert len(slack.calls_to("chat.postMessage")) == 1
    (history,) = slack.calls_to("conversations.history")
    assert history.body["channel"] == "C0GROWTH" and history.body["include_all_metadata"] == "1"


def test_dropped_answer_is_found_in_the_history_not_posted_twice(slack) -> None:
    slack.drop_next(method="chat.postMessage")
    delivery, _ = _send(slack, marker=MARKER)
    (message,) = slack.channel_messages("C0GROWTH")
    assert delivery.ts == message["ts"] and len(slack.calls_to("chat.postMessage")) == 1


def test_lost_answer_of_a_post_that_did_not_happen_posts_again_once(slack, monkeypatch) -> None:
    """The request reached Slack but failed there (5xx), and its answer was lost: the search
    finds nothing, so posting again is right, once."""
    monkeypatch.setenv("GROWTH_SLACK_TIMEOUT", "1")
    slack.fail_next(500, method="chat.postMessage")
    slack.delay_next(3, method="chat.postMessage")  # the 500 arrives too late: a lost answer
    delivery, _ = _send(slack, marker=MARKER)
    assert delivery.status == "posted"
    assert len(slack.calls_to("chat.postMessage")) == POST_ATTEMPTS
    assert len(slack.channel_messages("C0GROWTH")) == 1


def test_lost_answers_every_time_end_in_exit_5_with_at_most_one_message(slack, monkeypatch) -> None:
    monkeypatch.setenv("GROWTH_SLACK_TIMEOUT", "1")
    slack.fail_next(500, times=POST_ATTEMPTS, method="chat.postMessage")
    slack.delay_next(3, times=POST_ATTEMPTS, method="chat.postMessage")
    with pytest.raises(DeliveryError) as err:
        _send(slack, marker=MARKER)
    assert err.value.exit_code == 5 and "TimeoutError" in str(err.value)
    assert len(slack.calls_to("chat.postMessage")) == POST_ATTEMPTS
    assert slack.messages == {}


def test_lost_answer_without_a_marker_is_not_repeated(slack, monkeypatch) -> None:
    monkeypatch.setenv("GROWTH_SLACK_TIMEOUT", "1")
    slack.delay_next(3, method="chat.postMessage")
    with pytest.raises(DeliveryError) as err:
        _send(slack)
    assert err.value.exit_code == 5 and "may have been posted" in str(err.value)
    assert len(slack.calls_to("chat.postMessage")) == 1 and len(slack.messages) == 1


def test_search_finds_an_earlier_post_and_updates_it(slack) -> None:
    first, _ = _send(slack, marker=MARKER)
    _send(slack, marker=digest_marker("Test Framework", "2026-03-02", "#growth"))  # another day
    again, channel_id = _send(slack, marker=MARKER, search=True)
    assert again.ts == first.ts and channel_id == "C0GROWTH"
    assert len(slack.calls_to("chat.postMessage")) == 2  # no third post
    (update,) = slack.calls_to("chat.update")
    assert update.body["ts"] == first.ts and update.body["metadata"] == MARKER
    assert slack.messages[first.ts]["metadata"] == MARKER  # still findable next time


def test_search_without_the_history_scope_falls_back_to_posting(slack) -> None:
    slack.refuse_next("missing_scope", method="conversations.history", needed="channels:history")
    delivery, _ = _send(slack, marker=MARKER, search=True)
    assert delivery.status == "posted" and len(slack.calls_to("chat.postMessage")) == 1


def test_search_pages_through_a_busy_channel(slack) -> None:
    first, _ = _send(slack, marker=MARKER)
    for _ in range(250):  # newer chatter above the digest: it is on the second page
        slack.messages[f"1800000000.{len(slack.messages):06d}"] = {"channel_id": "C0GROWTH", "text": "hi"}
    assert find_posted(slack_client(VALID_TOKEN, slack.url), "#growth", MARKER) == ("C0GROWTH", first.ts)
    assert [c.body.get("cursor") for c in slack.calls_to("conversations.history")] == [None, "hist-200"]


def test_invalid_token_fails_at_once_exit_5_even_when_searching(slack) -> None:
    with pytest.raises(DeliveryError) as err:
        deliver("xoxb-wrong-secret", "#growth", "t", BLOCKS, base_url=slack.url, marker=MARKER, search=True)
    assert err.value.exit_code == 5 and err.value.reason == "invalid_auth"
    assert "xoxb-wrong-secret" not in str(err.value)
    assert [c.method for c in slack.calls] == ["conversations.list"]  # no retries, no post


def test_unknown_channel_fails_at_once_exit_5(slack) -> None:
    with pytest.raises(DeliveryError) as err:
        _send(slack, channel="#nowhere", marker=MARKER)
    assert err.value.exit_code == 5 and err.value.reason == "channel_not_found"
    assert len(slack.calls_to("chat.postMessage")) == 1 and slack.messages == {}
