"""Sources read as a SELECT-only PostgreSQL role, a connection dropped mid-extraction, and
secrets that never leak. Real PostgreSQL, real Prefect (the session's harness), real
`growth run` processes, the real slack_sdk client against the stand-in.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest
import sqlalchemy as sa

from flows.daily import growth_digest
from tasks.secrets import source_env_var
from tests.conftest import DEMO_FRAMEWORK, ROOT
from tests.integration.test_reliability_sources import (
    END,
    PG_ADMIN,
    PgDemo,
    fingerprint,
    pg_demo,  # noqa: F401 - a fixture, used by name
)
from tests.support.prefect_api import ran, task_runs
from tests.support.slack_standin import SlackStandIn

# ---------------------------------------------------------------- a connection dropped mid-extraction


HOLD = """
CREATE TABLE {app}.gf_ctl (hold boolean NOT NULL);
INSERT INTO {app}.gf_ctl VALUES (false);
CREATE FUNCTION {app}.gf_hold() RETURNS boolean LANGUAGE plpgsql STABLE AS $$
BEGIN
  IF (SELECT hold FROM {app}.gf_ctl) THEN PERFORM pg_sleep(120); END IF;
  RETURN true;
END $$;
CREATE VIEW {app}.slow_deployments AS SELECT * FROM {app}.deployments WHERE {app}.gf_hold();
GRANT SELECT ON {app}.gf_ctl, {app}.slow_deployments TO {role};
"""
"""A view of the deployments that holds its query open (pg_sleep, once per query: a stable,
row-independent filter) while gf_ctl.hold is true, so the test can end its backend mid-query."""


def _set_hold(admin: sa.Engine, app: str, hold: bool) -> None:
    with admin.begin() as conn:
        conn.exec_driver_sql(f"UPDATE {app}.gf_ctl SET hold = {'true' if hold else 'false'}")


def _terminate_when_held(admin: sa.Engine, demo: PgDemo, app: str, outcome: dict) -> None:
    """Wait for the reader's query on slow_deployments to be sleeping, release the hold (so the
    retry runs through), then end that backend from this other connection."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with admin.connect() as conn:
            pid = conn.execute(sa.text(
                "SELECT pid FROM pg_stat_activity WHERE usename = :role AND state = 'active' "
                "AND wait_event = 'PgSleep' AND query LIKE '%slow_deployments%'"), {"role": demo.role}).scalar()
        if pid is not None:
            _set_hold(admin, app, False)
            with admin.connect() as conn:
                outcome["terminated"] = conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar()
            outcome["pid"] = pid
            return
        time.sleep(0.1)
    _set_hold(admin, app, False)


def test_backend_terminated_mid_extraction_is_retried_with_identical_results(
    pg_demo: PgDemo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch  # noqa: F811 - the fixture
) -> None:
    admin = sa.create_engine(PG_ADMIN)
    app = pg_demo.app_schema
    with admin.begin() as conn:
        conn.exec_driver_sql(HOLD.format(app=app, role=pg_demo.role))
    framework = tmp_path / "growth.yaml"
    text = DEMO_FRAMEWORK.read_text(encoding="utf-8")
    assert text.count("    table: deployments\n") == 1
    framework.write_text(text.replace("    table: deployments\n", "    table: slow_deployments\n"), encoding="utf-8")
    for name, url in pg_demo.reader_sources.items():
        monkeypatch.setenv(source_env_var(name), url)
    before = fingerprint(pg_demo.admin_url(app))

    def run(name: str):
        monkeypatch.setenv("GROWTH_STORE_URL", f"sqlite:///{tmp_path / name / 'store.db'}")
        return growth_digest(as_of=END, framework_path=str(framework), dry_run=True, return_state=True)

    undisturbed = run("undisturbed")
    assert undisturbed.is_completed()

    _set_hold(admin, app, True)
    outcome: dict = {}
    killer = threading.Thread(target=_terminate_when_held, args=(admin, pg_demo, app, outcome))
    killer.start()
    disturbed = run("disturbed")
    killer.join(150)
    admin.dispose()

    assert outcome.get("terminated") is True  # the extraction's backend really was ended mid-query
    assert disturbed.is_completed()
    runs = task_runs(disturbed.state_details.flow_run_id, until=ran("extract", 2))
    assert runs["extract"].run_count == 2  # failed once (connection lost), retried once
    assert task_runs(undisturbed.state_details.flow_run_id, until=ran("extract", 1))["extract"].run_count == 1
    assert disturbed.result().to_dict() == undisturbed.result().to_dict()
    assert fingerprint(pg_demo.admin_url(app)) == before


