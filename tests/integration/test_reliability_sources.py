"""Sources are only read, and hostile framework text cannot change them.

* A PostgreSQL role with SELECT-only grants (what docs/reliability.md tells a team to create)
  reads everything the pipeline needs, gets exactly what a superuser gets, and every write
  it tries is refused.
* Hostile identifiers (``accounts; DROP TABLE x``, quotes, unicode, very long names) are
  rejected by the schema check (exit 2) on PostgreSQL, MariaDB and SQLite when the source has
  no such table or column (the entity's table, id, created_at, attributes, a ``where`` column,
  a ``via`` column); tables and columns that really have such names are read with quoted
  identifiers, the right rows, on all three; hostile ``where`` values are bound as parameters
  and match only themselves. Each test proves, with a fingerprint of every table's contents,
  that the source is unchanged afterwards.

The module's fixtures (``pg_demo``) are reused by tests/flows/test_reliability_security.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from urllib.parse import quote

import pytest
import sqlalchemy as sa

from framework.config import parse_config
from framework.errors import SchemaError, SourceError
from tasks import extract
from tasks.seed import seed_demo
from tests.conftest import DEMO_FRAMEWORK
from tests.integration.conftest import PG_URL, _require

END = date(2026, 11, 30)
PG_ADMIN = PG_URL  # the test server's superuser (trust authentication on 127.0.0.1)

READER_GRANTS = """
CREATE ROLE {role} LOGIN PASSWORD '{password}';
GRANT CONNECT ON DATABASE {database} TO {role};
GRANT USAGE ON SCHEMA {schema} TO {role};
GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {role};
ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT SELECT ON TABLES TO {role};
"""
"""The grants docs/reliability.md gives (one USAGE/SELECT block per schema the framework reads)."""


def with_search_path(url: str, schema: str) -> str:
    return f"{url}?options=-csearch_path%3D{schema}"


@dataclass(frozen=True)
class PgDemo:
    """The demo's app and events databases as two PostgreSQL schemas, and a SELECT-only role."""

    app_schema: str
    events_schema: str
    role: str
    password: str

    def reader_url(self, schema: str) -> str:
        return with_search_path(
            f"postgresql+psycopg://{self.role}:{quote(self.password, safe='')}@127.0.0.1:5432/test", schema)

    def admin_url(self, schema: str) -> str:
        return with_search_path(PG_ADMIN, schema)

    @property
    def reader_sources(self) -> dict[str, str]:
        return {"app": self.reader_url(self.app_schema), "events": self.reader_url(self.events_schema)}

    @property
    def admin_sources(self) -> dict[str, str]:
        return {"app": self.admin_url(self.app_schema), "events": self.admin_url(self.events_schema)}


@pytest.fixture(scope="module")
def pg_demo() -> Iterator[PgDemo]:
    admin = _require(PG_ADMIN, "PostgreSQL")
    tag = uuid.uuid4().hex[:8]
    demo = PgDemo(f"gf_app_{tag}", f"gf_events_{tag}", f"growth_reader_{tag}", f"pw-{uuid.uuid4().hex}")
    with admin.begin() as conn:
        for schema in (demo.app_schema, demo.events_schema):
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    try:
        seed_demo(demo.admin_url(demo.app_schema), demo.admin_url(demo.events_schema),
                  accounts=600, seed=5, end_date=END)
        with admin.begin() as conn:
            conn.exec_driver_sql(READER_GRANTS.format(
                role=demo.role, password=demo.password, database="test", schema=demo.app_schema))
            for line in READER_GRANTS.format(
                    role=demo.role, password=demo.password, database="test", schema=demo.events_schema
            ).strip().splitlines()[2:]:
                conn.exec_driver_sql(line)
        yield demo
    finally:
        with admin.begin() as conn:
            for schema in (demo.app_schema, demo.events_schema):
                conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            if _role_exists(conn, demo.role):
                conn.exec_driver_sql(f"DROP OWNED BY {demo.role}")
            conn.exec_driver_sql(f"DROP ROLE IF EXISTS {demo.role}")
        admin.dispose()


def _role_exists(conn: sa.Connection, role: str) -> bool:
    return conn.execute(sa.text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).first() is not None


