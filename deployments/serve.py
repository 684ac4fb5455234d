"""Serve the growth deployments from one process (no work pool needed).

    python -m deployments.serve

Runs the daily digest at 07:00 UTC and accepts manual runs from the Prefect UI.
"""

from __future__ import annotations

import os

from prefect import serve

from flows.daily import growth_digest


def main() -> None:
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "growth")
    daily = growth_digest.to_deployment(
        name="daily",
        cron=os.environ.get("GROWTH_DAILY_CRON", "0 7 * * *"),
        parameters={"framework_path": os.environ.get("GROWTH_FRAMEWORK", "framework/demo/growth.yaml")},
        concurrency_limit=1,
        tags=["growth"],
    )
    serve(daily)


if __name__ == "__main__":
    main()
