"""A fast, quiet start: importing the flows (what `prefect deploy`, `python -m deployments.serve`,
a worker's flow-run process and the `growth` command do first) loads neither Great
Expectations nor matplotlib; they are imported by the tasks that use them, when they run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("great_expectations", "matplotlib")
MODULES = ("flows.daily", "flows.backfill", "flows.impact", "flows.cli", "deployments.serve")


def test_importing_the_flows_loads_no_heavy_library() -> None:
    code = (
        "import importlib, json, sys\n"
        f"for name in {MODULES!r}:\n"
        "    importlib.import_module(name)\n"
        "from prefect.utilities.callables import parameter_schema\n"
        "from deployments.serve import deployment_specs, load_flow\n"
        "for spec in deployment_specs():\n"  # what `prefect deploy` computes for each deployment
        "    parameter_schema(load_flow(spec['entrypoint']))\n"
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [], done.stdout
