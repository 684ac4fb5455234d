"""`growth demo` as a user runs it: a real process, its own Prefect home, the printed digest
checked against the report file it writes; a second run reuses the demo databases."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ACCOUNTS = 1500


def _growth(args: list[str], data: Path, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GROWTH_DATA_DIR": str(data), "PREFECT_HOME": str(home)}
    for var in ("PREFECT_API_URL", "PREFECT_API_KEY", "SLACK_BOT_TOKEN"):
        env.pop(var, None)
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args], env=env, capture_output=True, text=True, timeout=400,
        cwd=Path(__file__).resolve().parents[2],
    )


def test_demo_prints_the_digest_of_its_report_and_reuses_its_databases(tmp_path: Path) -> None:
    data, home = tmp_path / "data", tmp_path / "prefect-home"
    first = _growth(["demo", "--accounts", str(ACCOUNTS)], data, home)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "building the demo databases" in first.stderr
    report = json.loads((data / "report.json").read_text())
    blocks = json.loads((data / "digest-blocks.json").read_text())["blocks"]
    assert blocks and blocks[0]["type"] == "header"

    out = first.stdout
    assert out.startswith(f"{report['framework']} — growth digest for {report['as_of']}")
    lines = out.splitlines()
    for step in report["steps"]:
        row = [ln for ln in lines if re.match(rf"^\s+{step['position']} {re.escape(step['name'])}\b", ln)]
        assert row, f"no funnel row for {step['name']}"
        if step["tracked"]:
            numbers = re.findall(r"-?[\d,]+(?:\.\d+)?%?", row[0][len(f"  {step['position']} {step['name']}"):])
            assert numbers[:3] == [f"{step['entered']:,}", f"{step['reached']:,}", f"{100 * step['conversion']:.1f}%"]
    # the lowest-converting steps, in the report's order, with their conversion
    listed = re.findall(r"^\s+\d\. Step \d+ · (.+) — ([\d.]+)%$", out, flags=re.M)
    names = {s["key"]: s for s in report["steps"]}
    assert [(n, float(c)) for n, c in listed] == [
        (names[k]["name"], round(100 * names[k]["conversion"], 1)) for k in report["lowest_converting"]
    ]
    assert f"Data quality: {report['data_quality']['status']}" in out

    app_db = data / "demo_app.db"
    built = app_db.stat().st_mtime_ns
    second = _growth(["demo", "--accounts", str(ACCOUNTS)], data, home)
    assert second.returncode == 0, second.stderr[-2000:]
    again = json.loads((data / "report.json").read_text())
    if again["as_of"] != report["as_of"]:  # midnight UTC passed: the demo's day (yesterday) moved,
        report, built = again, app_db.stat().st_mtime_ns  # so it rightly rebuilt; try the reuse again
        second = _growth(["demo", "--accounts", str(ACCOUNTS)], data, home)
        assert second.returncode == 0, second.stderr[-2000:]
        again = json.loads((data / "report.json").read_text())
    assert "reusing the demo databases" in second.stderr
    assert app_db.stat().st_mtime_ns == built
    assert again["steps"] == report["steps"]


def test_without_prefect_home_the_demo_keeps_prefect_under_its_data_directory(tmp_path: Path) -> None:
    """No PREFECT_HOME and no PREFECT_API_URL: the local run's Prefect home (its temporary
    server's database) is <GROWTH_DATA_DIR>/.prefect, and the second run reuses it."""
    import sqlite3

    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items()
           if k not in {"PREFECT_HOME", "PREFECT_API_URL", "PREFECT_API_KEY", "SLACK_BOT_TOKEN"}}
    env["GROWTH_DATA_DIR"] = str(data)

    def demo() -> int:
        done = subprocess.run(
            [sys.executable, "-m", "flows.cli", "demo", "--accounts", "300", "--history", "0"],
            env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        with sqlite3.connect(data / ".prefect" / "prefect.db") as db:
            return db.execute("SELECT count(*) FROM flow_run WHERE name LIKE 'growth-digest-%'").fetchone()[0]

    assert demo() == 1
    database = (data / ".prefect" / "prefect.db").stat().st_ino
    assert demo() == 2  # the first run's history is still there: the same Prefect home
    assert (data / ".prefect" / "prefect.db").stat().st_ino == database
