"""Errors a user can act on. Each carries the CLI exit status of the contract."""

from __future__ import annotations

RETRY_DELAYS = (2, 10)
"""Seconds to wait before each new attempt of I/O that failed transiently (a source or the
store refusing connections, Slack unreachable or rate-limited): the retrying Prefect tasks
and the CLI's pre-flight check all use these, so a failure costs the same everywhere."""


class GrowthError(Exception):
    """Base class: a clear message, no traceback for the user."""

    exit_code = 1

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class UsageError(GrowthError):
    """Bad command-line usage."""

    exit_code = 2


class SchemaError(GrowthError):
    """A framework file names a table or column the source does not have."""

    exit_code = 2


class SourceError(GrowthError):
    """A source database could not be read (connection refused, driver missing, query failed).

    ``transient`` is True for failures worth retrying (the connection, not the URL or driver).
    """

    exit_code = 4

    def __init__(self, problems: list[str] | str, transient: bool = False):
        super().__init__(problems)
        self.transient = transient


class QualityGateError(GrowthError):
    """The data-quality gate blocked publication. ``report`` holds the full report."""

    exit_code = 3

    def __init__(self, problems: list[str] | str, report: object = None):
        super().__init__(problems)
        self.report = report


class DeliveryError(GrowthError):
    """The digest could not be delivered (the metrics are stored all the same)."""

    exit_code = 5

    def __init__(self, problems: list[str] | str, report: object = None, reason: str | None = None):
        super().__init__(problems)
        self.report = report
        self.reason = reason
