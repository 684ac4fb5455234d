"""The deployments, end to end against a real Prefect server on loopback.

What a data engineer and an analyst do, for real: `prefect server start` (its own
PREFECT_HOME, a free 127.0.0.1 port), `prefect work-pool create --type process`,
`prefect deploy --all` from a git clone of this repository (the repo's own prefect.yaml: its
build steps take the version from git, its pull step clones the deployed commit), a run
created the way the UI's "Run" button creates it (the create-flow-run API call, with custom
parameters), and `prefect worker start --pool ... --run-once` executing it. The clone is a
git repository made from this working tree (tracked and untracked, not ignored, files), so
uncommitted code is what runs; it has no `origin`, so the deployment clones it by path.

Cost, measured on 2 shared cores: 90 s for the module (setup 35 s: the session's test
harness, server start with a fresh database, demo seeding, `prefect deploy` ~10 s; the
worker run ~18 s, a fresh flow-run process importing Prefect, pandas and GX; the failing
run ~9 s; serve ~21 s; the rejections and read-backs under 1 s each). It runs in CI (CI=true: a server that
cannot start fails the test); locally `GROWTH_SKIP_SERVER_TESTS=1` skips it, and so does a
server that cannot start (with the reason).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from framework.config import load_config
from tasks.seed import seed_demo
from tests.conftest import IN_CI, ROOT

pytestmark = [
    pytest.mark.server,
    pytest.mark.skipif(
        not IN_CI and os.environ.get("GROWTH_SKIP_SERVER_TESTS") == "1",
        reason="GROWTH_SKIP_SERVER_TESTS=1 (the real-server deployment test runs in CI)",
    ),
]

PREFECT = str(Path(sys.executable).with_name("prefect"))
SPEC = yaml.safe_load((ROOT / "prefect.yaml").read_text())
DEPLOYMENTS = {d["name"]: d for d in SPEC["deployments"]}
POOL = DEPLOYMENTS["daily"]["work_pool"]["name"]
END = date(2026, 11, 30)
ACCOUNTS = 1500
FRAMEWORK = load_config(ROOT / "framework" / "demo" / "growth.yaml")
KEY = "growth-" + "".join(c if c.isalnum() else "-" for c in FRAMEWORK.name.lower()).strip("-")


@dataclass
class Server:
    api: str
    env: dict[str, str]
    home: Path
    log: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, lines: int = 60) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def _run(args: list[str], env: dict[str, str], cwd: Path, log: Path, timeout: float) -> subprocess.CompletedProcess:
    with log.open("a") as out:
        out.write(f"\n$ {' '.join(args)}\n")
        out.flush()
        done = subprocess.run(args, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(args)} exited {done.returncode}:\n{_tail(log)}"
    return done


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("prefect-server")
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "GROWTH_"))}
    env.update(
        PREFECT_HOME=str(root / "home"), PREFECT_API_URL=api, PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_LOGGING_LEVEL="WARNING", DO_NOT_TRACK="1", GX_ANALYTICS_ENABLED="false",
    )
    log = root / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-ui"],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{api}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                reason = f"prefect server did not start on 127.0.0.1:{port}:\n{_tail(log)}"
                if IN_CI:
                    pytest.fail(reason)
                pytest.skip(reason)
            time.sleep(0.5)
        yield Server(api, env, root / "home", log)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("demo-sources")
    urls = {"app": f"sqlite:///{root / 'app.db'}", "events": f"sqlite:///{root / 'events.db'}"}
    seed_demo(urls["app"], urls["events"], accounts=ACCOUNTS, seed=17, end_date=END)
    return urls


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=e2e", "-c", "user.email=e2e@localhost", *args],
        cwd=repo, check=True, capture_output=True, text=True,
    ).stdout.strip()


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git repository holding this working tree (not ignored files), one commit, no origin."""
    repo = tmp_path_factory.mktemp("clone") / "growth-framework"
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, check=True, capture_output=True,
    ).stdout.decode().split("\0")
    for name in filter(None, listed):
        src = ROOT / name
        if src.is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, repo / name)
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "working tree under test")
    return repo


@dataclass
class Deployed:
    names: list[str]
    commit: str
    version: str
    seconds: float
    at: datetime  # when `prefect deploy` began: the scheduler's runs are all after it


