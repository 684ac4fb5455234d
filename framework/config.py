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

Scalar = str | int | float | bool


class ConfigError(GrowthError):
    """A framework file that cannot be used. ``problems`` holds one line each."""

    exit_code = 2


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


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


class EntityConfig(_Strict):
    name: str = "entity"
    source: str
    table: str
    id: str
    created_at: str
    attributes: list[str] = Field(default_factory=list)

    @field_validator("attributes")
    @classmethod
    def _unique_attributes(cls, v: list[str]) -> list[str]:
        dupes = sorted({a for a in v if v.count(a) > 1})
        if dupes:
            raise ValueError(f"duplicate attribute(s): {', '.join(dupes)}")
        return v


class FunnelConfig(_Strict):
    mode: Literal["independent", "any_order", "ordered"] = "independent"
    window_days: Annotated[int, Field(ge=1, le=3650)] = 30
    lookback_days: Annotated[int, Field(ge=1, le=3650)] = 28
    cohort: Literal["month", "week"] = "month"
    history_cohorts: Annotated[int, Field(ge=1, le=520)] = 12
    min_sample: Annotated[int, Field(ge=1)] = 30


class ReportConfig(_Strict):
    top_n: Annotated[int, Field(ge=1, le=50)] = 3
    channel: str = "#growth"


class QualityConfig(_Strict):
    freshness_hours: Annotated[float, Field(gt=0)] = 36
    max_orphan_ratio: Annotated[float, Field(ge=0, le=1)] = 0.01
    late_arrival_days: Annotated[int, Field(ge=0)] = 3


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
    where: dict[str, Scalar | list[Scalar]] | None = None
    target: Annotated[float, Field(ge=0, le=1)] | None = None

    @field_validator("key")
    @classmethod
    def _key_shape(cls, v: str) -> str:
        if not KEY_PATTERN.match(v):
            raise ValueError(f"'{v}' must match [a-z][a-z0-9_]*")
        return v

    @field_validator("where")
    @classmethod
    def _where_values(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("'where' is empty: leave it out instead")
        for col, val in v.items():
            if isinstance(val, list) and not val:
                raise ValueError(f"'{col}' has an empty list of values")
        return v

    @model_validator(mode="after")
    def _shape(self) -> StepConfig:
        source_keys = ("source", "table", "entity_id", "timestamp", "via", "where")
        if self.entity_created:
            if not self.tracked:
                raise ValueError("the entity_created step is tracked: remove 'tracked: false'")
            given = [k for k in (*source_keys, "target") if getattr(self, k) is not None]
            if given:
                raise ValueError(
                    f"the entity_created step is measured from 'entity'; remove {', '.join(given)}"
                )
            return self
        if not self.tracked:
            given = [k for k in source_keys if getattr(self, k) is not None]
            if given:
                raise ValueError(f"an untracked step has no source; remove {', '.join(given)}")
            if not self.proposed_metric:
                raise ValueError("an untracked step needs 'proposed_metric'")
            return self
        missing = [k for k in ("source", "table", "timestamp") if getattr(self, k) is None]
        if missing:
            raise ValueError(f"a tracked step needs {', '.join(repr(m) for m in missing)}")
        if (self.entity_id is None) == (self.via is None):
            raise ValueError("give exactly one of 'entity_id' or 'via'")
        return self


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


def _cross_checks(cfg: FrameworkConfig) -> list[tuple[str, str]]:
    """Rules that span keys; returns (key path, message) pairs."""
    problems: list[tuple[str, str]] = []
    if cfg.entity.source not in cfg.sources:
        problems.append(
            ("entity.source", f"unknown source '{cfg.entity.source}' (sources: {', '.join(cfg.sources)})")
        )
    if len(cfg.steps) < 2:
        problems.append(("steps", "at least two steps are needed"))
    seen: dict[str, int] = {}
    for i, step in enumerate(cfg.steps):
        if step.key in seen:
            problems.append((f"steps[{i}].key", f"duplicate key '{step.key}' (also steps[{seen[step.key]}])"))
        seen.setdefault(step.key, i)
        if step.entity_created and i != 0:
            problems.append((f"steps[{i}].entity_created", "only the first step is the entity's creation"))
        if step.source is not None and step.source not in cfg.sources:
            problems.append(
                (f"steps[{i}].source", f"unknown source '{step.source}' (sources: {', '.join(cfg.sources)})")
            )
    if cfg.steps and not cfg.steps[0].entity_created:
        problems.append(("steps[0].entity_created", "the first step must be tracked and have entity_created: true"))
    return problems


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


def parse_config(text: str, source_name: str = "<framework>", env: dict[str, str] | None = None) -> FrameworkConfig:
    """Parse and validate framework YAML text. Raises ConfigError listing every problem."""
    env = dict(os.environ) if env is None else env

    def fail(items: list[tuple[str, str]]) -> ConfigError:
        return ConfigError([f"{source_name}: {path}: {msg}" for path, msg in items])

    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(top level)"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise fail([(where, f"not valid YAML: {problem}")]) from None
    if tree is None:
        raise fail([("(top level)", "the file is empty")])
    if not isinstance(tree, dict):
        raise fail([("(top level)", f"expected a mapping of keys, got {type(tree).__name__}")])
    tree, env_problems = expand_env(tree, env)
    if env_problems:
        raise fail(env_problems)
    try:
        cfg = FrameworkConfig.model_validate(tree)
    except ValidationError as exc:
        items = []
        for err in exc.errors():
            loc = err["loc"]
            # Pydantic appends the union member or the validator name; keep the key path only.
            loc = tuple(p for p in loc if not (isinstance(p, str) and ("[" in p or p in {"list[union[str,int,float,bool]]", "str", "int", "float", "bool"})))
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
            elif err["type"] == "missing":
                msg = "required key is missing"
            elif msg.startswith("Value error, "):
                msg = msg[len("Value error, "):]
            items.append((_loc(loc), msg))
        # one line per key path and message
        raise fail(list(dict.fromkeys(items))) from None
    problems = _cross_checks(cfg)
    if problems:
        raise fail(problems)
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
