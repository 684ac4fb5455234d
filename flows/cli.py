"""The ``growth`` command (contract: shared/specs/cli-and-report.md).

Exit status: 0 success, 2 bad usage or framework file, 3 quality gate
blocked publication, 4 a source could not be read, 5 delivery failed.
User errors print one clear line (or a short list) on stderr, never a
traceback. Prefect is imported only by the commands that run a flow.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import get_args

from framework.config import Cohort, FrameworkConfig, Mode, load_config
from framework.errors import RETRY_DELAYS, GrowthError, UsageError

DEMO_FRAMEWORK = Path(__file__).resolve().parent.parent / "framework" / "demo" / "growth.yaml"


def _today() -> date:
    return datetime.now(UTC).date()


def _yesterday() -> date:
    return _today() - timedelta(days=1)


def _date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {value!r}") from None


def _int_at_least(minimum: int):
    def parse(value: str) -> int:
        try:
            n = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {value!r}") from None
        if n < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}: {value}")
        return n

    return parse


_positive = _int_at_least(1)
_non_negative = _int_at_least(0)


def _cohorts(value: str) -> int:
    from framework.impact import MAX_COHORTS

    n = _positive(value)
    if n > MAX_COHORTS:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_COHORTS}: {value}")
    return n


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # exit 2 with one line, as argparse does, without the usage dump
        raise UsageError(f"{self.prog}: {message}")


def _data_dir() -> Path:
    return Path(os.environ.get("GROWTH_DATA_DIR", "data")).resolve()


def _quiet_runtime() -> None:
    """Environment for a local flow run, set before Prefect or GX are imported."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "growth")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    if "PREFECT_API_URL" not in os.environ and "PREFECT_HOME" not in os.environ:
        home = _data_dir() / ".prefect"
        home.mkdir(parents=True, exist_ok=True)
        os.environ["PREFECT_HOME"] = str(home)


class _NoTracebackForUserErrors(logging.Filter):
    """Prefect logs a failed task with its traceback; on the terminal a user error (a
    GrowthError: unreachable source or store, refused delivery) is its one clear line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], GrowthError):
            if str(record.msg).startswith("Encountered exception during execution"):
                return False  # the flow's own failure: the command prints its problems itself
            record.exc_info, record.exc_text = None, None
        return True


def _plain_user_errors() -> None:
    """Install the filter on the console handlers (the root logger's, set up by Prefect)."""
    # Shutdown chatter while the run's last events are flushed ("Still processing items").
    logging.getLogger("EventsWorker").setLevel(logging.ERROR)
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _NoTracebackForUserErrors) for f in handler.filters):
            handler.addFilter(_NoTracebackForUserErrors())


def _use_store(url: str | None) -> str:
    """The metric store for this command: --store, else GROWTH_STORE_URL, else data/growth.db."""
    from tasks.secrets import STORE_URL_ENV

    chosen = url or os.environ.get(STORE_URL_ENV) or f"sqlite:///{_data_dir() / 'growth.db'}"
    os.environ[STORE_URL_ENV] = chosen
    return chosen


# ---- commands ---------------------------------------------------------------------


def cmd_validate(args: argparse.Namespace) -> int:
    cfg = load_config(args.file)
    tracked = cfg.tracked_steps
    print(
        f"{args.file}: ok: '{cfg.name}', {len(cfg.steps)} steps "
        f"({len(tracked)} tracked, {sum(s.qualifying for s in cfg.steps)} qualifying, "
        f"{len(cfg.steps) - len(tracked)} untracked), sources: {', '.join(cfg.sources)}"
    )
    return 0


def cmd_seed_demo(args: argparse.Namespace) -> int:
    from tasks.seed import seed_demo

    meta = seed_demo(
        args.url, args.events_url, accounts=args.accounts, seed=args.seed, end_date=args.end_date,
        progress=_progress_printer(),
    )
    print(
        f"demo data: {meta['accounts']} accounts, seed {meta['seed']}, through {meta['end_date']}; "
        f"product change on {meta['change_date']} lifts {meta['change_step']}"
    )
    return 0


def _progress_printer():
    if not sys.stderr.isatty():
        return None

    def show(table: str, done: int, total: int) -> None:
        sys.stderr.write(f"\r  {table:<14} {done:>10,}/{total:,}")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show


def _apply_source_overrides(cfg: FrameworkConfig, pairs: list[str]) -> None:
    from tasks.secrets import source_env_var

    for pair in pairs:
        name, sep, url = pair.partition("=")
        if not sep or not name or not url:
            raise UsageError(f"--source expects NAME=URL, got {pair.split('=', 1)[0]!r}=...")
        if name not in cfg.sources:
            raise UsageError(f"--source {name}: unknown source (sources: {', '.join(cfg.sources)})")
        os.environ[source_env_var(name)] = url