@pytest.fixture(scope="module")
def deployed(server: Server, clone: Path) -> Deployed:
    _run([PREFECT, "work-pool", "create", POOL, "--type", "process"], server.env, clone, server.log, 120)
    present = [n for n, d in DEPLOYMENTS.items() if (clone / d["entrypoint"].split(":")[0]).is_file()]
    if len(present) == len(DEPLOYMENTS):
        args = ["--all"]
    else:  # a flow still being written elsewhere: deploy the others by name
        assert not IN_CI, f"prefect.yaml names entrypoints that do not exist: {set(DEPLOYMENTS) - set(present)}"
        args = [a for n in present for a in ("--name", n)]
    started, at = time.monotonic(), datetime.now(UTC)
    _run([PREFECT, "--no-prompt", "deploy", *args], server.env, clone, server.log, 300)
    return Deployed(
        present, _git(clone, "rev-parse", "HEAD"), _git(clone, "describe", "--always", "--dirty", "--abbrev=12"),
        time.monotonic() - started, at,
    )


def _api(server: Server, work):
    """Run ``await work(client)`` with a Prefect client of the test's server."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    async def go():
        with temporary_settings({PREFECT_API_URL: server.api}):
            async with get_client() as client:
                return await work(client)

    return asyncio.run(go())


def _trigger(server: Server, deployment: str, parameters: dict[str, Any]):
    """What the UI's "Run" with custom parameters does: POST /deployments/{id}/create_flow_run."""

    async def work(client):
        dep = await client.read_deployment_by_name(deployment)
        return await client.create_flow_run_from_deployment(dep.id, parameters=parameters)

    return _api(server, work)


def _worker(server: Server, tmp: Path, demo: dict[str, str]) -> float:
    """One worker poll (`--run-once`): it runs what is due and exits when that has finished."""
    env = dict(server.env)
    env.update(
        GROWTH_DEMO_APP_URL=demo["app"], GROWTH_DEMO_EVENTS_URL=demo["events"],
        GROWTH_STORE_URL=f"sqlite:///{tmp / 'store.db'}", GROWTH_DATA_DIR=str(tmp / "data"),
    )
    started = time.monotonic()
    _run([PREFECT, "worker", "start", "--pool", POOL, "--run-once"], env, tmp, server.log, 600)
    return time.monotonic() - started


def _final_state(server: Server, flow_run_id) -> Any:
    async def work(client):
        deadline = time.monotonic() + 60
        while True:
            run = await client.read_flow_run(flow_run_id)
            if run.state and run.state.is_final() or time.monotonic() > deadline:
                return run
            await asyncio.sleep(1)

    return _api(server, work)


def _events(server: Server, name: str, flow_run_id) -> list:
    from prefect.events.filters import EventFilter, EventNameFilter, EventRelatedFilter

    flt = EventFilter(
        event=EventNameFilter(name=[name]),
        related=EventRelatedFilter(id=[f"prefect.flow-run.{flow_run_id}"]),
    )

    async def work(client):
        deadline = time.monotonic() + 60  # the server persists events in batches
        while True:
            page = await client.read_events(filter=flt, limit=50)  # the server takes at most 50
            if page.events or time.monotonic() > deadline:
                return page.events
            await asyncio.sleep(1)

    return _api(server, work)


