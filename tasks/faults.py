"""Fault injection for tests (a test hook; does nothing unless asked to).

``fault_point(name)`` marks a place in the code where a test may want the
process to stall, e.g. to kill it in the middle of a database write. When the
environment variable ``GROWTH_FAULT`` equals ``name``, it logs one warning
(``fault point <name>: sleeping <s> s``, logger ``growth.faults``, so a test
can tell the process has arrived) and sleeps ``GROWTH_FAULT_SLEEP`` seconds
(default 0). With ``GROWTH_FAULT_UNTIL`` set to a file path, it stops sleeping as
soon as that file exists (``GROWTH_FAULT_SLEEP`` is then the upper bound), so a test
can hold a run at a point until something else has happened, without guessing times.
Otherwise it returns at once.

Fault points:

- ``extract`` (`flows.daily.extract_task`, before any source query);
- ``extract.table`` (`tasks.extract.extract_table`, after each table's grouped
  query has been read, its source connection still open: the run is in the
  middle of extraction);
- ``store.write`` (in `tasks.store.MetricStore.commit_results`, inside the
  transaction, after the old rows of the as_of are deleted and before the new
  ones are inserted);
- ``slack.posted`` (`tasks.publish`, after Slack accepted the post and before
  the delivery is recorded in the store);
- ``slack.chart`` (`tasks.publish.deliver_once`, after the post is recorded, its
  chart owed, and before the chart is uploaded into its thread).
"""

from __future__ import annotations

import logging
import os
import time

log = logging.getLogger("growth.faults")


def fault_point(name: str) -> None:
    if os.environ.get("GROWTH_FAULT") != name:
        return
    try:
        seconds = float(os.environ.get("GROWTH_FAULT_SLEEP") or 0)
    except ValueError:
        seconds = 0.0
    log.warning("fault point %s: sleeping %s s (GROWTH_FAULT test hook)", name, seconds)
    until = os.environ.get("GROWTH_FAULT_UNTIL")
    if not until:
        time.sleep(seconds)
        return
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if os.path.exists(until):
            return
        time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