def fingerprint(url: str) -> dict[str, tuple[int, str]]:
    """Every table's row count and a digest of its column names and rows (in a stable order):
    equal before and after means the source is unchanged. ``SELECT *`` from each table (its name
    quoted by SQLAlchemy), so no column is reflected: SQLAlchemy's MySQL reflection misreads a
    column name holding a backtick (see test_a_column_name_holding_a_backtick)."""
    import hashlib

    engine = sa.create_engine(url)
    out: dict[str, tuple[int, str]] = {}
    try:
        with engine.connect() as conn:
            for name in sorted(sa.inspect(conn).get_table_names()):
                result = conn.execute(sa.select(sa.text("*")).select_from(sa.table(name)))
                columns = repr(list(result.keys()))
                rows = sorted(repr(tuple(r)) for r in result)
                out[name] = (len(rows), hashlib.sha256("\n".join([columns, *rows]).encode()).hexdigest())
    finally:
        engine.dispose()
    return out


def _extract(cfg, urls: dict[str, str]):
    from framework.engine import as_of_end

    sources = extract.open_sources(urls)
    try:
        extract.check_schema(cfg, sources)
        return extract.extract_all(cfg, sources, as_of_end(END))
    finally:
        sources.dispose()


DEMO_TEXT = DEMO_FRAMEWORK.read_text(encoding="utf-8")


# ---------------------------------------------------------------- a SELECT-only role


def test_select_only_role_reads_what_a_superuser_reads(pg_demo: PgDemo) -> None:
    cfg = parse_config(DEMO_TEXT, env={})
    as_reader = _extract(cfg, pg_demo.reader_sources)
    as_admin = _extract(cfg, pg_demo.admin_sources)
    assert len(as_reader[0]) == 600  # every account (the demo's size)
    assert as_reader[0].equals(as_admin[0])
    assert as_reader[1].keys() == as_admin[1].keys()
    for key in as_admin[1]:
        assert as_reader[1][key].equals(as_admin[1][key]), key


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO accounts (id, created_at, origin, region) VALUES (999999, now(), 'x', 'y')",
        "UPDATE accounts SET origin = 'hacked'",
        "DELETE FROM workspaces",
        "TRUNCATE deployments",
        "DROP TABLE invitations",
        "CREATE TABLE gf_intruder (id int)",
        "ALTER TABLE accounts ADD COLUMN intruder int",
    ],
)
def test_select_only_role_cannot_write(pg_demo: PgDemo, statement: str) -> None:
    before = fingerprint(pg_demo.admin_url(pg_demo.app_schema))
    reader = sa.create_engine(pg_demo.reader_url(pg_demo.app_schema))
    try:
        with pytest.raises(sa.exc.ProgrammingError) as err, reader.begin() as conn:
            conn.exec_driver_sql(statement)
        assert "permission denied" in str(err.value.orig) or "must be owner" in str(err.value.orig)
    finally:
        reader.dispose()
    assert fingerprint(pg_demo.admin_url(pg_demo.app_schema)) == before


# ---------------------------------------------------------------- hostile identifiers


HOSTILE_TABLES = [
    "accounts; DROP TABLE x",
    'accounts"; DROP TABLE x; --',
    "accounts`; DROP TABLE x; --",
    "x'; DELETE FROM x; --",
    "public.x; DROP TABLE x",
    "ünïcødé_täble_✓",
    "t" * 300,
]
HOSTILE_COLUMNS = ['id"; DROP TABLE x; --', "id`; DROP TABLE x", "id' OR '1'='1", "çølümn ✓", "c" * 300]


def _tiny_framework(table: str = "x", column: str = "id", where: str = "") -> str:
    """One entity table (x) and one step on it; the names and ``where`` are the test's."""
    return f"""
name: Hostile
sources: {{db: {{url: "sqlite://"}}}}
entity: {{source: db, table: x, id: id, created_at: created_at}}
steps:
  - {{key: signup, name: Sign up, entity_created: true}}
  - key: acted
    name: Acted
    source: db
    table: {_yaml_str(table)}
    entity_id: {_yaml_str(column)}
    timestamp: created_at
{where}"""


