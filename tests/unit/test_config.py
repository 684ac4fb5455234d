"""The framework file contract (shared/specs/config.md).

Every bad file must raise ConfigError whose message names the file, the key
path (``steps[3].where``) and what is wrong.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from framework.config import ConfigError, FrameworkConfig, load_config, parse_config

FILE = "growth-test.yaml"
DEMO = Path(__file__).resolve().parents[2] / "framework" / "demo" / "growth.yaml"

GOOD: dict[str, Any] = {
    "name": "Test Growth Framework",
    "sources": {"app": {"url": "sqlite:///app.db"}, "events": {"secret": "events-db-url"}},
    "entity": {
        "name": "account",
        "source": "app",
        "table": "accounts",
        "id": "id",
        "created_at": "created_at",
        "attributes": ["origin", "plan"],
    },
    "funnel": {"mode": "independent", "window_days": 30},
    "report": {"top_n": 3, "channel": "#growth"},
    "quality": {"freshness_hours": 36},
    "steps": [
        {"key": "account_created", "name": "Create an account", "entity_created": True},  # steps[0]
        {  # steps[1]
            "key": "workspace_created",
            "name": "Create a workspace",
            "source": "app",
            "table": "workspaces",
            "entity_id": "account_id",
            "timestamp": "created_at",
        },
        {  # steps[2]
            "key": "read_quickstart",
            "name": "Read the quickstart",
            "tracked": False,
            "proposed_metric": "quickstart page views per new account",
        },
        {  # steps[3]
            "key": "first_flow_run",
            "name": "Run a flow",
            "source": "events",
            "table": "flow_runs",
            "timestamp": "start_time",
            "via": {"table": "workspaces", "key": "id", "foreign_key": "workspace_id", "entity_id": "account_id"},
            "where": {"state": ["COMPLETED", "FAILED"]},
        },
        {  # steps[4]
            "key": "invited_teammate",
            "name": "Invite a teammate",
            "qualifying": True,
            "source": "app",
            "table": "invitations",
            "entity_id": "account_id",
            "timestamp": "sent_at",
            "target": 0.25,
        },
    ],
}


def doc(**changes: Any) -> dict[str, Any]:
    """A deep copy of GOOD with dotted-path changes: ``doc(**{"steps[3].where": None})``; None deletes."""
    d = copy.deepcopy(GOOD)
    for path, value in changes.items():
        parts: list[str | int] = []
        for token in path.replace("]", "").replace("[", ".").split("."):
            parts.append(int(token) if token.isdigit() else token)
        node: Any = d
        for p in parts[:-1]:
            node = node[p]
        if value is None:
            del node[parts[-1]]
        else:
            node[parts[-1]] = value
    return d


def text_of(d: dict[str, Any]) -> str:
    return yaml.safe_dump(d, sort_keys=False)


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, FILE, env={} if env is None else env)
    lines = info.value.problems
    assert str(info.value) == "\n".join(lines)
    assert lines and all(line.startswith(f"{FILE}: ") for line in lines), lines
    return lines


def assert_problem(lines: list[str], path: str, *words: str) -> None:
    """One line names the file and exactly this key path, and says what is wrong (all ``words``)."""
    prefix = f"{FILE}: {path}: "
    hits = [line for line in lines if line.startswith(prefix)]
    assert hits, f"no problem at {path!r} in {lines}"
    assert any(all(w.lower() in line.lower() for w in words) for line in hits), (words, hits)


# ---- good files ------------------------------------------------------------------


def test_demo_file_loads() -> None:
    cfg = load_config(DEMO, env={})
    assert isinstance(cfg, FrameworkConfig)
    assert cfg.steps[0].entity_created
    assert [s.key for s in cfg.steps if not s.tracked] == ["read_quickstart"]
    assert cfg.funnel.mode == "independent"
    assert all(s.proposed_metric for s in cfg.steps if not s.tracked)


def test_good_file_and_defaults() -> None:
    minimal = doc(funnel=None, report=None, quality=None, **{"entity.name": None, "entity.attributes": None})
    cfg = parse_config(text_of(minimal), FILE, env={})
    assert cfg.entity.name == "entity"
    assert cfg.entity.attributes == []
    f = cfg.funnel
    assert (f.mode, f.window_days, f.lookback_days, f.cohort, f.history_cohorts, f.min_sample) == (
        "independent", 30, 28, "month", 12, 30)
    assert (cfg.report.top_n, cfg.report.channel) == (3, "#growth")
    q = cfg.quality
    assert (q.freshness_hours, q.max_orphan_ratio, q.late_arrival_days) == (36, 0.01, 3)
    assert [s.key for s in cfg.tracked_steps] == ["account_created", "workspace_created", "first_flow_run",
                                                 "invited_teammate"]
    assert cfg.step("invited_teammate").target == 0.25
    assert cfg.step("invited_teammate").qualifying is True
    assert cfg.step("first_flow_run").where == {"state": ["COMPLETED", "FAILED"]}
    assert cfg.sources["events"].secret == "events-db-url"


@pytest.mark.parametrize("mode", ["independent", "any_order", "ordered"])
@pytest.mark.parametrize("cohort", ["month", "week"])
def test_enums_accepted(mode: str, cohort: str) -> None:
    cfg = parse_config(text_of(doc(**{"funnel.mode": mode, "funnel.cohort": cohort})), FILE, env={})
    assert (cfg.funnel.mode, cfg.funnel.cohort) == (mode, cohort)


# ---- environment -----------------------------------------------------------------


def test_unset_variable_without_default_names_it() -> None:
    lines = problems(text_of(doc(**{"sources.app.url": "${APP_DATABASE_URL}"})))
    assert_problem(lines, "sources.app.url", "APP_DATABASE_URL")


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "sqlite:///data/demo.db"),  # unset: default
        ({"APP_DATABASE_URL": ""}, "sqlite:///data/demo.db"),  # set but empty: default (shell ${VAR:-x})
        ({"APP_DATABASE_URL": "postgresql://u:pw@db/app"}, "postgresql://u:pw@db/app"),
    ],
)
def test_variable_with_default(env: dict[str, str], expected: str) -> None:
    text = text_of(doc(**{"sources.app.url": "${APP_DATABASE_URL:-sqlite:///data/demo.db}"}))
    assert parse_config(text, FILE, env=env).sources["app"].url == expected


def test_variables_expand_anywhere_in_a_string() -> None:
    text = text_of(doc(**{"steps[1].table": "${SCHEMA:-analytics}.workspaces_${SUFFIX}"}))
    cfg = parse_config(text, FILE, env={"SUFFIX": "v2"})
    assert cfg.step("workspace_created").table == "analytics.workspaces_v2"


# ---- bad files: one key path each ----------------------------------------------------------


BAD_CASES = [
    # (id, changes, key path, words of the message)
    ("unknown top-level key", {"extra": 1}, "extra", ("unknown",)),
    ("unknown key in funnel", {"funnel.windw_days": 3}, "funnel.windw_days", ("unknown",)),
    ("unknown key in source", {"sources.app.uri": "x"}, "sources.app.uri", ("unknown",)),
    ("unknown key in entity", {"entity.attrs": ["x"]}, "entity.attrs", ("unknown",)),
    ("unknown key in report", {"report.topn": 3}, "report.topn", ("unknown",)),
    ("unknown key in quality", {"quality.freshness": 3}, "quality.freshness", ("unknown",)),
    ("unknown key in step", {"steps[3].wehre": {"a": 1}}, "steps[3].wehre", ("unknown",)),
    ("unknown key in via", {"steps[3].via.tabel": "x"}, "steps[3].via.tabel", ("unknown",)),
    ("unknown key in step 1", {"steps[0].colour": "red"}, "steps[0].colour", ("unknown",)),
    ("missing name", {"name": None}, "name", ("missing",)),
    ("missing step name", {"steps[1].name": None}, "steps[1].name", ("missing",)),
    ("missing entity.table", {"entity.table": None}, "entity.table", ("missing",)),
    ("missing via.foreign_key", {"steps[3].via.foreign_key": None}, "steps[3].via.foreign_key", ("missing",)),
    ("both entity_id and via", {"steps[3].entity_id": "account_id"}, "steps[3].via", ("entity_id", "via")),
    ("neither entity_id nor via", {"steps[1].entity_id": None}, "steps[1].entity_id", ("entity_id", "via")),
    ("duplicate step keys", {"steps[4].key": "workspace_created"}, "steps[4].key",
     ("duplicate", "workspace_created")),
    ("bad key pattern", {"steps[1].key": "Workspace-Created"}, "steps[1].key", ("Workspace-Created",)),
    ("key starting with a digit", {"steps[1].key": "1st_run"}, "steps[1].key", ("1st_run",)),
    ("unknown source reference", {"steps[3].source": "evnts"}, "steps[3].source", ("evnts",)),
    ("unknown entity source", {"entity.source": "ap"}, "entity.source", ("ap",)),
    ("url and secret", {"sources.events.url": "sqlite://"}, "sources.events", ("url", "secret")),
    ("neither url nor secret", {"sources.events": {}}, "sources.events", ("url", "secret")),
    ("no sources", {"sources": {}}, "sources", ("source",)),
    ("one step only", {"steps": [GOOD["steps"][0]]}, "steps", ("two",)),
    ("untracked step with a source", {"steps[2].source": "app"}, "steps[2].source", ("source",)),
    ("mode not in enum", {"funnel.mode": "funnel"}, "funnel.mode", ("independent", "any_order", "ordered")),
    ("cohort not in enum", {"funnel.cohort": "day"}, "funnel.cohort", ("month", "week")),
    ("window_days not an int", {"funnel.window_days": "thirty"}, "funnel.window_days", ("integer",)),
    ("window_days zero", {"funnel.window_days": 0}, "funnel.window_days", ("greater",)),
    ("min_sample negative", {"funnel.min_sample": -1}, "funnel.min_sample", ("greater",)),
    ("name not a string", {"name": 5}, "name", ("string",)),
    ("steps not a list", {"steps": {"a": 1}}, "steps", ("list",)),
    ("attributes not a list", {"entity.attributes": "origin"}, "entity.attributes", ("list",)),
    ("qualifying not a bool", {"steps[4].qualifying": "maybe"}, "steps[4].qualifying", ("bool",)),
    ("target above 1", {"steps[4].target": 1.5}, "steps[4].target", ("1",)),
    ("target not a number", {"steps[4].target": "high"}, "steps[4].target", ("number",)),
    ("where not a mapping", {"steps[3].where": ["COMPLETED"]}, "steps[3].where", ("dict",)),
    ("where empty list", {"steps[3].where": {"state": []}}, "steps[3].where.state", ("empty",)),
    ("top_n not an int", {"report.top_n": "three"}, "report.top_n", ("integer",)),
    ("max_orphan_ratio above 1", {"quality.max_orphan_ratio": 2}, "quality.max_orphan_ratio", ("1",)),
]


@pytest.mark.parametrize(("changes", "path", "words"), [c[1:] for c in BAD_CASES], ids=[c[0] for c in BAD_CASES])
def test_bad_file_names_file_and_key_path(changes: dict[str, Any], path: str, words: tuple[str, ...]) -> None:
    assert_problem(problems(text_of(doc(**changes))), path, *words)


def test_first_step_must_be_entity_created() -> None:
    # a tracked first step with a source, but no entity_created
    first = {"key": "signup", "name": "Sign up", "source": "app", "table": "signups", "entity_id": "account_id",
             "timestamp": "at"}
    lines = problems(text_of(doc(**{"steps[0]": first})))
    assert_problem(lines, "steps[0].entity_created", "first step")


def test_first_step_forgot_entity_created() -> None:
    lines = problems(text_of(doc(**{"steps[0].entity_created": None})))
    assert_problem(lines, "steps[0].entity_created", "first step")


def test_first_step_untracked() -> None:
    lines = problems(text_of(doc(**{"steps[0]": {"key": "idea", "name": "Idea", "tracked": False,
                                                  "proposed_metric": "x"}})))
    assert_problem(lines, "steps[0].entity_created", "first step")


def test_entity_created_on_later_step_without_source() -> None:
    later = {"key": "again", "name": "Again", "entity_created": True}
    d = doc()
    d["steps"].append(later)
    assert_problem(problems(text_of(d)), "steps[5].entity_created", "first step")


def test_entity_created_on_later_tracked_step() -> None:
    lines = problems(text_of(doc(**{"steps[1].entity_created": True})))
    assert_problem(lines, "steps[1].entity_created", "first step")


def test_untracked_step_without_proposed_metric() -> None:
    lines = problems(text_of(doc(**{"steps[2].proposed_metric": None})))
    assert_problem(lines, "steps[2].proposed_metric", "proposed_metric")


def test_untracked_step_without_proposed_metric_is_an_error() -> None:
    # the part of the contract the engine meets today: an error that names the step and the key
    lines = problems(text_of(doc(**{"steps[2].proposed_metric": None})))
    assert any(line.startswith(f"{FILE}: steps[2]") and "proposed_metric" in line for line in lines)


@pytest.mark.parametrize("key", ["source", "table", "timestamp"])
def test_tracked_step_missing_source_keys(key: str) -> None:
    lines = problems(text_of(doc(**{f"steps[1].{key}": None})))
    assert_problem(lines, f"steps[1].{key}", "missing")


@pytest.mark.parametrize("key", ["source", "table", "timestamp"])
def test_tracked_step_missing_source_keys_is_an_error(key: str) -> None:
    lines = problems(text_of(doc(**{f"steps[1].{key}": None})))
    assert any(line.startswith(f"{FILE}: steps[1]") and key in line for line in lines)


def test_where_value_of_wrong_type() -> None:
    lines = problems(text_of(doc(**{"steps[3].where": {"state": {"nested": 1}}})))
    assert all("constrained-str" not in line for line in lines), lines
    assert len(lines) == 1, lines
    assert_problem(lines, "steps[3].where.state")


@pytest.mark.parametrize("path", ["funnel.window_days", "funnel.min_sample", "report.top_n"])
def test_boolean_is_not_an_integer(path: str) -> None:
    assert_problem(problems(text_of(doc(**{path: True}))), path)


def test_every_problem_is_reported() -> None:
    lines = problems(text_of(doc(**{"funnel.mode": "funnel", "steps[3].source": "evnts"})))
    assert_problem(lines, "funnel.mode")
    assert_problem(lines, "steps[3].source", "evnts")


def test_several_schema_problems_are_all_reported() -> None:
    lines = problems(text_of(doc(**{"funnel.mode": "funnel", "steps[1].name": None, "extra": 1})))
    assert_problem(lines, "funnel.mode")
    assert_problem(lines, "steps[1].name", "missing")
    assert_problem(lines, "extra", "unknown")


# ---- bad files: not YAML, not a mapping, not UTF-8 ------------------------------------------


def test_bad_yaml() -> None:
    lines = problems("name: x\nsteps:\n  - key: [\n")
    assert len(lines) == 1
    assert "yaml" in lines[0].lower()
    assert "line" in lines[0]


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n"])
def test_empty_file(text: str) -> None:
    lines = problems(text)
    assert "empty" in lines[0]


def test_not_a_mapping() -> None:
    assert "mapping" in problems("- a\n- b\n")[0]


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(text_of(GOOD).replace("Test Growth", "Caf\u00e9").encode("latin-1"))
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    message = str(info.value)
    assert str(path) in message
    assert "UTF-8" in message


def test_load_config_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text_of(doc(**{"funnel.mode": "funnel"})), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert info.value.problems[0].startswith(f"{path}: funnel.mode: ")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert str(path) in str(info.value)


def test_load_config_good_file(tmp_path: Path) -> None:
    path = tmp_path / "good.yaml"
    path.write_text(text_of(GOOD), encoding="utf-8")
    assert load_config(path, env={}).name == "Test Growth Framework"


# ---- attributes with allowed values; quality.anomaly_pp ----------------------------------------


def test_attribute_as_name_or_mapping_with_allowed_values() -> None:
    attributes = ["origin", {"name": "plan", "allowed": ["free", "team", "enterprise"]}, {"name": "region"}]
    cfg = parse_config(text_of(doc(**{"entity.attributes": attributes})), FILE, env={})
    assert cfg.entity.attributes == ["origin", "plan", "region"]  # names, for the engine and extraction
    assert cfg.entity.allowed == {"plan": ["free", "team", "enterprise"]}


def test_plain_attributes_have_no_allowed_values() -> None:
    cfg = parse_config(text_of(GOOD), FILE, env={})
    assert cfg.entity.attributes == ["origin", "plan"]
    assert cfg.entity.allowed == {}


def test_allowed_numbers_are_kept_as_text() -> None:
    # segment values are compared as the engine's text: 2.0 and 2 are both "2"
    text = text_of(doc(**{"entity.attributes": [{"name": "tier", "allowed": [1, 2.0, 2.5, " gold "]}]}))
    assert parse_config(text, FILE, env={}).entity.allowed == {"tier": ["1", "2", "2.5", "gold"]}


def test_attribute_mapping_in_yaml_flow_style() -> None:
    text = text_of(GOOD).replace(
        "  - plan\n", "  - {name: plan, allowed: [github, google]}\n"
    )
    assert "{name: plan" in text
    assert parse_config(text, FILE, env={}).entity.allowed == {"plan": ["github", "google"]}


def test_config_round_trips_through_model_dump() -> None:
    attributes = ["origin", {"name": "plan", "allowed": ["free", "team"]}]
    cfg = parse_config(text_of(doc(**{"entity.attributes": attributes})), FILE, env={})
    assert cfg.model_dump()["entity"]["attributes"][1] == {"name": "plan", "allowed": ["free", "team"]}
    assert FrameworkConfig.model_validate(cfg.model_dump()) == cfg


def test_anomaly_pp_default_and_value() -> None:
    assert parse_config(text_of(GOOD), FILE, env={}).quality.anomaly_pp == 10.0
    cfg = parse_config(text_of(doc(**{"quality.anomaly_pp": 5})), FILE, env={})
    assert cfg.quality.anomaly_pp == 5.0


ALLOWED_BAD_CASES = [
    ("unknown key in an attribute", {"entity.attributes[1]": {"name": "plan", "allowd": ["free"]}},
     "entity.attributes[1].allowd", ("unknown",)),
    ("attribute mapping without a name", {"entity.attributes[1]": {"allowed": ["free"]}},
     "entity.attributes[1].name", ("missing",)),
    ("attribute name empty", {"entity.attributes[1]": {"name": ""}}, "entity.attributes[1].name", ("empty",)),
    ("attribute not a name or mapping", {"entity.attributes[1]": 5}, "entity.attributes[1]", ("name", "mapping")),
    ("allowed not a list", {"entity.attributes[1]": {"name": "plan", "allowed": "free"}},
     "entity.attributes[1].allowed", ("list",)),
    ("allowed empty", {"entity.attributes[1]": {"name": "plan", "allowed": []}},
     "entity.attributes[1].allowed", ("at least 1",)),
    ("allowed boolean value", {"entity.attributes[1]": {"name": "plan", "allowed": ["free", True]}},
     "entity.attributes[1].allowed", ("strings or numbers",)),
    ("allowed nested value", {"entity.attributes[1]": {"name": "plan", "allowed": [["free"]]}},
     "entity.attributes[1].allowed", ("strings or numbers",)),
    ("duplicate attribute across forms", {"entity.attributes[1]": {"name": "origin", "allowed": ["github"]}},
     "entity.attributes", ("duplicate", "origin")),
    ("allowed directly on entity", {"entity.allowed": {"origin": ["github"]}}, "entity.allowed", ("unknown",)),
    ("anomaly_pp zero", {"quality.anomaly_pp": 0}, "quality.anomaly_pp", ("greater",)),
    ("anomaly_pp above 100", {"quality.anomaly_pp": 150}, "quality.anomaly_pp", ("100",)),
    ("anomaly_pp not a number", {"quality.anomaly_pp": "ten"}, "quality.anomaly_pp", ("number",)),
]


@pytest.mark.parametrize(
    ("changes", "path", "words"), [c[1:] for c in ALLOWED_BAD_CASES], ids=[c[0] for c in ALLOWED_BAD_CASES]
)
def test_bad_attribute_or_anomaly_pp_names_key_path(changes: dict[str, Any], path: str, words: tuple[str, ...]) -> None:
    assert_problem(problems(text_of(doc(**changes))), path, *words)


def test_min_sample_zero_means_no_minimum() -> None:
    cfg = parse_config(text_of(doc(**{"funnel.min_sample": 0})), FILE, env={})
    assert cfg.funnel.min_sample == 0