# A source that refuses connections is tried again after these pauses (seconds), as the
# flow's check-schema task is, then the run exits 4.
SOURCE_RETRY_DELAYS = RETRY_DELAYS


@contextmanager
def _time_limit(seconds: float):
    """Raise TimeoutError in the block after ``seconds`` (SIGALRM: the main thread only, where
    the CLI runs; elsewhere no limit). The drivers wait for the server in Python, so a hung
    connection or a blocked catalogue query is interrupted."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expired(signum, frame):
        raise TimeoutError(f"timed out after {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _preflight(cfg: FrameworkConfig, sleep=None) -> None:
    """Check sources and identifiers before paying Prefect's start-up: a bad name is exit 2 at
    once; a source that refuses connections (a transient failure) is tried again after each of
    SOURCE_RETRY_DELAYS, then exit 4 naming the source (never its password)."""
    import time

    from framework.errors import SourceError
    from tasks import extract, secrets

    sleep = sleep or time.sleep
    urls = secrets.resolve_source_urls(cfg)
    limit = extract.extract_timeout()
    attempts = len(SOURCE_RETRY_DELAYS) + 1
    for attempt in range(attempts):
        sources = extract.open_sources(urls)
        try:
            with _time_limit(min(extract.CHECK_SCHEMA_TIMEOUT, limit)):
                extract.check_schema(cfg, sources)
            return
        except TimeoutError:  # a hung connection or a locked catalogue: not retried
            raise extract.too_slow(limit) from None
        except SourceError as exc:
            if not exc.transient:
                raise
            if attempt == attempts - 1:
                waited = sum(SOURCE_RETRY_DELAYS)
                raise SourceError(
                    [*exc.problems[:-1], f"{exc.problems[-1]} (gave up after {attempts} attempts over {waited} s)"],
                    transient=True,
                ) from None
        finally:
            sources.dispose()
        sleep(SOURCE_RETRY_DELAYS[attempt])


def _run_flow(
    framework: Path, as_of: date | None, dry_run: bool, report_json: str | None,
    channel: str | None, top_n: int | None, blocks_json: str | None, full_refresh: bool = False,
    mode: str | None = None, cohort: str | None = None,
) -> int:
    _quiet_runtime()
    from flows.daily import growth_digest
    from framework.digest import render_blocks, render_text
    from framework.errors import DeliveryError, QualityGateError
    from tasks.publish import write_blocks
    from tasks.store import ConcurrentRunError

    _plain_user_errors()
    code = 0
    try:
        report = growth_digest(
            as_of=as_of, framework_path=str(framework), dry_run=dry_run, channel=channel,
            top_n=top_n, report_json=report_json, full_refresh=full_refresh, mode=mode, cohort=cohort,
        )
    except (QualityGateError, DeliveryError) as exc:
        report, code = exc.report, exc.exit_code
        if report is None:
            raise
        print(render_text(report))
        for line in exc.problems:
            print(line, file=sys.stderr)
        return code
    except ConcurrentRunError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        return exc.exit_code
    if report.delivery.status == "dry_run":
        print(render_text(report))
        if blocks_json:
            write_blocks(render_blocks(report), blocks_json)
    else:
        print(f"digest {report.delivery.status} in {report.delivery.channel} (ts {report.delivery.ts})")
    if report_json:
        print(f"report: {report_json}", file=sys.stderr)
    return code


def _writable(path: str | None, flag: str) -> None:
    """Fail in a second, with exit 2, on an output file that cannot be written (not after
    the run has computed and stored everything)."""
    if path:
        from tasks.publish import check_writable

        check_writable(path, flag)


def cmd_run(args: argparse.Namespace) -> int:
    _writable(args.report_json, "--report-json")
    _writable(args.blocks_json, "--blocks-json")
    cfg = load_config(args.framework)
    _apply_source_overrides(cfg, args.source or [])
    _use_store(args.store)
    _preflight(cfg)
    # A scheduled-style run: Prefect's progress lines stay in the run's logs (UI/API); the
    # terminal gets warnings, the digest (stdout) and, on failure, the problems (stderr).
    # PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL=INFO shows the progress again.
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    return _run_flow(
        Path(args.framework), args.as_of, args.dry_run, args.report_json, args.channel, args.top_n,
        args.blocks_json, args.full_refresh, args.mode, args.cohort,
    )


def cmd_demo(args: argparse.Namespace) -> int:
    from framework.demo import GENERATOR_VERSION
    from tasks.secrets import source_env_var
    from tasks.seed import read_demo_meta, seed_demo

    data = _data_dir()
    data.mkdir(parents=True, exist_ok=True)
    app_url = f"sqlite:///{data / 'demo_app.db'}"
    events_url = f"sqlite:///{data / 'demo_events.db'}"
    as_of = _yesterday()
    meta = None if args.fresh else read_demo_meta(app_url)
    wanted = {
        "accounts": str(args.accounts), "seed": str(args.seed), "end_date": as_of.isoformat(),
        "generator_version": GENERATOR_VERSION,
    }
    rebuilt = meta is None or any(meta.get(k) != v for k, v in wanted.items())
    if rebuilt:
        why = "building" if meta is None else "rebuilding (different size, seed, day or generator)"
        print(f"{why} the demo databases under {data} ...", file=sys.stderr)
        seed_demo(app_url, events_url, accounts=args.accounts, seed=args.seed, end_date=as_of,
                  progress=_progress_printer())
    else:
        print(f"reusing the demo databases under {data}", file=sys.stderr)
    os.environ[source_env_var("app")] = app_url
    os.environ[source_env_var("events")] = events_url
    _use_store(args.store)
    if args.history:
        _quiet_runtime()
        os.environ["GROWTH_PROGRESS"] = "1"
        from flows.backfill import growth_backfill

        start, end = as_of - timedelta(days=args.history), as_of - timedelta(days=1)
        print(f"history: storing {start}..{end} (days already stored are skipped)", file=sys.stderr)
        # new demo data means the stored history was computed from other data: recompute it
        growth_backfill(start=start, end=end, framework_path=str(DEMO_FRAMEWORK), force=rebuilt)
    return _run_flow(
        DEMO_FRAMEWORK, as_of, True, str(data / "report.json"), None, None,
        str(data / "digest-blocks.json"),
    )


def cmd_backfill(args: argparse.Namespace) -> int:
    cfg = load_config(args.framework)
    _apply_source_overrides(cfg, args.source or [])
    _use_store(args.store)
    if args.end < args.start:
        raise UsageError(f"growth backfill: --end {args.end} is before --start {args.start}")
    _preflight(cfg)
    _quiet_runtime()
    os.environ["GROWTH_PROGRESS"] = "1"
    from flows.backfill import growth_backfill
    from framework.errors import QualityGateError

    _plain_user_errors()
    try:
        outcome = growth_backfill(
            start=args.start, end=args.end, framework_path=str(Path(args.framework)), force=args.force
        )
    except QualityGateError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        return exc.exit_code
    print(
        f"backfill {args.start}..{args.end}: {len(outcome['stored'])} stored, "
        f"{len(outcome['skipped'])} already stored (skipped; --force recomputes)"
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from tasks.store import MetricStore

    cfg = load_config(args.framework)
    store = MetricStore.open(_use_store(args.store))
    try:
        history = store.step_history(cfg.name)
    finally:
        store.close()
    if args.format == "csv":
        if args.output:
            history.to_csv(args.output, index=False)
        else:
            history.to_csv(sys.stdout, index=False)
    else:
        target = args.output or "step_metrics.parquet"
        history.to_parquet(target, index=False)
        print(f"{len(history)} rows written to {target}", file=sys.stderr)
    return 0


def cmd_deliver(args: argparse.Namespace) -> int:
    """Send the stored digest of one day again: exactly once per channel and date (a stored
    message is updated; a first post is searched for before it is repeated)."""
    from framework.report import report_from_dict
    from tasks import publish, secrets
    from tasks.store import MetricStore

    cfg = load_config(args.framework)
    channel = args.channel or cfg.report.channel
    store = MetricStore.open(_use_store(args.store))
    try:
        stored = store.load_report(cfg.name, args.as_of)
        if stored is None:
            raise UsageError(
                f"growth deliver: nothing stored for '{cfg.name}' on {args.as_of} "
                "(growth run or growth backfill stores a day first)"
            )
        token = secrets.resolve_slack_token()
        if token is None:
            from framework.errors import DeliveryError

            raise DeliveryError(
                "growth deliver: no Slack credentials (SLACK_BOT_TOKEN or Secret block 'slack-bot-token')"
            )
        report = report_from_dict(stored)
        report = replace(report, delivery=replace(report.delivery, channel=channel, status="dry_run", ts=None))
        import tempfile

        with tempfile.TemporaryDirectory(prefix="growth-") as scratch:  # the chart lives as long as the post
            chart = None
            if report.data_quality.status != "failed":
                from tasks.chart import render_funnel_chart

                chart = render_funnel_chart(report, Path(scratch) / "funnel.png")
            delivery = publish.deliver_once(store, token, report, None, chart)
    finally:
        store.close()
    if report.data_quality.status == "failed":
        print(f"the stored results of {args.as_of} failed the data-quality gate: the alert was sent to "
              f"{channel} (ts {delivery.ts})", file=sys.stderr)
        return 3
    print(f"digest {delivery.status} in {channel} (ts {delivery.ts})")
    return 0


def cmd_impact(args: argparse.Namespace) -> int:
    """Did the change shipped on --change-date move --step? Checks the request and the sources
    first (exit 2 or 4 in a second), then runs the growth-impact flow."""
    from framework import impact
    from framework.errors import DeliveryError

    _writable(args.json, "--json")
    cfg = load_config(args.framework)
    _apply_source_overrides(cfg, args.source or [])
    today = _today()
    as_of = args.as_of or today - timedelta(days=1)
    impact.check_request(cfg, args.step, args.change_date, as_of, args.segment,
                         args.before_cohorts, args.after_cohorts, today=today)
    _preflight(cfg)
    _quiet_runtime()
    from flows.impact import growth_impact

    code = 0
    try:
        result = growth_impact(
            framework_path=str(Path(args.framework)), step=args.step, change_date=args.change_date,
            before_cohorts=args.before_cohorts, after_cohorts=args.after_cohorts, segment=args.segment,
            as_of=as_of, dry_run=args.dry_run, channel=args.channel,
        )
    except DeliveryError as exc:
        if not isinstance(exc.report, impact.ImpactResult):
            raise
        result, code = exc.report, exc.exit_code
        for line in exc.problems:
            print(line, file=sys.stderr)
    print(impact.render_text(result))
    if args.json:
        _write_impact_outputs(result, args.json)
    if result.delivery is not None and result.delivery.status == "posted":
        print(f"posted to {result.delivery.channel} (ts {result.delivery.ts})", file=sys.stderr)
    return code


def impact_chart_path(json_path: str | Path) -> Path:
    """Where ``--json FILE`` puts the chart: beside FILE, FILE's name less its last suffix plus
    ``.chart.png`` (impact.json -> impact.chart.png). Never FILE itself, whatever its name
    (x.png -> x.chart.png), also on a case-insensitive file system: FILE's own suffix has
    one dot, never the two of '.chart.png'."""
    target = Path(json_path)
    return target.with_name(f"{target.stem}.chart.png")


def _write_impact_outputs(result, json_path: str) -> None:
    """The JSON result, then its chart. The chart is a bonus: if it cannot be drawn or
    written, a warning on stderr, and the command's exit status is what it would be."""
    from tasks.publish import write_report

    write_report(result.to_json(), json_path)
    chart_path = impact_chart_path(json_path)
    try:
        from tasks.impact_chart import render_impact_chart

        chart = render_impact_chart(result, chart_path)
    except Exception as exc:  # noqa: BLE001 - a chart is never worth failing the command
        print(f"result: {json_path}", file=sys.stderr)
        print(f"warning: the impact chart could not be drawn to {chart_path}: {exc}", file=sys.stderr)
        return
    print(f"result: {json_path} (chart: {chart})", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="growth", description="Growth framework: rank the lowest-converting funnel steps.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("demo", help="build (or reuse) the demo databases, run the daily flow dry, print the digest")
    p.add_argument("--accounts", type=_positive, default=5000, help="demo accounts (default 5000)")
    p.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    p.add_argument("--fresh", action="store_true", help="rebuild the demo databases even if present")
    p.add_argument("--history", type=_non_negative, default=28, metavar="DAYS",
                   help="backfill this many days before the digest's day into the store (default 28; 0: none)")
    p.add_argument("--store", metavar="URL", help="metric store (default $GROWTH_STORE_URL, else data/growth.db)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("run", help="one daily run: extract, validate, compute, publish")
    p.add_argument("--framework", required=True, help="the framework file (YAML)")
    p.add_argument("--as-of", type=_date, default=None, help="day to report for, YYYY-MM-DD (default yesterday UTC)")
    p.add_argument("--source", action="extend", nargs="+", metavar="NAME=URL",
                   help="override a source's URL (repeatable; several may follow one --source)")
    p.add_argument("--store", metavar="URL", help="metric store (default $GROWTH_STORE_URL, else data/growth.db)")
    p.add_argument("--dry-run", action="store_true", help="publish nowhere; print the digest as text")
    p.add_argument("--report-json", metavar="FILE", help="write the JSON report to FILE")
    p.add_argument("--blocks-json", metavar="FILE", help="with --dry-run: write the Slack Block Kit JSON to FILE")
    p.add_argument("--channel", help="Slack channel (default: the framework file's report.channel)")
    p.add_argument("--top-n", type=_positive, help="lowest-converting steps to show (default: report.top_n)")
    p.add_argument("--full-refresh", action="store_true",
                   help="read every source record again instead of only those since the last run")
    p.add_argument("--mode", choices=get_args(Mode),
                   help="count reach this way instead of the file's funnel.mode; stored and posted as its "
                        "own series, '<framework> (<mode> mode)', never in place of the daily numbers")
    p.add_argument("--cohort", choices=get_args(Cohort),
                   help="cohort size instead of the file's funnel.cohort; like --mode, its own series")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("backfill", help="compute and store past days, oldest first, posting nothing")
    p.add_argument("--framework", required=True, help="the framework file (YAML)")
    p.add_argument("--start", type=_date, required=True, help="first as_of, YYYY-MM-DD")
    p.add_argument("--end", type=_date, required=True, help="last as_of (inclusive), YYYY-MM-DD")
    p.add_argument("--source", action="extend", nargs="+", metavar="NAME=URL",
                   help="override a source's URL (repeatable; several may follow one --source)")
    p.add_argument("--store", metavar="URL", help="metric store (default $GROWTH_STORE_URL, else data/growth.db)")
    p.add_argument("--force", action="store_true", help="recompute dates already stored")
    p.set_defaults(func=cmd_backfill)

    p = sub.add_parser("export", help="the stored step metrics history, one row per as_of x step")
    p.add_argument("--framework", required=True, help="the framework file (YAML)")
    p.add_argument("--format", choices=["csv", "parquet"], default="csv")
    p.add_argument("--store", metavar="URL", help="metric store (default $GROWTH_STORE_URL, else data/growth.db)")
    p.add_argument("--output", metavar="FILE", help="file to write (csv default: stdout; parquet default: step_metrics.parquet)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("deliver", help="send a stored day's digest to Slack again (exactly once per channel and date)")
    p.add_argument("--framework", required=True, help="the framework file (YAML)")
    p.add_argument("--as-of", type=_date, required=True, help="the stored day, YYYY-MM-DD")
    p.add_argument("--channel", help="Slack channel (default: the framework file's report.channel)")
    p.add_argument("--store", metavar="URL", help="metric store (default $GROWTH_STORE_URL, else data/growth.db)")
    p.set_defaults(func=cmd_deliver)

    p = sub.add_parser("impact", help="did a change move a step? mature cohorts before against after it")
    p.add_argument("--framework", required=True, help="the framework file (YAML)")
    p.add_argument("--step", required=True, metavar="KEY", help="the tracked step the change was meant to move")
    p.add_argument("--change-date", type=_date, required=True, metavar="D",
                   help="the day the change shipped, YYYY-MM-DD (signups on or after it are 'after')")
    p.add_argument("--before-cohorts", type=_cohorts, default=3, metavar="N",
                   help="mature cohorts just before the change to compare against (default 3)")
    p.add_argument("--after-cohorts", type=_cohorts, default=3, metavar="N",
                   help="mature cohorts after the change needed for a verdict (default 3)")
    p.add_argument("--segment", metavar="ATTR", help="also compare per value of this attribute (Bonferroni)")
    p.add_argument("--as-of", type=_date, default=None,
                   help="the data's last day, YYYY-MM-DD, at most yesterday UTC (the default)")
    p.add_argument("--source", action="extend", nargs="+", metavar="NAME=URL",
                   help="override a source's URL (repeatable; several may follow one --source)")
    p.add_argument("--dry-run", action="store_true", help="post nothing to Slack; print the result")
    p.add_argument("--channel", help="Slack channel (default: the framework file's report.channel)")
    p.add_argument("--json", metavar="FILE", help="write the JSON result to FILE and the chart beside it (FILE less its suffix, .chart.png)")
    p.set_defaults(func=cmd_impact)

    p = sub.add_parser("validate", help="check a framework file; exit 0 or 2")
    p.add_argument("file")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("seed-demo", help="load the demo data into a database")
    p.add_argument("--url", required=True, help="SQLAlchemy URL of the app database")
    p.add_argument("--events-url", help="SQLAlchemy URL of the events database (default: the same as --url)")
    p.add_argument("--accounts", type=_positive, default=5000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--end-date", type=_date, default=None, help="last day of data (default yesterday UTC)")
    p.set_defaults(func=cmd_seed_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except GrowthError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
