"""Posting the digest with the real slack_sdk WebClient against the local Slack stand-in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from framework.errors import DeliveryError
from tasks.publish import (
    deliver,
    post_message,
    resolve_channel_id,
    slack_client,
    upload_chart,
)
from tests.support.slack_standin import VALID_TOKEN, block_errors

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


# --------------------------------------------------------------------------- channels, chart, limits

PNG_TITLE = "Prefect Growth Framework — funnel for 2026-11-30"


@pytest.fixture(scope="module")
def chart_png(tmp_path_factory) -> Path:
    """A real funnel chart of the digest tests' report, rendered once."""
    from tasks.chart import render_funnel_chart
    from tests.unit.test_digest import make_report

    return render_funnel_chart(make_report(), tmp_path_factory.mktemp("chart") / "funnel.png")


def _digest_ts(slack) -> str:
    return post_message(VALID_TOKEN, "#growth", "Growth digest", BLOCKS, base_url=slack.url).ts


def test_channel_name_is_resolved_to_its_id_across_pages(slack) -> None:
    client = slack_client(VALID_TOKEN, slack.url)
    assert resolve_channel_id(client, "#growth") == "C0GROWTH"
    pages = slack.calls_to("conversations.list")
    # alerts, growth-private, growth: one a page; the archived old-growth is never listed
    assert [c.body.get("cursor") for c in pages] == [None, "page-1", "page-2"]
    assert all(c.body["types"] == "public_channel,private_channel" for c in pages)
    assert all(c.body["exclude_archived"] == "1" and c.token == VALID_TOKEN for c in pages)

    assert resolve_channel_id(client, "growth-private") == "G0PRIVATE"
    before = len(slack.calls)
    assert resolve_channel_id(client, "C0GROWTH") == "C0GROWTH"  # an ID needs no lookup
    assert resolve_channel_id(client, "G0PRIVATE") == "G0PRIVATE"
    assert len(slack.calls) == before


@pytest.mark.parametrize("name", ["#nowhere", "old-growth"])
def test_unknown_or_archived_channel_name_is_channel_not_found(slack, name: str) -> None:
    client = slack_client(VALID_TOKEN, slack.url)
    with pytest.raises(DeliveryError) as err:
        resolve_channel_id(client, name)
    assert err.value.reason == "channel_not_found" and err.value.exit_code == 5
    assert str(err.value) == f"Slack channel {name} not found (is the bot invited?)"
    assert len(slack.calls_to("conversations.list")) == 3  # every page was read


def test_chart_is_uploaded_into_the_digest_thread(slack, chart_png: Path) -> None:
    ts = _digest_ts(slack)
    file_id = upload_chart(VALID_TOKEN, "#growth", ts, chart_png, PNG_TITLE, base_url=slack.url)

    png = chart_png.read_bytes()
    (ask,) = slack.calls_to("files.getUploadURLExternal")
    assert ask.token == VALID_TOKEN
    assert ask.body["filename"] == "funnel.png" and ask.body["length"] == str(len(png))
    (upload,) = slack.calls_to("upload")
    assert upload.raw == png and upload.raw[:8] == b"\x89PNG\r\n\x1a\n"
    assert upload.path == f"/upload/{file_id}" and upload.token is None  # pre-signed URL
    (complete,) = slack.calls_to("files.completeUploadExternal")
    assert complete.body["channel_id"] == "C0GROWTH" and complete.body["thread_ts"] == ts
    assert json.loads(complete.body["files"]) == [{"id": file_id, "title": PNG_TITLE}]
    assert "initial_comment" not in complete.body
    assert slack.files[file_id]["shared"] and slack.files[file_id]["content"] == png


def test_upload_needs_a_channel_id_which_a_name_is_not(slack, chart_png: Path) -> None:
    """What the name resolution is for: completeUploadExternal refuses a channel name."""
    from slack_sdk.errors import SlackApiError

    ts = _digest_ts(slack)
    with pytest.raises(SlackApiError, match="channel_not_found"):
        slack_client(VALID_TOKEN, slack.url).files_upload_v2(
            channel="#growth", thread_ts=ts, file=str(chart_png), title="t")