def _yaml_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _fresh_db_url(request: pytest.FixtureRequest, sqlite_path: Path) -> str:
    """The URL of a fresh database of ``request.param``: a SQLite file, a PostgreSQL schema of its
    own or a MariaDB database of its own (both dropped by their fixtures)."""
    if request.param == "sqlite":
        return f"sqlite:///{sqlite_path}"
    if request.param == "postgresql":
        base, schema = request.getfixturevalue("pg_schema")
        return with_search_path(base, schema)
    base, database = request.getfixturevalue("mariadb_database")
    return base.rsplit("/", 1)[0] + f"/{database}"


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def hostile_db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database with one table ``x`` (id, created_at, state): its URL."""
    url = _fresh_db_url(request, tmp_path / "x.db")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE x (id INTEGER, created_at TIMESTAMP NULL, state VARCHAR(200))")
        conn.execute(sa.text("INSERT INTO x (id, created_at, state) VALUES (:i, :t, :s)"), [
            {"i": 1, "t": "2026-11-01 10:00:00", "s": "COMPLETED"},
            {"i": 2, "t": "2026-11-02 10:00:00", "s": "O'Brien \"quoted\" ✓"},
            {"i": 3, "t": "2026-11-03 10:00:00", "s": "x'; DROP TABLE x; --"},
            {"i": 4, "t": "2026-11-04 10:00:00", "s": "🚀 ünïcødé"},
        ])
    engine.dispose()
    return url


def _check(text: str, url: str) -> None:
    cfg = parse_config(text, env={})
    sources = extract.open_sources({"db": url})
    try:
        extract.check_schema(cfg, sources)
    finally:
        sources.dispose()


@pytest.mark.parametrize("table", HOSTILE_TABLES)
def test_hostile_table_names_are_rejected_by_the_schema_check(
    hostile_db: str, table: str
) -> None:
    before = fingerprint(hostile_db)
    with pytest.raises(SchemaError) as err:
        _check(_tiny_framework(table=table), hostile_db)
    assert err.value.exit_code == 2
    assert f"steps[1] (acted): source 'db' has no table '{table}'" in str(err.value)
    assert fingerprint(hostile_db) == before


@pytest.mark.parametrize("column", HOSTILE_COLUMNS)
def test_hostile_column_names_are_rejected_by_the_schema_check(hostile_db: str, column: str) -> None:
    before = fingerprint(hostile_db)
    with pytest.raises(SchemaError) as err:
        _check(_tiny_framework(column=column), hostile_db)
    assert err.value.exit_code == 2
    assert f"table 'x' has no column '{column}'" in str(err.value)
    assert fingerprint(hostile_db) == before


@pytest.mark.parametrize(
    ("values", "expected_ids"),
    [
        (["O'Brien \"quoted\" ✓"], [2]),
        (["x'; DROP TABLE x; --"], [3]),
        (["🚀 ünïcødé", "COMPLETED"], [1, 4]),
        (["' OR '1'='1"], []),  # matches only itself: nothing
        (["COMPLETED' OR 'a'='a"], []),
    ],
)
def test_hostile_where_values_are_bound_and_match_only_themselves(
    hostile_db: str, values: list[str], expected_ids: list[int]
) -> None:
    from framework.engine import as_of_end

    before = fingerprint(hostile_db)
    where = "    where:\n      state: [" + ", ".join(_yaml_str(v) for v in values) + "]\n"
    cfg = parse_config(_tiny_framework(where=where), env={})
    assert cfg.step("acted").where == {"state": values}
    sources = extract.open_sources({"db": hostile_db})
    try:
        extract.check_schema(cfg, sources)
        _, aggregates = extract.extract_all(cfg, sources, as_of_end(END))
    finally:
        sources.dispose()
    assert sorted(int(i) for i in aggregates["acted"]["entity_id"]) == expected_ids
    assert fingerprint(hostile_db) == before


def test_hostile_text_in_the_framework_file_is_refused_or_inert_at_the_cli(
    hostile_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The whole command: exit 2 from the schema check, before any query, source unchanged."""
    from flows.cli import main

    before = fingerprint(hostile_db)
    path = tmp_path / "hostile.yaml"
    path.write_text(_tiny_framework(table="x; DROP TABLE x"), encoding="utf-8")
    code = main(["run", "--framework", str(path), "--dry-run", "--source", f"db={hostile_db}",
                 "--store", f"sqlite:///{tmp_path / 'store.db'}"])
    err = capsys.readouterr().err
    assert code == 2 and "has no table 'x; DROP TABLE x' (tables: x)" in err and "Traceback" not in err
    assert fingerprint(hostile_db) == before



# ---------------------------------------------------------------- tables that really have hostile names