def test_daily_run_from_the_ui_completes_with_artifacts_and_event(
    server: Server, deployed: Deployed, demo: dict[str, str], tmp_path: Path
) -> None:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    created = _trigger(server, "growth-digest/daily", {
        "as_of": END.isoformat(), "dry_run": True, "channel": "#growth-e2e", "top_n": 2,
        "report_json": "e2e/report.json",  # a deployment run writes it under the worker's reports dir
    })
    took = _worker(server, tmp_path, demo)
    run = _final_state(server, created.id)
    assert run.state.is_completed(), f"{run.state.type}: {run.state.message}\n{_tail(server.log)}"
    print(f"deploy {deployed.seconds:.1f}s, worker run {took:.1f}s")

    # the deployment's parameters merged with the custom ones, and the run named for its day
    assert run.parameters == {
        **DEPLOYMENTS["daily"]["parameters"], "as_of": "2026-11-30", "dry_run": True, "channel": "#growth-e2e", "top_n": 2,
        "report_json": "e2e/report.json",
    }
    assert run.name == "growth-digest-2026-11-30"
    assert run.deployment_version == deployed.version

    async def artifacts(client):
        return await client.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))

    by_key = {a.key: a for a in _api(server, artifacts)}
    assert set(by_key) == {f"{KEY}-digest", f"{KEY}-funnel", f"{KEY}-funnel-chart", f"{KEY}-data-quality"}
    digest = by_key[f"{KEY}-digest"].data
    assert "growth digest for 2026-11-30" in digest
    assert f"/flow-runs/flow-run/{run.id}" in digest  # the run's UI link in the digest
    assert "#growth-e2e" in digest
    rows = json.loads(by_key[f"{KEY}-funnel"].data)
    assert [r["key"] for r in rows] == [s.key for s in FRAMEWORK.steps]
    written = json.loads((tmp_path / "data" / "reports" / "e2e" / "report.json").read_text())  # GROWTH_DATA_DIR
    assert written["as_of"] == "2026-11-30" and [s["key"] for s in written["steps"]] == [r["key"] for r in rows]
    assert by_key[f"{KEY}-funnel-chart"].data.startswith("data:image/png;base64,")

    # the completion event, for automations: the lowest-converting steps, top_n of them
    (event,) = _events(server, "growth.digest.completed", run.id)
    assert event.resource.id == KEY.replace("growth-", "growth.framework.", 1)
    payload = event.payload
    assert payload["as_of"] == "2026-11-30" and payload["delivery"] == "dry_run"
    assert len(payload["lowest_converting"]) == 2
    ranked = {r["key"]: r for r in rows}
    for step in payload["lowest_converting"]:
        assert step["conversion"] == ranked[step["key"]]["conversion"]
    assert payload["lowest_converting"][0]["conversion"] <= payload["lowest_converting"][1]["conversion"]
    assert payload["flow_run_url"].endswith(f"/flow-runs/flow-run/{run.id}")


def test_a_failing_run_ends_failed_with_the_reason_and_an_event(
    server: Server, deployed: Deployed, demo: dict[str, str], tmp_path: Path
) -> None:
    created = _trigger(server, "growth-digest/daily", {
        "as_of": END.isoformat(), "dry_run": True, "framework_path": "framework/no-such-file.yaml",
    })
    _worker(server, tmp_path, demo)
    run = _final_state(server, created.id)
    assert run.state.is_failed(), f"{run.state.type}: {run.state.message}\n{_tail(server.log)}"
    # the reason, as the CLI would print it, after Prefect's prefix
    assert run.state.message.endswith(
        "ConfigError: framework/no-such-file.yaml: cannot read the file: No such file or directory"
    ), run.state.message
    (event,) = _events(server, "growth.digest.failed", run.id)
    assert event.payload["reason"] == run.state.message
    assert event.payload["as_of"] == "2026-11-30"


def test_schedule_concurrency_and_version_registered_as_written(server: Server, deployed: Deployed, clone: Path) -> None:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    async def read(client):
        deps = {n: await client.read_deployment_by_name(f"{_flow_name(n)}/{n}") for n in deployed.names}
        daily = deps["daily"]
        deadline = time.monotonic() + 60  # the scheduler service schedules new deployments within seconds
        while True:
            runs = await client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[daily.id])))
            scheduled = [r for r in runs if r.auto_scheduled]
            if scheduled or time.monotonic() > deadline:
                return deps, scheduled
            await asyncio.sleep(1)

    deps, scheduled = _api(server, read)
    spec = DEPLOYMENTS["daily"]
    daily = deps["daily"]
    ((schedule,),) = [daily.schedules]
    assert schedule.schedule.cron == spec["schedules"][0]["cron"] == "0 7 * * *"
    assert schedule.schedule.timezone == spec["schedules"][0]["timezone"] == "UTC"
    assert schedule.active is True
    assert daily.global_concurrency_limit.limit == spec["concurrency_limit"]["limit"] == 1
    assert daily.concurrency_options.collision_strategy.value == "ENQUEUE"
    assert daily.parameters == spec["parameters"]
    assert daily.enforce_parameter_schema is True
    assert daily.work_pool_name == POOL
    # version and code: the commit deployed from, cloned by the workers
    assert daily.version == deployed.version == deployed.commit[:12]
    ((step_name, step),) = daily.pull_steps[0].items()
    assert step_name == "prefect.deployments.steps.git_clone"
    assert step["repository"] == str(clone) and step["commit_sha"] == deployed.commit

    # the server scheduled the coming days at 07:00 UTC, with the deployment's parameters
    assert scheduled, "no scheduled run of the daily deployment"
    for r in scheduled:
        at = r.expected_start_time.astimezone(UTC)
        # after the deployment was made (not after now: 07:00 may pass while the module runs)
        assert (at.hour, at.minute) == (7, 0) and at > deployed.at
        assert r.parameters == spec["parameters"]

    for name in deployed.names:
        if name != "daily":
            assert deps[name].schedules == [], f"{name} is manual only"
            assert deps[name].version == deployed.version
    assert deps["backfill"].global_concurrency_limit.limit == 1


