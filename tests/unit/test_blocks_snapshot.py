"""Snapshot of the Slack message (Block Kit as data) for a fixed report.

The snapshot is the reviewed message; a change to the renderer shows up as a diff of
tests/unit/snapshots/digest_blocks.json. To accept an intended change, run
``GROWTH_UPDATE_SNAPSHOTS=1 pytest tests/unit/test_blocks_snapshot.py`` and review the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from framework.digest import fallback_text, render_blocks, render_quality_alert_blocks
from tests.unit.test_digest import UI_URL, failed_report, make_report

SNAPSHOTS = Path(__file__).parent / "snapshots"


def _check(name: str, value: object) -> None:
    path = SNAPSHOTS / name
    text = json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True) + "\n"
    if os.environ.get("GROWTH_UPDATE_SNAPSHOTS") == "1":
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"no snapshot {path}: run with GROWTH_UPDATE_SNAPSHOTS=1 and review it"
    assert text == path.read_text(encoding="utf-8")


def test_digest_message_matches_its_snapshot() -> None:
    report = make_report()
    _check("digest_blocks.json", {"text": fallback_text(report), "blocks": render_blocks(report, UI_URL)})


def test_quality_alert_matches_its_snapshot() -> None:
    _check("quality_alert_blocks.json", {"blocks": render_quality_alert_blocks(failed_report(), UI_URL)})