# Tables and columns created under these names (no "." in a table name: that is a schema), each
# next to a victim table ``x`` that their "DROP TABLE x" / "DELETE FROM x" would empty. All fit
# PostgreSQL's 63 bytes and MariaDB's 64 characters. No backtick in a column name here: on
# MariaDB that is test_a_column_name_holding_a_backtick's.
NAMED = {
    "accounts": 'acc"; DROP TABLE x; --',
    "id": "id' OR '1'='1",
    "created": 'créé "le" ✓',
    "origin": 'orïgin"; DELETE FROM x; --',
    "events": "events`; DROP TABLE x; -- ✓",
    "ref": 'rèf"); DROP TABLE x; --',
    "ts": "ts'); DROP TABLE x; --",
    "kind": 'kïnd %s %(x)s "q" ?',
    "visits": "visits; DROP TABLE x",
    "fk": "wörkspace'\"",
    "workspaces": "wörkspaces'; DELETE FROM x; --",
    "key": 'k"ey ✓',
    "owner": "owner'; DROP TABLE x",
}
PAID_KIND = "p'; DROP TABLE x; --"  # a hostile value too, bound as a parameter


def _named_tables(metadata: sa.MetaData) -> None:
    n = NAMED
    sa.Table("x", metadata, sa.Column("id", sa.Integer), sa.Column("note", sa.String(50)))
    sa.Table(n["accounts"], metadata, sa.Column(n["id"], sa.Integer), sa.Column(n["created"], sa.DateTime),
             sa.Column(n["origin"], sa.String(50)))
    sa.Table(n["events"], metadata, sa.Column(n["ref"], sa.Integer), sa.Column(n["ts"], sa.DateTime),
             sa.Column(n["kind"], sa.String(50)))
    sa.Table(n["visits"], metadata, sa.Column(n["fk"], sa.Integer), sa.Column(n["ts"], sa.DateTime))
    sa.Table(n["workspaces"], metadata, sa.Column(n["key"], sa.Integer), sa.Column(n["owner"], sa.Integer))


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def named_db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database (its own file, PostgreSQL schema or MariaDB database, fresh per test) whose
    tables and columns have the hostile NAMED names, beside a victim table ``x``: its URL."""
    url = _fresh_db_url(request, tmp_path / "named.db")
    metadata = sa.MetaData()
    _named_tables(metadata)
    t = metadata.tables
    n = NAMED
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        metadata.create_all(conn)
        conn.execute(t["x"].insert(), [{"id": 1, "note": "must survive"}, {"id": 2, "note": "me too"}])
        conn.execute(t[n["accounts"]].insert(), [
            {n["id"]: i, n["created"]: datetime(2026, 11, i, 10), n["origin"]: origin}
            for i, origin in [(1, "web"), (2, "O'Brien \"quoted\" ✓"), (3, "x'; DROP TABLE x; --"), (4, None)]
        ])
        conn.execute(t[n["events"]].insert(), [
            {n["ref"]: 1, n["ts"]: datetime(2026, 11, 1, 11), n["kind"]: "a"},
            {n["ref"]: 1, n["ts"]: datetime(2026, 11, 1, 12), n["kind"]: "a"},
            {n["ref"]: 2, n["ts"]: datetime(2026, 11, 2, 11), n["kind"]: "a"},
            {n["ref"]: 3, n["ts"]: datetime(2026, 11, 3, 11), n["kind"]: "a"},
            {n["ref"]: 1, n["ts"]: datetime(2026, 11, 5, 9), n["kind"]: PAID_KIND},
            {n["ref"]: 2, n["ts"]: datetime(2026, 11, 5, 9), n["kind"]: "p"},  # not the paid kind
            {n["ref"]: 4, n["ts"]: datetime(2026, 11, 6, 9), n["kind"]: "' OR '1'='1"},
        ])
        conn.execute(t[n["workspaces"]].insert(), [{n["key"]: 10, n["owner"]: 2}, {n["key"]: 20, n["owner"]: 4}])
        conn.execute(t[n["visits"]].insert(), [
            {n["fk"]: 10, n["ts"]: datetime(2026, 11, 7, 9)}, {n["fk"]: 20, n["ts"]: datetime(2026, 11, 8, 9)},
            {n["fk"]: 20, n["ts"]: datetime(2026, 11, 9, 9)},
        ])
    engine.dispose()
    return url


def _named_framework(**override: str) -> str:
    """Every identifier of the framework file a NAMED one (``override``: key -> another name)."""
    n = {**NAMED, **override}
    q = {k: _yaml_str(v) for k, v in n.items()}
    return f"""