def test_upload_rate_limited_then_succeeds(slack, chart_png: Path) -> None:
    ts = _digest_ts(slack)
    slack.fail_next(429, {"Retry-After": "0"}, method="files.getUploadURLExternal")
    slack.fail_next(429, {"Retry-After": "0"}, method="upload")
    file_id = upload_chart(VALID_TOKEN, "C0GROWTH", ts, chart_png, PNG_TITLE, base_url=slack.url)
    # the SDK retried the API call; the bytes' POST (outside its handlers) was retried here
    assert len(slack.calls_to("files.getUploadURLExternal")) == 3
    assert len(slack.calls_to("upload")) == 2
    (complete,) = slack.calls_to("files.completeUploadExternal")
    assert json.loads(complete.body["files"])[0]["id"] == file_id
    assert [f for f, v in slack.files.items() if v.get("shared")] == [file_id]


def test_upload_server_error_on_the_bytes_is_bounded(slack, chart_png: Path) -> None:
    ts = _digest_ts(slack)
    slack.fail_next(503, {"Retry-After": "0"}, method="upload", times=2)
    with pytest.raises(DeliveryError) as err:
        upload_chart(VALID_TOKEN, "C0GROWTH", ts, chart_png, PNG_TITLE, base_url=slack.url)
    assert err.value.reason == "upload_failed" and "HTTP 503" in str(err.value)
    assert len(slack.calls_to("upload")) == 2
    assert slack.calls_to("files.completeUploadExternal") == []  # nothing shared


def test_upload_with_an_invalid_token_is_not_retried(slack, chart_png: Path) -> None:
    with pytest.raises(DeliveryError) as err:
        upload_chart("xoxb-wrong-secret", "C0GROWTH", "1700000000.000001", chart_png, PNG_TITLE,
                     base_url=slack.url)
    assert err.value.reason == "invalid_auth" and err.value.exit_code == 5
    assert "xoxb-wrong-secret" not in str(err.value) and "SLACK_BOT_TOKEN" in str(err.value)
    assert [c.method for c in slack.calls] == ["files.getUploadURLExternal"]

    with pytest.raises(DeliveryError) as err:  # by name: the lookup fails first, once
        upload_chart("xoxb-wrong-secret", "#growth", "1700000000.000001", chart_png, PNG_TITLE,
                     base_url=slack.url)
    assert err.value.reason == "invalid_auth"
    assert [c.method for c in slack.calls[1:]] == ["conversations.list"]


def test_upload_into_an_unknown_thread_is_a_delivery_error(slack, chart_png: Path) -> None:
    with pytest.raises(DeliveryError) as err:
        upload_chart(VALID_TOKEN, "#growth", "1699999999.000001", chart_png, PNG_TITLE,
                     base_url=slack.url)
    assert err.value.reason == "invalid_thread_ts"


def test_chart_in_thread_finds_an_uploaded_chart_by_its_title(slack, chart_png: Path) -> None:
    from tasks.publish import chart_in_thread

    ts = _digest_ts(slack)
    assert chart_in_thread(VALID_TOKEN, "#growth", ts, PNG_TITLE, base_url=slack.url) is False
    upload_chart(VALID_TOKEN, "#growth", ts, chart_png, PNG_TITLE, base_url=slack.url)
    assert chart_in_thread(VALID_TOKEN, "#growth", ts, PNG_TITLE, base_url=slack.url) is True
    assert chart_in_thread(VALID_TOKEN, "C0GROWTH", ts, "another day's chart", base_url=slack.url) is False
    other = _digest_ts(slack)  # another message's thread holds nothing
    assert chart_in_thread(VALID_TOKEN, "C0GROWTH", other, PNG_TITLE, base_url=slack.url) is False


def test_chart_in_thread_without_the_history_scope_says_no_and_other_failures_raise(slack) -> None:
    from tasks.publish import chart_in_thread

    ts = _digest_ts(slack)
    slack.refuse_next("missing_scope", method="conversations.replies", needed="channels:history")
    assert chart_in_thread(VALID_TOKEN, "C0GROWTH", ts, PNG_TITLE, base_url=slack.url) is False  # upload, then
    with pytest.raises(DeliveryError) as err:
        chart_in_thread(VALID_TOKEN, "C0GROWTH", "1699999999.000001", PNG_TITLE, base_url=slack.url)
    assert err.value.reason == "thread_not_found"


