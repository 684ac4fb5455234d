"""A property-based fuzzer (hypothesis) over the framework-file loader and `growth validate`:
whatever the file holds (random text, random bytes, a good file with one value replaced,
removed or added anywhere), loading it either gives a FrameworkConfig or raises ConfigError
whose problems are single lines "FILE: KEY PATH: what is wrong"; never another exception,
and `growth validate` exits 0 or 2 with one line per problem, never a traceback."""

from __future__ import annotations

import contextlib
import io
import math
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flows.cli import main
from framework.config import ConfigError, FrameworkConfig, load_config, one_line, parse_config
from tests.conftest import DEMO_FRAMEWORK

SOURCE = "fuzz.yaml"
GOOD = yaml.safe_load(DEMO_FRAMEWORK.read_text(encoding="utf-8"))
ENV = {"GROWTH_DEMO_APP_URL": "sqlite://", "GROWTH_DEMO_EVENTS_URL": "sqlite://"}
FUZZ = settings(max_examples=100, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def _check_outcome(text: str, source: str = SOURCE) -> list[str]:
    """Load; return the problems (empty when valid). Any other exception fails the test."""
    try:
        cfg = parse_config(text, source, env=ENV)
    except ConfigError as exc:
        assert exc.exit_code == 2
        assert exc.problems, "a ConfigError names at least one problem"
        for line in exc.problems:
            assert line.startswith(f"{source}: "), line
            rest = line[len(source) + 2:]
            where, sep, what = rest.partition(": ")
            assert sep and where and what.strip(), line
            assert "\n" not in line and "\r" not in line, repr(line)
            assert "Traceback" not in line
        return exc.problems
    assert isinstance(cfg, FrameworkConfig)
    return []


# ---------------------------------------------------------------- random text and bytes

YAMLISH = st.text(alphabet=st.sampled_from(list("abc: -[]{}&*!|>'\"#%@`,?\n\t 0123456789.~\\\x00\u00e9\U0001f680")),
                  max_size=200)


@FUZZ
@given(text=st.one_of(st.text(max_size=300), YAMLISH))
def test_random_text_never_escapes_as_another_exception(text: str) -> None:
    _check_outcome(text)


@FUZZ
@given(data=st.binary(max_size=300))
def test_random_bytes_in_a_file_never_escape(data: bytes, tmp_path_factory) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "f.yaml"
    path.write_bytes(data)
    try:
        load_config(path, env=ENV)
    except ConfigError as exc:
        assert all(line.startswith(f"{path}: ") and "\n" not in line for line in exc.problems)


# ---------------------------------------------------------------- a good file, mutated

SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
    st.sampled_from(["", "${UNSET_FUZZ_VAR}", "${GROWTH_DEMO_APP_URL}", "accounts; DROP TABLE x", "<!channel>",
                     "9999-12-31", "0001-01-01", "independent", "ordered"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(st.text(max_size=10), children, max_size=4)),
    max_leaves=12,
)


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


ALL_PATHS = _paths(GOOD)
MODEL_PATHS = [(), ("entity",), ("funnel",), ("report",), ("quality",)] + [
    ("steps", i) for i in range(len(GOOD["steps"]))
]
"""Mappings whose keys are fixed (an added key there must be reported as unknown)."""


def _copy(node: Any) -> Any:
    return yaml.safe_load(yaml.safe_dump(node))


def _get(tree: Any, path: tuple) -> Any:
    for part in path:
        tree = tree[part]
    return tree


def _key_path(path: tuple) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out


def _dump(tree: Any) -> str:
    return yaml.safe_dump(tree, allow_unicode=True, sort_keys=False)


@FUZZ
@given(path=st.sampled_from(ALL_PATHS), value=VALUES)
def test_any_value_replaced_anywhere(path: tuple, value: Any) -> None:
    tree = _copy(GOOD)
    _get(tree, path[:-1])[path[-1]] = value
    problems = _check_outcome(_dump(tree))
    if problems and not any("environment variable" in p for p in problems):
        # the problem is reported at the replaced key or at a key around it
        top = _key_path(path[:1])
        assert any(f"{SOURCE}: {top}" in p or "(top level)" in p or "steps" in p for p in problems), problems


@FUZZ
@given(path=st.sampled_from(ALL_PATHS))
def test_any_key_removed(path: tuple) -> None:
    tree = _copy(GOOD)
    parent = _get(tree, path[:-1])
    if isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent.pop(path[-1])
    _check_outcome(_dump(tree))


@FUZZ
@given(where=st.sampled_from(MODEL_PATHS),
       key=st.text(min_size=1, max_size=20).filter(lambda k: k.strip() == k and k not in _known_keys()),
       value=VALUES)
def test_an_unknown_key_added_is_named_with_its_path(where: tuple, key: str, value: Any) -> None:
    tree = _copy(GOOD)
    _get(tree, where)[key] = value
    text = _dump(tree)
    problems = _check_outcome(text)
    if any("environment variable" in p for p in problems):
        return  # an unset ${VAR} in the value is reported alone, before the keys are checked
    # the key as YAML reads it back (a line break inside a key may be folded, for one)
    (parsed,) = set(_get(yaml.safe_load(text), where)) - set(_get(GOOD, where))
    assert one_line(f"{SOURCE}: {_key_path((*where, parsed))}: unknown key") in problems, problems


def _known_keys() -> set[str]:
    from framework.config import (
        EntityConfig,
        FrameworkConfig,
        FunnelConfig,
        QualityConfig,
        ReportConfig,
        StepConfig,
    )

    keys: set[str] = {"attributes"}
    for model in (EntityConfig, FrameworkConfig, FunnelConfig, QualityConfig, ReportConfig, StepConfig):
        keys |= set(model.model_fields)
    return keys


@FUZZ
@given(number=st.floats(allow_nan=True, allow_infinity=True),
       field=st.sampled_from([("funnel", "window_days"), ("funnel", "min_sample"), ("quality", "freshness_hours"),
                              ("quality", "anomaly_pp"), ("quality", "max_orphan_ratio"), ("report", "top_n")]))
def test_numbers_out_of_range_or_not_finite(number: float, field: tuple[str, str]) -> None:
    tree = _copy(GOOD)
    tree.setdefault(field[0], {})[field[1]] = number
    problems = _check_outcome(_dump(tree))
    if not math.isfinite(number):
        assert any(f"{SOURCE}: {field[0]}.{field[1]}: " in p for p in problems), problems


# ---------------------------------------------------------------- the command


@settings(max_examples=40, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(ALL_PATHS), value=VALUES)
def test_growth_validate_exits_0_or_2_one_line_per_problem(path: tuple, value: Any, tmp_path_factory) -> None:
    tree = _copy(GOOD)
    _get(tree, path[:-1])[path[-1]] = value
    file: Path = tmp_path_factory.mktemp("cli") / "f.yaml"
    file.write_text(_dump(tree), encoding="utf-8")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["validate", str(file)])
    assert code in {0, 2}
    assert "Traceback" not in err.getvalue()
    if code == 2:
        lines = err.getvalue().splitlines()
        assert lines and all(line.startswith(f"{file}: ") for line in lines), lines
        assert out.getvalue() == ""
    else:
        assert out.getvalue().startswith(f"{file}: ok: ") and err.getvalue() == ""