name: Hostile names
sources: {{db: {{url: "sqlite://"}}}}
entity: {{source: db, table: {q["accounts"]}, id: {q["id"]}, created_at: {q["created"]}, attributes: [{q["origin"]}]}}
steps:
  - {{key: signup, name: Sign up, entity_created: true}}
  - {{key: acted, name: Acted, source: db, table: {q["events"]}, entity_id: {q["ref"]}, timestamp: {q["ts"]},
      where: {{{q["kind"]}: a}}}}
  - {{key: paid, name: Paid, source: db, table: {q["events"]}, entity_id: {q["ref"]}, timestamp: {q["ts"]},
      where: {{{q["kind"]}: [{_yaml_str(PAID_KIND)}]}}}}
  - key: visited
    name: Visited
    source: db
    table: {q["visits"]}
    timestamp: {q["ts"]}
    via: {{table: {q["workspaces"]}, key: {q["key"]}, foreign_key: {q["fk"]}, entity_id: {q["owner"]}}}
"""


def _firsts(frame) -> dict[int, str]:
    return {int(i): f"{t:%Y-%m-%d %H:%M}" for i, t in zip(frame["entity_id"], frame["first_at"], strict=True)}


def test_tables_and_columns_with_hostile_names_are_read_with_quoted_identifiers(named_db: str) -> None:
    """Every identifier of the file is a real table or column named like an injection: the schema
    check finds them, the queries quote them (one grouped query with ``where`` flags on the events
    table, a ``via`` join on the visits table), the right rows come back, and no table changes."""
    engine = sa.create_engine(named_db)
    with engine.connect() as conn:
        assert set(sa.inspect(conn).get_table_names()) == {
            "x", NAMED["accounts"], NAMED["events"], NAMED["visits"], NAMED["workspaces"]}
    engine.dispose()
    before = fingerprint(named_db)
    assert before["x"][0] == 2

    cfg = parse_config(_named_framework(), env={})
    entities, aggregates = _extract(cfg, {"db": named_db})

    assert list(entities.columns) == ["entity_id", "created_at", NAMED["origin"]]
    by_id = {int(i): (f"{t:%Y-%m-%d %H:%M}", o) for i, t, o in
             zip(entities["entity_id"], entities["created_at"], entities[NAMED["origin"]], strict=True)}
    assert {i: v[0] for i, v in by_id.items()} == {i: f"2026-11-0{i} 10:00" for i in (1, 2, 3, 4)}
    assert [by_id[i][1] for i in (1, 2, 3)] == ["web", "O'Brien \"quoted\" ✓", "x'; DROP TABLE x; --"]
    assert by_id[4][1] is None or by_id[4][1] != by_id[4][1]  # NULL (None or NaN)
    # acted: kind 'a' (1 twice: its first at 11:00); paid: only the row holding PAID_KIND itself,
    # not 'p' nor "' OR '1'='1"; visited: through workspaces (10 -> owner 2, 20 -> owner 4)
    assert _firsts(aggregates["acted"]) == {1: "2026-11-01 11:00", 2: "2026-11-02 11:00", 3: "2026-11-03 11:00"}
    assert aggregates["acted"].set_index("entity_id")["records"].to_dict() == {1: 2, 2: 1, 3: 1}
    assert _firsts(aggregates["paid"]) == {1: "2026-11-05 09:00"}
    assert _firsts(aggregates["visited"]) == {2: "2026-11-07 09:00", 4: "2026-11-08 09:00"}
    assert aggregates["visited"].set_index("entity_id")["records"].to_dict() == {2: 1, 4: 2}
    assert fingerprint(named_db) == before


@pytest.mark.parametrize(
    ("field", "name", "problem"),
    [
        ("accounts", "accounts; DROP TABLE x", "entity: source 'db' has no table 'accounts; DROP TABLE x'"),
        ("accounts", 'acc"; DROP TABLE x; -- ✓', "entity: source 'db' has no table 'acc\"; DROP TABLE x; -- ✓'"),
        ("id", "id; DROP TABLE x", "entity: source 'db' table '{accounts}' has no column 'id; DROP TABLE x'"),
        ("created", "created_at' OR '1'='1", "entity: source 'db' table '{accounts}' has no column "
                                              "'created_at' OR '1'='1'"),
        ("origin", "origin`; DROP TABLE x", "entity: source 'db' table '{accounts}' has no column "
                                             "'origin`; DROP TABLE x'"),
        ("kind", "kind' OR '1'='1", "steps[1] (acted) where: source 'db' table '{events}' has no column "
                                     "'kind' OR '1'='1'"),
        ("ts", 'ts"; DELETE FROM x; --', "steps[1] (acted): source 'db' table '{events}' has no column "
                                          "'ts\"; DELETE FROM x; --'"),
        ("owner", "owner; DROP TABLE x", "steps[3] (visited) via: source 'db' table '{workspaces}' has no column "
                                          "'owner; DROP TABLE x'"),
    ],
)
def test_hostile_entity_where_and_via_names_that_do_not_exist_are_rejected_with_exit_2(
    named_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], field: str, name: str, problem: str
) -> None:
    """One identifier of the file is replaced by a hostile name the source does not have (the
    entity's table, id, created_at or attribute, a ``where`` column, a step's timestamp, a
    ``via`` column): the schema check names it, exit 2 from the CLI before any query, source
    unchanged."""
    from flows.cli import main

    problem = problem.format(**NAMED)
    before = fingerprint(named_db)
    text = _named_framework(**{field: name})
    with pytest.raises(SchemaError) as err:
        _check(text, named_db)
    assert err.value.exit_code == 2
    assert problem in str(err.value), str(err.value)

    path = tmp_path / "hostile.yaml"
    path.write_text(text, encoding="utf-8")
    code = main(["run", "--framework", str(path), "--dry-run", "--source", f"db={named_db}",
                 "--store", f"sqlite:///{tmp_path / 'store.db'}"])
    cli_err = capsys.readouterr().err
    assert code == 2 and problem in cli_err and "Traceback" not in cli_err, cli_err
    assert fingerprint(named_db) == before

BACKTICK_COLUMN = "id`; DROP TABLE x; --"


def test_a_column_name_holding_a_backtick(named_db: str) -> None:
    """SQLite and PostgreSQL read it. On MariaDB, SQLAlchemy's reflection (2.1: ``_parse_column``
    of SHOW CREATE TABLE does not unescape) gives its name with the backtick doubled, so the
    schema check refuses it, naming the column as reflected: exit 2, nothing read, no table
    changed. Refused, never pasted into SQL."""
    engine = sa.create_engine(named_db)
    table = sa.Table("bt", sa.MetaData(), sa.Column(BACKTICK_COLUMN, sa.Integer), sa.Column("at", sa.DateTime))
    with engine.begin() as conn:
        table.create(conn)
        conn.execute(table.insert(), [{BACKTICK_COLUMN: i, "at": datetime(2026, 11, i, 10)} for i in (1, 2)])
    dialect = engine.dialect.name
    engine.dispose()
    before = fingerprint(named_db)
    text = f"""
