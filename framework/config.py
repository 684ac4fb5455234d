"""The framework file: loading and validation (contract: shared/specs/config.md).

Pure: reads a YAML file and the environment, touches no database. Every
problem is reported as one line naming the file, the key path
(``steps[3].where``) and what is wrong; ``ConfigError`` carries them all.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from framework.errors import GrowthError

KEY_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")



class ConfigError(GrowthError):
    """A framework file that cannot be used. ``problems`` holds one line each."""

    exit_code = 2


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, str_strip_whitespace=True)


class SourceConfig(_Strict):
    """A named source database: a SQLAlchemy URL, or the name of a Prefect Secret block holding one."""

    url: str | None = None
    secret: str | None = None

    @model_validator(mode="after")
    def _one_of(self) -> SourceConfig:
        if (self.url is None) == (self.secret is None):
            raise ValueError("give exactly one of 'url' or 'secret'")
        if self.url is not None and not self.url:
            raise ValueError("'url' is empty")
        return self


class AttributeConfig(_Strict):
    """A segment attribute: a column of the entity table, optionally with the values it may take.

    Written as a plain name (``origin``) or as a mapping (``{name: origin, allowed: [github, google]}``).
    ``allowed`` values are kept as text, as the engine compares segment values; NULL and empty
    values (the "(none)" segment) are always allowed.
    """

    name: str
    allowed: Annotated[list[str], Field(min_length=1)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _plain_name(cls, v: Any) -> Any:
        if isinstance(v, str):
            return {"name": v}
        if not isinstance(v, dict):
            raise ValueError("expected a column name or a mapping {name: COLUMN, allowed: [VALUE, ...]}")
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not v:
            raise ValueError("the attribute name is empty")
        return v

    @field_validator("allowed", mode="before")
    @classmethod
    def _allowed_as_text(cls, v: Any) -> Any:
        """Numbers become their text (``2`` and ``2.0`` -> ``"2"``); booleans are refused (quote them)."""
        if not isinstance(v, list):
            return v
        out: list[Any] = []
        for item in v:
            if isinstance(item, bool) or not isinstance(item, str | int | float):
                raise ValueError("allowed values must be strings or numbers (quote yes/no/true/false)")
            if isinstance(item, float) and item.is_integer():
                item = int(item)
            out.append(item if isinstance(item, str) else str(item))
        return out


class EntityConfig(_Strict):
    # The file key is ``attributes``; ``attributes`` (names) and ``allowed`` are derived properties.
    model_config = ConfigDict(serialize_by_alias=True)

    name: str = "entity"
    source: str
    table: str
    id: str
    created_at: str
    attribute_specs: list[AttributeConfig] = Field(default_factory=list, alias="attributes")

    @field_validator("attribute_specs")
    @classmethod
    def _unique_attributes(cls, v: list[AttributeConfig]) -> list[AttributeConfig]:
        names = [a.name for a in v]
        dupes = sorted({a for a in names if names.count(a) > 1})
        if dupes:
            raise ValueError(f"duplicate attribute(s): {', '.join(dupes)}")
        return v

    @property
    def attributes(self) -> list[str]:
        """The segment columns, in file order (plain names and mappings alike)."""
        return [a.name for a in self.attribute_specs]

    @property
    def allowed(self) -> dict[str, list[str]]:
        """Attribute -> its allowed values (as text), for the attributes that list them."""
        return {a.name: list(a.allowed) for a in self.attribute_specs if a.allowed is not None}


Mode = Literal["independent", "any_order", "ordered"]  # how a step's reach is counted (metrics.md)
Cohort = Literal["month", "week"]  # the size of a signup cohort


class FunnelConfig(_Strict):
    mode: Mode = "independent"
    window_days: Annotated[int, Field(ge=1, le=3650)] = 30
    lookback_days: Annotated[int, Field(ge=1, le=3650)] = 28
    cohort: Cohort = "month"
    history_cohorts: Annotated[int, Field(ge=1, le=520)] = 12
    min_sample: Annotated[int, Field(ge=0)] = 30  # 0: no minimum (a step still needs entrants)


class ReportConfig(_Strict):
    top_n: Annotated[int, Field(ge=1, le=50)] = 3
    channel: str = "#growth"


class QualityConfig(_Strict):
    freshness_hours: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 36
    max_orphan_ratio: Annotated[float, Field(ge=0, le=1)] = 0.01
    late_arrival_days: Annotated[int, Field(ge=0)] = 3
    anomaly_pp: Annotated[float, Field(gt=0, le=100)] = 10.0  # conversion change (points) flagged when p < 0.01


class ViaConfig(_Strict):
    """One join from the step table to the table that holds the entity id."""

    table: str
    key: str
    foreign_key: str
    entity_id: str


class StepConfig(_Strict):
    key: str
    name: str
    entity_created: bool = False
    tracked: bool = True
    qualifying: bool = False
    proposed_metric: str | None = None
    source: str | None = None
    table: str | None = None
    entity_id: str | None = None
    timestamp: str | None = None
    via: ViaConfig | None = None
    where: dict[str, Any] | None = None  # values checked by _step_rules, with their key path
    target: Annotated[float, Field(ge=0, le=1)] | None = None

    @field_validator("key")
    @classmethod
    def _key_shape(cls, v: str) -> str:
        if not KEY_PATTERN.match(v):
            raise ValueError(f"'{v}' must match [a-z][a-z0-9_]*")
        return v


class FrameworkConfig(_Strict):
    name: str
    sources: dict[str, SourceConfig]
    entity: EntityConfig
    funnel: FunnelConfig = FunnelConfig()
    report: ReportConfig = ReportConfig()
    quality: QualityConfig = QualityConfig()
    steps: list[StepConfig]

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not v:
            raise ValueError("'name' is empty")
        return v

    @field_validator("sources")
    @classmethod
    def _sources(cls, v: dict[str, SourceConfig]) -> dict[str, SourceConfig]:
        if not v:
            raise ValueError("at least one source is needed")
        return v

    @property
    def tracked_steps(self) -> list[StepConfig]:
        return [s for s in self.steps if s.tracked]

    def step(self, key: str) -> StepConfig:
        for s in self.steps:
            if s.key == key:
                return s
        raise KeyError(key)


SOURCE_KEYS = ("source", "table", "entity_id", "timestamp", "via", "where")


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool)


def _step_rules(tree: dict[str, Any]) -> list[tuple[str, str]]:
    """Rules between keys, checked on the parsed YAML so that they are reported with
    every type problem at once, each at its own key path."""
    problems: list[tuple[str, str]] = []
    sources = tree.get("sources") if isinstance(tree.get("sources"), dict) else {}
    entity = tree.get("entity")
    if isinstance(entity, dict) and isinstance(entity.get("source"), str) and sources \
            and entity["source"] not in sources:
        problems.append(("entity.source", f"unknown source '{entity['source']}' (sources: {', '.join(sources)})"))
    steps = tree.get("steps")
    if not isinstance(steps, list):
        return problems
    if len(steps) < 2:
        problems.append(("steps", "at least two steps are needed"))
    seen: dict[str, int] = {}
    for i, step in enumerate(steps):
        if not isinstance(step, dict):
            continue
        at = f"steps[{i}]"
        key = step.get("key")
        if isinstance(key, str):
            if key in seen:
                problems.append((f"{at}.key", f"duplicate key '{key}' (also steps[{seen[key]}])"))
            seen.setdefault(key, i)
        given = [k for k in SOURCE_KEYS if step.get(k) is not None]
        if step.get("entity_created") is True:
            if i != 0:
                problems.append((f"{at}.entity_created", "only the first step is the entity's creation"))
                continue
            if step.get("tracked") is False:
                problems.append((f"{at}.tracked", "the first step (the entity's creation) is tracked"))
            for k in (*given, *(["target"] if step.get("target") is not None else [])):
                problems.append((f"{at}.{k}", "the first step is measured from 'entity': remove this key"))
            continue
        if i == 0:
            problems.append((f"{at}.entity_created", "the first step must be tracked and have entity_created: true"))
            continue
        if step.get("tracked") is False:
            for k in given:
                problems.append((f"{at}.{k}", "an untracked step has no source: remove this key"))
            if not step.get("proposed_metric"):
                problems.append((f"{at}.proposed_metric", "an untracked step needs 'proposed_metric'"))
            continue
        for k in ("source", "table", "timestamp"):
            if step.get(k) is None:
                problems.append((f"{at}.{k}", "required key is missing (a tracked step needs source, table, timestamp)"))
        if step.get("entity_id") is not None and step.get("via") is not None:
            problems.append((f"{at}.via", "give exactly one of 'entity_id' or 'via', not both"))
        elif step.get("entity_id") is None and step.get("via") is None:
            problems.append((f"{at}.entity_id", "give exactly one of 'entity_id' or 'via'"))
        src = step.get("source")
        if isinstance(src, str) and sources and src not in sources:
            problems.append((f"{at}.source", f"unknown source '{src}' (sources: {', '.join(sources)})"))
        where = step.get("where")
        if isinstance(where, dict):
            if not where:
                problems.append((f"{at}.where", "'where' is empty: leave it out instead"))
            for col, value in where.items():
                if isinstance(value, list):
                    if not value:
                        problems.append((f"{at}.where.{col}", "an empty list of values"))
                    elif not all(_is_scalar(v) for v in value):
                        problems.append((f"{at}.where.{col}", "list values must be strings, numbers or booleans"))
                elif not _is_scalar(value):
                    problems.append(
                        (f"{at}.where.{col}", "expected a string, number, boolean or a list of them")
                    )
    return problems


def _yaml_kind(value: Any) -> str:
    """How a parsed YAML value is called in messages."""
    if value is None:
        return "nothing (null)"
    return {str: "text", bool: "a boolean", int: "a number", float: "a number", list: "a list"}.get(
        type(value), type(value).__name__)


_LINE_BREAKING = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def one_line(text: str) -> str:
    """A problem line as one line: control characters and line breaks from the file (in a
    key, a value) are shown escaped (``\\n``, ``\\x85``), never broken across lines."""
    return _LINE_BREAKING.sub(lambda m: repr(m.group())[1:-1], text)


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def expand_env(tree: Any, env: dict[str, str], path: str = "") -> tuple[Any, list[tuple[str, str]]]:
    """Expand ``${VAR}`` and ``${VAR:-default}`` in every string of a parsed YAML tree."""
    problems: list[tuple[str, str]] = []

    def walk(node: Any, where: str) -> Any:
        if isinstance(node, str):
            def sub(m: re.Match[str]) -> str:
                var, default = m.group(1), m.group(2)
                value = env.get(var)
                if value is None or (value == "" and default is not None):
                    if default is None:
                        problems.append((where or "(top level)", f"environment variable {var} is not set"))
                        return ""
                    return default
                return value

            return _VAR.sub(sub, node)
        if isinstance(node, dict):
            return {k: walk(v, f"{where}.{k}" if where else str(k)) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, f"{where}[{i}]") for i, v in enumerate(node)]
        return node

    return walk(tree, path), problems


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load, except that a key given twice in one mapping is an error (PyYAML
    silently keeps the last one: a second ``where:`` would drop the first unseen)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:
                continue  # unhashable: the base class reports it
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{key}' in one mapping", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


MAX_FILE_CHARS = 1_000_000
"""A framework file of a few dozen steps is a few KB; anything near this is a mistake."""
MAX_DEPTH = 50
MAX_VALUES = 100_000
"""Values after YAML aliases are followed: an alias bomb (each alias repeating the one before)
stays a few lines of text but would expand to millions of values."""


def _shape_problems(tree: Any) -> list[tuple[str, str]]:
    """The parsed YAML's shape: no alias that contains itself, at most MAX_DEPTH levels and
    MAX_VALUES values (aliases counted each time they are used). Iterative: no recursion."""
    count = 0
    stack: list[tuple[Any, str, tuple[int, ...]]] = [(tree, "", ())]
    while stack:
        node, where, ancestors = stack.pop()
        count += 1
        if count > MAX_VALUES:
            return [("(top level)", f"too many values (more than {MAX_VALUES:,}, counting YAML aliases each time used)")]
        if not isinstance(node, dict | list):
            continue
        if id(node) in ancestors:
            return [(where or "(top level)", "a YAML alias refers to a value that contains it")]
        if len(ancestors) >= MAX_DEPTH:
            return [(where or "(top level)", f"nested too deeply (at most {MAX_DEPTH} levels)")]
        inner = (*ancestors, id(node))
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in items:
            at = f"{where}[{key}]" if isinstance(node, list) else (f"{where}.{key}" if where else str(key))
            stack.append((value, at, inner))
    return []


def parse_config(text: str, source_name: str = "<framework>", env: dict[str, str] | None = None) -> FrameworkConfig:
    """Parse and validate framework YAML text. Raises ConfigError listing every problem."""
    env = dict(os.environ) if env is None else env

    def fail(items: list[tuple[str, str]]) -> ConfigError:
        return ConfigError([one_line(f"{source_name}: {path}: {msg}") for path, msg in items])

    if len(text) > MAX_FILE_CHARS:
        raise fail([("(top level)", f"the file is too large ({len(text):,} characters; at most {MAX_FILE_CHARS:,})")])
    try:
        tree = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(top level)"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise fail([(where, f"not valid YAML: {problem}")]) from None
    except RecursionError:
        raise fail([("(top level)", f"nested too deeply (at most {MAX_DEPTH} levels)")]) from None
    if tree is None:
        raise fail([("(top level)", "the file is empty")])
    if not isinstance(tree, dict):
        raise fail([("(top level)", f"expected a mapping of keys, got {type(tree).__name__}")])
    shape = _shape_problems(tree)
    if shape:
        raise fail(shape)
    tree, env_problems = expand_env(tree, env)
    if env_problems:
        raise fail(env_problems)
    items: list[tuple[str, str]] = []
    cfg: FrameworkConfig | None = None
    try:
        cfg = FrameworkConfig.model_validate(tree)
    except ValidationError as exc:
        for err in exc.errors():
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
            elif err["type"] == "missing":
                msg = "required key is missing"
            elif err["type"] == "model_type":  # "a valid dictionary or instance of StepConfig"
                msg = f"expected a mapping of keys, got {_yaml_kind(err.get('input'))}"
            elif msg.startswith("Value error, "):
                msg = msg[len("Value error, "):]
            items.append((_loc(err["loc"]), msg))
    items.extend(_step_rules(tree))
    if items:
        raise fail(list(dict.fromkeys(items)))
    assert cfg is not None
    return cfg


def load_config(path: str | Path, env: dict[str, str] | None = None) -> FrameworkConfig:
    """Load a framework file from disk. Raises ConfigError (never a traceback-worthy error)."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError([f"{p}: cannot read the file: {exc.strerror or exc}"]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{p}: (top level): not UTF-8 text (byte {exc.start})"]) from None
    return parse_config(text, str(p), env)


_PASSWORD_IN_URL = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/@\s]*:)(?P<pw>[^@\s]*)(?P<tail>@)")


def redact_url(url: str) -> str:
    """Hide the password of a database URL: ``postgresql://u:***@host/db``."""
    return _PASSWORD_IN_URL.sub(lambda m: f"{m.group('head')}***{m.group('tail')}", url)
