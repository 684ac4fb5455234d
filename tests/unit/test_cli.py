"""The growth command's user errors: exit 2, one clear line on stderr, no traceback."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from flows.cli import main
from tests.conftest import DEMO_FRAMEWORK

GOOD = DEMO_FRAMEWORK.read_text(encoding="utf-8")


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "framework.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_validate_demo_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(DEMO_FRAMEWORK)]) == 0
    out = capsys.readouterr().out
    assert "ok" in out and "8 steps (7 tracked, 1 qualifying, 1 untracked)" in out


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda t: t.replace("  top_n: 3", "  top_n: 3\n  colour: red"), "report.colour: unknown key"),
        (lambda t: t.replace("    proposed_metric: quickstart page views per new account\n", ""),
         "steps[2].proposed_metric: an untracked step needs 'proposed_metric'"),
        (lambda t: t.replace("    entity_id: account_id\n    timestamp: created_at\n  - key: read_quickstart",
                             "    entity_id: account_id\n    via: {table: t, key: id, foreign_key: f, entity_id: e}\n"
                             "    timestamp: created_at\n  - key: read_quickstart"),
         "steps[1].via: give exactly one of 'entity_id' or 'via', not both"),
        (lambda t: t.replace("${GROWTH_DEMO_APP_URL:-sqlite:///data/demo_app.db}", "${GROWTH_TEST_UNSET_VAR}"),
         "sources.app.url: environment variable GROWTH_TEST_UNSET_VAR is not set"),
    ],
    ids=["unknown-key", "missing-proposed-metric", "entity-id-and-via", "unset-var"],
)
def test_bad_framework_files_exit_2_with_key_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, mutate, expected: str
) -> None:
    monkeypatch.delenv("GROWTH_TEST_UNSET_VAR", raising=False)
    text = mutate(GOOD)
    assert text != GOOD
    path = _write(tmp_path, text)
    assert main(["validate", path]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"{path}: {expected}"
    assert "Traceback" not in err


def test_unknown_table_at_run_time_exits_2_before_prefect(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import sqlalchemy as sa

    url = f"sqlite:///{tmp_path / 'app.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE accounts (id INTEGER, created_at TEXT, origin TEXT, region TEXT)")
    engine.dispose()
    path = _write(tmp_path, GOOD)
    code = main(["run", "--framework", path, "--dry-run", "--source", f"app={url}", "--source", f"events={url}"])
    err = capsys.readouterr().err
    assert code == 2
    assert "steps[1] (workspace_created): source 'app' has no table 'workspaces' (tables: accounts)" in err
    assert "Traceback" not in err


def test_unknown_column_at_run_time_exits_2_naming_step_and_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tasks.seed import seed_demo

    url = f"sqlite:///{tmp_path / 'demo.db'}"
    seed_demo(url, accounts=50, seed=1, end_date=date(2026, 1, 31))
    path = _write(tmp_path, GOOD.replace("timestamp: sent_at", "timestamp: sent_on"))
    code = main(["run", "--framework", path, "--dry-run", "--source", f"app={url}", "--source", f"events={url}"])
    err = capsys.readouterr().err
    assert code == 2
    assert "steps[6] (invited_teammate): source 'app' table 'invitations' has no column 'sent_on'" in err
    assert "Traceback" not in err


def test_unreadable_source_exits_4_and_hides_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    import flows.cli

    monkeypatch.setattr(flows.cli, "SOURCE_RETRY_DELAYS", (0, 0))  # the pauses: see the test below
    path = _write(tmp_path, GOOD)
    sqlite3.connect(tmp_path / "events.db").close()  # 'events' is readable (a missing SQLite file is exit 4 too)
    code = main(["run", "--framework", path, "--dry-run",
                 "--source", "app=postgresql+psycopg://growth:hunter2@127.0.0.1:1/x",
                 f"events=sqlite:///{tmp_path / 'events.db'}"])
    err = capsys.readouterr().err
    assert code == 4
    assert "source 'app'" in err and "hunter2" not in err
    assert "(gave up after 3 attempts over 0 s)" in err


def test_a_refusing_source_is_tried_three_times_with_backoff_before_exit_4(tmp_path: Path) -> None:
    """growth run checks the sources before starting Prefect: a refused connection (nothing listens
    on port 1) is transient, so it is tried again after 2 s and 10 s, as the flow's check-schema
    task would be; the pauses are recorded here instead of slept."""
    import sqlite3

    from flows.cli import _preflight
    from framework.config import load_config
    from framework.errors import SourceError

    sqlite3.connect(tmp_path / "events.db").close()
    cfg = load_config(_write(tmp_path, GOOD), env={
        "GROWTH_DEMO_APP_URL": "postgresql+psycopg://growth:hunter2@127.0.0.1:1/x",
        "GROWTH_DEMO_EVENTS_URL": f"sqlite:///{tmp_path / 'events.db'}",
    })
    pauses: list[float] = []
    with pytest.raises(SourceError) as err:
        _preflight(cfg, sleep=pauses.append)
    assert pauses == [2, 10]
    assert err.value.exit_code == 4 and err.value.transient
    assert str(err.value).endswith("(gave up after 3 attempts over 12 s)") and "hunter2" not in str(err.value)


def test_a_bad_name_is_not_retried(tmp_path: Path) -> None:
    import sqlite3

    from flows.cli import _preflight
    from framework.config import load_config
    from framework.errors import SchemaError

    pauses: list[float] = []
    for name in ("app", "events"):
        sqlite3.connect(tmp_path / f"{name}.db").close()  # empty databases: no such tables
    cfg = load_config(_write(tmp_path, GOOD), env={
        "GROWTH_DEMO_APP_URL": f"sqlite:///{tmp_path / 'app.db'}",
        "GROWTH_DEMO_EVENTS_URL": f"sqlite:///{tmp_path / 'events.db'}",
    })
    with pytest.raises(SchemaError):
        _preflight(cfg, sleep=pauses.append)
    assert pauses == []


@pytest.mark.parametrize(
    "argv",
    [["run"], ["run", "--framework", "f.yaml", "--as-of", "yesterday"], ["frobnicate"],
     ["run", "--framework", str(DEMO_FRAMEWORK), "--source", "nosuch=sqlite://"]],
)
def test_bad_usage_exits_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.strip() and "Traceback" not in err


@pytest.mark.parametrize("flag", ["--report-json", "--blocks-json"])
def test_unwritable_output_exits_2_before_anything_runs(
    flag: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    for target in (blocker / "r.json", tmp_path):  # a parent that is a file; a directory as the file
        code = main(["run", "--framework", str(DEMO_FRAMEWORK), "--dry-run", flag, str(target)])
        err = capsys.readouterr().err
        assert code == 2
        assert err.strip().splitlines() == [err.strip()] and err.startswith(f"{flag} {target}: cannot write there (")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # no probe left behind


def test_several_sources_may_follow_one_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # both spellings reach the schema check with both overrides applied (the tables are missing)
    import sqlite3

    sqlite3.connect(tmp_path / "empty.db").close()
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    for argv in (["--source", f"app={url}", f"events={url}"], ["--source", f"app={url}", "--source", f"events={url}"]):
        assert main(["run", "--framework", str(DEMO_FRAMEWORK), "--dry-run", *argv]) == 2
        assert "source 'app' has no table 'workspaces'" in capsys.readouterr().err


def test_a_source_that_never_answers_is_cut_off_by_the_time_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A PostgreSQL URL whose "server" accepts the connection and never says a word (a socket
    that listens and never reads): the pre-flight check is interrupted after the limit
    (GROWTH_EXTRACT_TIMEOUT_SECONDS, here 1 s) and is exit 4 naming it, not retried."""
    import socket
    import sqlite3
    import time

    from flows.cli import _preflight
    from framework.config import load_config
    from framework.errors import SourceError

    monkeypatch.setenv("GROWTH_EXTRACT_TIMEOUT_SECONDS", "1")
    sqlite3.connect(tmp_path / "events.db").close()
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        cfg = load_config(_write(tmp_path, GOOD), env={
            "GROWTH_DEMO_APP_URL": f"postgresql+psycopg://growth:hunter2@127.0.0.1:{port}/x",
            "GROWTH_DEMO_EVENTS_URL": f"sqlite:///{tmp_path / 'events.db'}",
        })
        pauses: list[float] = []
        started = time.monotonic()
        with pytest.raises(SourceError) as err:
            _preflight(cfg, sleep=pauses.append)
        took = time.monotonic() - started
    assert pauses == [] and 0.9 < took < 10
    assert err.value.exit_code == 4 and str(err.value).startswith("reading the sources took longer than 1 s")
    assert "hunter2" not in str(err.value)