# ---------------------------------------------------------------- secrets never leak


def _child_env(standin: SlackStandIn, data_dir: Path, **extra: str) -> dict[str, str]:
    from prefect.settings import PREFECT_API_URL

    env = {k: v for k, v in os.environ.items() if not k.startswith(("GROWTH_", "SLACK_"))}
    env.update(PREFECT_API_URL=str(PREFECT_API_URL.value()), SLACK_API_URL=standin.url,
               GROWTH_DATA_DIR=str(data_dir), PREFECT_LOGGING_LEVEL="DEBUG", **extra)
    return env


def _growth(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    proc = subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


def _prefect_records(flow_run_ids: list[str]) -> str:
    """Everything Prefect keeps of these flow runs: the runs (parameters, state messages),
    their task runs, logs and artifacts, as JSON text."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterId,
        LogFilter,
        LogFilterFlowRunId,
    )

    async def read():
        out = []
        async with get_client() as client:
            for run_id in flow_run_ids:
                run = await client.read_flow_run(uuid.UUID(run_id))
                out.append(run.model_dump_json())
                tasks = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
                out += [t.model_dump_json() for t in tasks]
                logs = await client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))
                out += [log.model_dump_json() for log in logs]
                arts = await client.read_artifacts(
                    artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id])))
                out += [a.model_dump_json() for a in arts]
        return out

    return "\n".join(asyncio.run(read()))


def _files_text(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_secrets_never_appear_in_any_output(pg_demo: PgDemo, tmp_path: Path) -> None:  # noqa: F811
    token = f"xoxb-{uuid.uuid4().hex}-secret"
    password = pg_demo.password
    store_password = f"store-{uuid.uuid4().hex}"  # PostgreSQL store; trust auth ignores it, the URL has it
    secrets = [password, quote(password, safe=""), token, store_password]
    store_schema = f"gf_store_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(PG_ADMIN)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{store_schema}"')
    standin = SlackStandIn(token=token).start()
    reader_env = {source_env_var(n): u for n, u in pg_demo.reader_sources.items()}
    assert all(password in u for u in reader_env.values())
    outputs: dict[str, bytes] = {}
    store = f"postgresql+psycopg://postgres:{store_password}@127.0.0.1:5432/test?options=-csearch_path%3D{store_schema}"
    base = ["--framework", str(DEMO_FRAMEWORK), "--as-of", END.isoformat(), "--store", store, "--channel", "#growth"]
    try:
        # 1. a real run as the SELECT-only role, posting with the token: the pipeline works read-only
        env = _child_env(standin, tmp_path / "data", SLACK_BOT_TOKEN=token, **reader_env)
        code, out = _growth(["run", *base, "--report-json", str(tmp_path / "out" / "report.json")], env)
        assert code == 0, out
        outputs["posting run output"] = out.encode()
        report = json.loads((tmp_path / "out" / "report.json").read_text())
        assert report["delivery"]["status"] == "posted" and report["data_quality"]["status"] in {"passed", "warned"}
        # 2. a dry run writing the Slack blocks
        code, out = _growth(["run", *base, "--dry-run", "--blocks-json", str(tmp_path / "out" / "blocks.json")], env)
        assert code == 0, out
        outputs["dry run output"] = out.encode()
        # 3. a source that refuses connections (password in its URL): exit 4
        refused = {**reader_env, source_env_var("events"):
                   f"postgresql+psycopg://{pg_demo.role}:{quote(password, safe='')}@127.0.0.1:1/test"}
        code, out = _growth(["run", *base], _child_env(standin, tmp_path / "data", SLACK_BOT_TOKEN=token, **refused))
        assert code == 4 and f"{pg_demo.role}:***@127.0.0.1:1" in out, out
        outputs["refused source output"] = out.encode()
        # 4. Slack refuses the token: exit 5
        standin.token = "xoxb-another-token"
        code, out = _growth(["run", *base], env)
        assert code == 5 and "invalid_auth" in out, out
        outputs["refused token output"] = out.encode()
        outputs.update(_files_text(tmp_path))  # report, blocks, chart, Data Docs
        assert any(name.endswith("blocks.json") for name in outputs)
        engine = sa.create_engine(store)
        with engine.connect() as conn:
            flow_runs = [r for r in conn.execute(sa.text("SELECT flow_run_id FROM gf_runs")).scalars() if r]
            tables = sa.inspect(conn).get_table_names()
            assert "gf_runs" in tables and "gf_snapshots" in tables
            outputs["store rows"] = json.dumps(  # every row of every table of the store, as text
                [list(map(str, r)) for t in tables for r in conn.execute(sa.text(f'SELECT * FROM "{t}"'))]
            ).encode()
        engine.dispose()
    finally:
        standin.stop()
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{store_schema}" CASCADE')
        admin.dispose()

    assert len(flow_runs) == 3  # runs 1, 2 and 4 reached the flow
    outputs["prefect records"] = _prefect_records(flow_runs).encode()
    assert b"Beginning flow run" in outputs["prefect records"]  # the logs were read
    outputs["slack requests"] = json.dumps(
        [{"method": c.method, "body": c.body, "raw": c.raw.decode("utf-8", "replace")} for c in standin.calls]
    ).encode()
    assert standin.calls_to("chat.postMessage")  # the message was read

    leaks = [(name, s) for name, data in outputs.items() for s in secrets if s.encode() in data]
    assert leaks == []
    # what a leak would look like is found: the search works
    assert any(token.encode() in (c.token or "").encode() for c in standin.calls)


# ---------------------------------------------------------------- the store's connection dropped mid-write


def test_store_connection_ended_mid_write_is_retried_and_stored_once(
    pg_demo: PgDemo, slack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch  # noqa: F811 - the fixture
) -> None:
    """The store's backend is ended while the run holds its write transaction open (old rows
    deleted, new ones not inserted): the transaction is lost whole, `store-results` is retried,
    and the day ends stored once and posted once."""
    from tasks.store import MetricStore
    from tests.support.slack_standin import VALID_TOKEN

    schema = f"gf_store_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(PG_ADMIN)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    app_name = f"gf_store_{uuid.uuid4().hex[:6]}"
    store = f"{PG_ADMIN}?application_name={app_name}&options=-csearch_path%3D{schema}"
    for name, url in pg_demo.reader_sources.items():
        monkeypatch.setenv(source_env_var(name), url)
    monkeypatch.setenv("GROWTH_STORE_URL", store)
    monkeypatch.setenv("SLACK_BOT_TOKEN", VALID_TOKEN)
    monkeypatch.setenv("SLACK_API_URL", slack.url)
    monkeypatch.setenv("GROWTH_FAULT", "store.write")
    # held until the backend is ended (no race against a fixed sleep); the retry passes at once
    ended = tmp_path / "writer-ended"
    monkeypatch.setenv("GROWTH_FAULT_SLEEP", "120")
    monkeypatch.setenv("GROWTH_FAULT_UNTIL", str(ended))
    outcome: dict = {}

    def end_the_writer() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and "terminated" not in outcome:
            with admin.connect() as conn:
                pid = conn.execute(sa.text(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = :a AND state = 'idle in transaction' "
                    "AND query LIKE 'DELETE FROM gf_%'"), {"a": app_name}).scalar()
                if pid is not None:
                    outcome["terminated"] = conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar()
            time.sleep(0.1)
        ended.touch()  # let the held run go on (also when the backend was never found: the test then fails)

    killer = threading.Thread(target=end_the_writer)
    killer.start()
    try:
        state = growth_digest(as_of=END, framework_path=str(DEMO_FRAMEWORK), channel="#growth", return_state=True)
        killer.join(150)
        assert outcome.get("terminated") is True  # the write transaction's backend really was ended
        assert state.is_completed(), state.message
        runs = task_runs(state.state_details.flow_run_id, until=ran("store-results", 2))
        assert runs["store-results"].run_count == 2
        assert state.result().delivery.status == "posted"
        assert len(slack.calls_to("chat.postMessage")) == 1
        with MetricStore.open(store) as kept:
            assert kept.stored_version("Prefect Growth Framework", END) == 1
            history = kept.step_history("Prefect Growth Framework")
        assert len(history) == 8 and history["as_of"].tolist() == [END] * 8  # one row per step, no duplicates
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.dispose()
