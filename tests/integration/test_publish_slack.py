"""Posting the digest with the real slack_sdk WebClient against the local Slack stand-in."""

from __future__ import annotations

import pytest

from framework.errors import DeliveryError
from tasks.publish import post_message
from tests.support.slack_standin import VALID_TOKEN

BLOCKS = [{"type": "section", "text": {"type": "mrkdwn", "text": "*Deploy a flow* 38.2%"}}]


def test_post_reaches_slack_with_text_blocks_and_token(slack) -> None:
    delivery = post_message(VALID_TOKEN, "#growth", "Growth digest", BLOCKS, base_url=slack.url)
    assert delivery.status == "posted" and delivery.ts == "1700000000.000001"
    (call,) = slack.calls_to("chat.postMessage")
    assert call.token == VALID_TOKEN
    assert call.body["channel"] == "#growth" and call.body["text"] == "Growth digest"
    assert call.body["blocks"] == BLOCKS


def test_rate_limit_is_retried_after_retry_after(slack) -> None:
    slack.fail_next(429, {"Retry-After": "1"})
    delivery = post_message(VALID_TOKEN, "#growth", "t", BLOCKS, base_url=slack.url)
    assert delivery.status == "posted"
    assert len(slack.calls_to("chat.postMessage")) == 2


def test_server_error_is_retried(slack) -> None:
    slack.fail_next(500)
    assert post_message(VALID_TOKEN, "#growth", "t", BLOCKS, base_url=slack.url).status == "posted"
    assert len(slack.calls_to("chat.postMessage")) == 2


def test_invalid_token_is_not_retried_and_never_echoed(slack) -> None:
    with pytest.raises(DeliveryError) as err:
        post_message("xoxb-wrong-secret", "#growth", "t", BLOCKS, base_url=slack.url)
    assert "invalid_auth" in str(err.value) and "xoxb-wrong-secret" not in str(err.value)
    assert err.value.exit_code == 5
    assert len(slack.calls_to("chat.postMessage")) == 1


def test_unknown_channel_is_a_clear_delivery_error(slack) -> None:
    with pytest.raises(DeliveryError, match="#nowhere: channel_not_found"):
        post_message(VALID_TOKEN, "#nowhere", "t", BLOCKS, base_url=slack.url)
