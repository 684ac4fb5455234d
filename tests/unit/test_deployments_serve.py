"""`python -m deployments.serve` serves the deployments prefect.yaml describes, not a copy.

Building the deployments needs no Prefect API; serving them is exercised against a real
server in tests/flows/test_deployments_e2e.py.
"""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
SPEC = yaml.safe_load((ROOT / "prefect.yaml").read_text())


def test_served_deployments_match_prefect_yaml() -> None:
    from deployments.serve import build_deployments

    specs = [d for d in SPEC["deployments"] if (ROOT / d["entrypoint"].split(":")[0]).is_file()]
    built = {d.name: d for d in build_deployments([s["name"] for s in specs], version="v-test")}
    assert sorted(built) == sorted(s["name"] for s in specs)
    for spec in specs:
        d = built[spec["name"]]
        assert d.entrypoint == spec["entrypoint"]
        assert d.parameters == spec.get("parameters", {})
        assert d.tags == spec["tags"]
        assert d.version == "v-test"
        assert d.enforce_parameter_schema is True
        assert d.description == " ".join(spec["description"].split())
        want = [(s["cron"], s["timezone"], s.get("active", True)) for s in spec.get("schedules") or []]
        assert [(s.schedule.cron, s.schedule.timezone, s.active) for s in d.schedules] == want
        limit = spec.get("concurrency_limit")
        if limit is None:
            assert d.concurrency_limit is None
        else:
            assert d.concurrency_limit == limit["limit"]
            assert d.concurrency_options.collision_strategy.value == limit["collision_strategy"]


def test_daily_is_scheduled_at_seven_utc_and_never_overlaps() -> None:
    from deployments.serve import build_deployments

    (daily,) = build_deployments(["daily"], version="v-test")
    ((cron, tz),) = [(s.schedule.cron, s.schedule.timezone) for s in daily.schedules]
    assert (cron, tz) == ("0 7 * * *", "UTC")
    assert daily.concurrency_limit == 1


def test_git_version_is_what_prefect_deploy_labels() -> None:
    """serve labels its deployments with what prefect.yaml's `git-version` build step prints."""
    from deployments.serve import git_version

    (script,) = [
        step["prefect.deployments.steps.run_shell_script"]["script"] for step in SPEC["build"]
        if step.get("prefect.deployments.steps.run_shell_script", {}).get("id") == "git-version"
    ]
    printed = subprocess.run(shlex.split(script), cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert git_version() == printed.strip()
    assert git_version(Path("/")) is None  # not a git checkout: no version rather than a failure