def _flow_name(deployment: str) -> str:
    return {"daily": "growth-digest", "backfill": "growth-backfill", "impact": "growth-impact"}[deployment]


@pytest.mark.parametrize(
    ("deployment", "parameters", "mentions"),
    [
        ("growth-digest/daily", {"as_of": "not-a-date"}, "as_of"),
        ("growth-digest/daily", {"top_n": 0}, "top_n"),
        ("growth-digest/daily", {"dry_run": "sometimes"}, "dry_run"),
        ("growth-digest/daily", {"mode": "bogus"}, "mode"),
        ("growth-backfill/backfill", {"start": "2026-11-01"}, "end"),
    ],
    ids=["date", "bounded-int", "bool", "choice", "required"],
)
def test_bad_parameters_are_rejected_when_the_run_is_created(
    server: Server, deployed: Deployed, deployment: str, parameters: dict, mentions: str
) -> None:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
    from prefect.exceptions import PrefectHTTPStatusError

    async def manual_runs(client) -> int:
        runs = await client.read_flow_runs(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment.split("/")[1]]))
        )
        return sum(not r.auto_scheduled for r in runs)

    before = _api(server, manual_runs)
    with pytest.raises(PrefectHTTPStatusError) as err:
        _trigger(server, deployment, parameters)
    assert err.value.response.status_code == 409
    detail = err.value.response.json()["detail"]
    print(detail)
    assert "Validation failed" in detail and mentions in detail, detail
    assert _api(server, manual_runs) == before  # nothing was created


def test_serve_runs_the_same_deployment_without_a_worker(
    server: Server, deployed: Deployed, demo: dict[str, str], tmp_path: Path
) -> None:
    """`python -m deployments.serve daily` re-registers growth-digest/daily as a served
    deployment (no work pool) and runs what the UI starts. Last: it replaces the worker one."""
    from deployments.serve import git_version

    version = git_version()
    assert version != deployed.version  # the clone has a commit of its own
    env = dict(server.env)
    env.update(
        GROWTH_DEMO_APP_URL=demo["app"], GROWTH_DEMO_EVENTS_URL=demo["events"],
        GROWTH_STORE_URL=f"sqlite:///{tmp_path / 'store.db'}", GROWTH_DATA_DIR=str(tmp_path / "data"),
        PREFECT_RUNNER_POLL_FREQUENCY="2",
    )
    # growth-digest/daily is deployed to the work pool: serve refuses to mix the two ...
    refused = subprocess.run(
        [sys.executable, "-m", "deployments.serve", "daily"], env=env, cwd=tmp_path,
        capture_output=True, text=True, timeout=120,
    )
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines()[-1].startswith(
        "growth-digest/daily: already deployed to a work pool (prefect deploy). Serve them instead with --replace"
    ), refused.stderr
    # ... and with --replace serves it instead
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "deployments.serve", "--replace", "daily"], env=env, cwd=tmp_path,
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        async def served(client):
            from prefect.exceptions import ObjectNotFound

            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    dep = await client.read_deployment_by_name("growth-digest/daily")
                except ObjectNotFound:  # between --replace's delete and serve's registration
                    dep = None
                if dep is not None and dep.version == version:  # re-registered from this checkout
                    return dep
                await asyncio.sleep(1)
            return None

        dep = _api(server, served)
        assert dep is not None, f"serve did not register the deployment:\n{_tail(log)}"
        assert dep.work_pool_name is None and not dep.pull_steps
        assert [s.schedule.cron for s in dep.schedules] == ["0 7 * * *"]
        assert dep.global_concurrency_limit.limit == 1

        created = _trigger(server, "growth-digest/daily", {"as_of": END.isoformat(), "dry_run": True})

        async def finished(client):
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                run = await client.read_flow_run(created.id)
                if run.state and run.state.is_final():
                    return run
                await asyncio.sleep(1)
            return run

        run = _api(server, finished)
        assert run.state.is_completed(), f"{run.state.type}: {run.state.message}\n{_tail(log)}"
        assert run.name == "growth-digest-2026-11-30"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)  # serve pauses its schedules on the way out
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