def test_missing_chart_file_is_a_delivery_error(slack, tmp_path: Path) -> None:
    with pytest.raises(DeliveryError) as err:
        upload_chart(VALID_TOKEN, "#growth", "1", tmp_path / "nope.png", "t", base_url=slack.url)
    assert err.value.reason == "chart_missing" and slack.calls == []


def _huge_report():
    from framework.report import QualityCheck, StepResult
    from tests.unit.test_digest import make_report

    steps = [
        StepResult(
            key=f"s{i}",
            name=f"Step {i} <!channel> " + "ü" * 5000,
            position=i + 1,
            tracked=i % 9 != 4,
            qualifying=i % 13 == 6,
            entered=10_000,
            reached=10_000 - 150 * i,
            conversion=(10_000 - 150 * i) / 10_000,
            overall_conversion=(10_000 - 150 * i) / 10_000,
            lost=150 * i,
            median_hours=3.0,
            delta_pp=-1.5,
            p_value=0.01,
            target=0.9,
            opportunity=12.0,
        )
        for i in range(60)
    ]
    checks = [QualityCheck(f"check {i} " + "x" * 5000, "<= 1%", "error", False, "y" * 5000)
              for i in range(60)]
    ranked = [s.key for s in steps if s.tracked and not s.qualifying][:55]
    return make_report(steps=steps, lowest=ranked, checks=checks)


def _assert_within_limits(blocks: list[dict]) -> None:
    assert len(blocks) <= 50
    for block in blocks:
        text = block.get("text")
        if isinstance(text, dict):
            assert len(text["text"]) <= (150 if block["type"] == "header" else 3000)


def test_sixty_steps_with_huge_names_stay_within_slacks_limits(slack) -> None:
    from framework.digest import fallback_text, render_blocks

    report = _huge_report()
    blocks = render_blocks(report, ui_url="http://127.0.0.1:4200/runs/flow-run/1")
    delivery, channel_id = deliver(VALID_TOKEN, "#growth", fallback_text(report), blocks,
                                   base_url=slack.url)
    assert delivery.status == "posted" and channel_id == "C0GROWTH"
    (call,) = slack.calls_to("chat.postMessage")
    assert call.body["blocks"] == blocks
    _assert_within_limits(call.body["blocks"])
    assert block_errors(call.body["blocks"]) == []
    assert "<!channel>" not in json.dumps(call.body)


def test_quality_alert_is_within_limits_and_exactly_once(slack) -> None:
    from framework.digest import render_quality_alert_blocks, render_quality_alert_text

    report = _huge_report()
    text, blocks = render_quality_alert_text(report)[:3000], render_quality_alert_blocks(report)
    first, channel_id = deliver(VALID_TOKEN, "#growth", text, blocks, base_url=slack.url)
    again, _ = deliver(VALID_TOKEN, "#growth", text, blocks, previous_channel_id=channel_id,
                                  previous_ts=first.ts, base_url=slack.url)
    assert (first.status, again.status) == ("posted", "updated") and again.ts == first.ts
    assert len(slack.calls_to("chat.postMessage")) == 1
    (update,) = slack.calls_to("chat.update")
    assert update.body["channel"] == "C0GROWTH" and update.body["ts"] == first.ts
    _assert_within_limits(update.body["blocks"])


def test_the_standin_rejects_what_slack_rejects(slack) -> None:
    """So that the limit tests above mean something."""
    too_many = [{"type": "divider"}] * 51
    too_long = [{"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001}}]
    long_header = [{"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}]
    for blocks in (too_many, too_long, long_header):
        with pytest.raises(DeliveryError) as err:
            post_message(VALID_TOKEN, "#growth", "t", blocks, base_url=slack.url)
        assert err.value.reason == "invalid_blocks"
    assert slack.messages == {}
