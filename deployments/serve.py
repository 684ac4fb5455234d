"""Serve every growth deployment from one process: no work pool, no worker.

    python -m deployments.serve            # from a clone, with PREFECT_API_URL set (or logged in to Cloud)

For teams without workers. The deployments are read from the project's prefect.yaml (names,
entrypoints, schedules, parameters, concurrency limits, tags), so the served deployments and
the `prefect deploy --all` ones are the same and look the same in the Prefect UI; only the
work pool and the pull steps do not apply (runs execute here, from this checkout). The
version is this checkout's `git describe`. Stop with Ctrl-C (the schedules are paused).
"""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
PREFECT_YAML = ROOT / "prefect.yaml"


def deployment_specs(path: Path = PREFECT_YAML) -> list[dict[str, Any]]:
    """The `deployments:` entries of prefect.yaml (YAML anchors resolved)."""
    return list(yaml.safe_load(path.read_text())["deployments"])


def git_version(root: Path = ROOT) -> str | None:
    """What `prefect deploy` labels a deployment with: `git describe --always --dirty`."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"],
            cwd=root, capture_output=True, text=True, check=True, timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def load_flow(entrypoint: str):
    """``flows/daily.py:growth_digest`` -> the flow object of module ``flows.daily``."""
    file, _, name = entrypoint.partition(":")
    module = importlib.import_module(file.removesuffix(".py").replace("/", "."))
    return getattr(module, name)


def _schedules(spec: dict[str, Any]) -> list:
    from prefect.schedules import Cron

    out = []
    for s in spec.get("schedules") or []:
        if "cron" not in s:
            raise ValueError(f"deployment {spec['name']}: only cron schedules are served, got {s}")
        out.append(Cron(
            s["cron"], timezone=s.get("timezone"), active=s.get("active", True),
            parameters=s.get("parameters") or {}, slug=s.get("slug"),
        ))
    return out


def _concurrency(spec: dict[str, Any]):
    from prefect.client.schemas.objects import ConcurrencyLimitConfig

    limit = spec.get("concurrency_limit")
    return ConcurrencyLimitConfig(**limit) if isinstance(limit, dict) else limit


def build_deployments(names: list[str] | None = None, version: str | None = None) -> list:
    """One RunnerDeployment per prefect.yaml deployment (or only those named)."""
    version = version or git_version()
    built = []
    for spec in deployment_specs():
        if names and spec["name"] not in names:
            continue
        built.append(load_flow(spec["entrypoint"]).to_deployment(
            name=spec["name"],
            schedules=_schedules(spec),
            concurrency_limit=_concurrency(spec),
            parameters=spec.get("parameters") or {},
            description=" ".join((spec.get("description") or "").split()) or None,
            tags=spec.get("tags"),
            version=version,
            enforce_parameter_schema=spec.get("enforce_parameter_schema", True),
        ))
    return built


async def _worker_deployments(deployments: list) -> dict[str, object]:
    """Those of ``deployments`` already registered with a work pool (by `prefect deploy`): name -> id."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    found: dict[str, object] = {}
    async with get_client() as client:
        for d in deployments:
            try:
                existing = await client.read_deployment_by_name(f"{d.flow_name}/{d.name}")
            except ObjectNotFound:
                continue
            if existing.work_pool_name:
                found[f"{d.flow_name}/{d.name}"] = existing.id
    return found


async def _delete(ids: list) -> None:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        for i in ids:
            await client.delete_deployment(i)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m deployments.serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="serve only these deployments (default: all in prefect.yaml)")
    parser.add_argument("--limit", type=int, default=None, help="at most this many runs at once")
    parser.add_argument(
        "--replace", action="store_true",
        help="delete same-named deployments that `prefect deploy` registered with a work pool first",
    )
    args = parser.parse_args(argv)

    # quiet start, Prefect logs for our own loggers too; set before Prefect is imported
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "growth")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.chdir(ROOT)  # entrypoints and the default framework_path are relative to the project root

    import asyncio

    from prefect import serve

    deployments = build_deployments(args.names)
    # A deployment registered by `prefect deploy` keeps its work pool and pull steps when
    # re-registered by serve, and its runs then crash: one or the other, never both.
    clashing = asyncio.run(_worker_deployments(deployments))
    if clashing and not args.replace:
        raise SystemExit(
            f"{', '.join(clashing)}: already deployed to a work pool (prefect deploy). Serve them "
            "instead with --replace (deletes those deployments first), or keep using a worker."
        )
    asyncio.run(_delete(list(clashing.values())))
    serve(*deployments, limit=args.limit)


if __name__ == "__main__":
    main()
