"""Reading what the Prefect API recorded about a flow run, for the tests.

The server learns of task runs from the events the task engine emits; they arrive over a
websocket and are written by the server's task-run recorder a little later. A read right
after the flow returned may therefore miss a task's last states (its final run_count), or the
task run itself, on a loaded machine. ``task_runs`` polls until the caller's condition holds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any


def task_runs(flow_run_id: Any, until: Callable[[dict[str, Any]], bool], timeout: float = 60) -> dict[str, Any]:
    """The flow run's task runs, by task name (less Prefect's "-<suffix>"), once ``until(runs)``
    holds; after ``timeout`` seconds, what there is (the test's own assertion then says what
    is missing)."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async def read() -> dict[str, Any]:
        async with get_client() as client:
            deadline = time.monotonic() + timeout
            while True:
                found = await client.read_task_runs(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
                runs = {t.name.rsplit("-", 1)[0]: t for t in found}
                if until(runs) or time.monotonic() > deadline:
                    return runs
                await asyncio.sleep(0.5)

    return asyncio.run(read())


def ran(name: str, times: int) -> Callable[[dict[str, Any]], bool]:
    """A condition for ``task_runs``: task ``name`` has run ``times`` times and reached a final state."""
    def check(runs: dict[str, Any]) -> bool:
        run = runs.get(name)
        return bool(run and run.run_count >= times and run.state and run.state.is_final())
    return check