name: Backtick
sources: {{db: {{url: "sqlite://"}}}}
entity: {{source: db, table: bt, id: {_yaml_str(BACKTICK_COLUMN)}, created_at: at}}
steps:
  - {{key: signup, name: Sign up, entity_created: true}}
  - {{key: again, name: Again, source: db, table: bt, entity_id: {_yaml_str(BACKTICK_COLUMN)}, timestamp: at}}
"""
    cfg = parse_config(text, env={})
    if dialect == "mysql":
        with pytest.raises(SchemaError) as err:
            _extract(cfg, {"db": named_db})
        assert err.value.exit_code == 2
        assert str(err.value).splitlines() == [
            f"entity: source 'db' table 'bt' has no column '{BACKTICK_COLUMN}' (columns: at, id``; DROP TABLE x; --)",
            f"steps[1] (again): source 'db' table 'bt' has no column '{BACKTICK_COLUMN}' "
            "(columns: at, id``; DROP TABLE x; --)",
        ], str(err.value)
    else:
        entities, aggregates = _extract(cfg, {"db": named_db})
        assert sorted(int(i) for i in entities["entity_id"]) == [1, 2]
        assert _firsts(aggregates["again"]) == {1: "2026-11-01 10:00", 2: "2026-11-02 10:00"}
    assert fingerprint(named_db) == before



def test_a_missing_sqlite_file_is_a_source_that_cannot_be_read(tmp_path: Path) -> None:
    """SQLite would create the file and read an empty database: exit 4 naming the source instead,
    and no file left behind."""
    ghost = tmp_path / "ghost.db"
    with pytest.raises(SourceError) as err:
        extract.open_sources({"app": f"sqlite:///{ghost}"})
    assert err.value.exit_code == 4
    assert str(err.value) == f"source 'app' (sqlite:///{ghost}): no such SQLite database file: {ghost}"
    assert not ghost.exists()
    extract.open_sources({"mem": "sqlite://"}).dispose()  # in-memory databases are left alone
