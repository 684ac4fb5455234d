"""The parameter forms the Prefect UI shows for each deployed flow.

`prefect deploy` (and `python -m deployments.serve`) register the schema that
`prefect.utilities.callables.parameter_schema` generates from the flow's signature and
docstring; the UI renders it as a form and the server validates every run created from a
deployment against it (`prefect.utilities.schema_tools.validate`, the function used here).
"""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import yaml
from pydantic.fields import FieldInfo

ROOT = Path(__file__).resolve().parents[2]
SPEC = yaml.safe_load((ROOT / "prefect.yaml").read_text())
DEPLOYED = {d["name"]: d for d in SPEC["deployments"] if (ROOT / d["entrypoint"].split(":")[0]).is_file()}

DATE = {"format": "date", "type": "string"}
NULL = {"type": "null"}


def _flow(name: str):
    from deployments.serve import load_flow

    return load_flow(DEPLOYED[name]["entrypoint"])


def _schema(name: str) -> dict:
    from prefect.utilities.callables import parameter_schema

    return parameter_schema(_flow(name)).model_dump()


def _rejects(name: str, parameters: dict) -> str:
    from prefect.utilities.schema_tools.validation import ValidationError, validate

    with pytest.raises(ValidationError) as err:
        validate({**DEPLOYED[name].get("parameters", {}), **parameters}, _schema(name), raise_on_error=True)
    return str(err.value)


def _accepts(name: str, parameters: dict) -> None:
    from prefect.utilities.schema_tools.validation import validate

    validate({**DEPLOYED[name].get("parameters", {}), **parameters}, _schema(name), raise_on_error=True)


def _date(prop: dict) -> bool:
    """A date input: format date, and the pattern the server enforces (it skips `format`)."""
    options = prop.get("anyOf", [prop])
    return any(o.get("format") == "date" and o.get("type") == "string" and "pattern" in o for o in options)


@pytest.mark.parametrize("name", sorted(DEPLOYED))
def test_every_parameter_is_described_and_nothing_with_a_default_is_required(name: str) -> None:
    schema = _schema(name)
    props = schema["properties"]
    signature = inspect.signature(_flow(name).fn).parameters
    assert list(props) == list(signature)
    for key, prop in props.items():
        assert prop.get("description", "").strip(), f"{name}.{key} has no description (docstring Args:)"
        default = signature[key].default
        assert not isinstance(default, FieldInfo), f"{name}.{key}: a Field default breaks the schema"
        if default is inspect.Parameter.empty:
            assert key in schema["required"] and "default" not in prop
        else:
            assert key not in schema["required"] and "default" in prop
    # what the deployment fills in validates, and leaves required only what a person must choose
    _accepts(name, {k: "2026-11-30" if _date(props[k]) else "x" for k in schema["required"]
                    if k not in DEPLOYED[name].get("parameters", {})})


def test_daily_form() -> None:
    props = _schema("daily")["properties"]
    assert _schema("daily")["required"] == []
    assert _date(props["as_of"]) and NULL in props["as_of"]["anyOf"] and props["as_of"]["default"] is None
    assert props["dry_run"] == {**props["dry_run"], "type": "boolean", "default": False}
    assert props["top_n"]["anyOf"] == [{"maximum": 50, "minimum": 1, "type": "integer"}, NULL]
    assert props["channel"]["anyOf"] == [{"type": "string"}, NULL]
    assert props["framework_path"]["default"] == "framework/demo/growth.yaml"
    assert props["full_refresh"]["default"] is False
    _accepts("daily", {"as_of": "2026-11-30", "channel": "#growth", "top_n": 5, "dry_run": True})
    _accepts("daily", {"as_of": None, "top_n": None})
    assert "'as_of'" in _rejects("daily", {"as_of": "not-a-date"})
    assert "'as_of'" in _rejects("daily", {"as_of": "30/11/2026"})
    assert "'as_of'" in _rejects("daily", {"as_of": "2026-13-01"})
    assert "'top_n'" in _rejects("daily", {"top_n": 0})
    assert "'top_n'" in _rejects("daily", {"top_n": 51})
    assert "'dry_run'" in _rejects("daily", {"dry_run": "yes"})


def test_daily_mode_and_cohort_are_choices_of_the_framework_file_values() -> None:
    from typing import get_args

    from framework.config import FunnelConfig

    props = _schema("daily")["properties"]
    for key in ("mode", "cohort"):
        choices = list(get_args(FunnelConfig.model_fields[key].annotation))
        assert props[key]["anyOf"] == [{"enum": choices, "type": "string"}, NULL], key
        assert props[key]["default"] is None
        assert "empty means the framework file's" in " ".join(props[key]["description"].split())
    assert props["mode"]["anyOf"][0]["enum"] == ["independent", "any_order", "ordered"]
    assert props["cohort"]["anyOf"][0]["enum"] == ["month", "week"]
    _accepts("daily", {"mode": "ordered", "cohort": "week"})
    _accepts("daily", {"mode": None, "cohort": None})
    assert "'mode'" in _rejects("daily", {"mode": "bogus"})
    assert "'mode'" in _rejects("daily", {"mode": "Ordered"})
    assert "'cohort'" in _rejects("daily", {"cohort": "day"})


def test_a_bad_mode_is_refused_when_the_flow_is_called_too() -> None:
    """The flow's own validation (validate_parameters=True), for runs not created from a deployment."""
    from prefect.exceptions import ParameterTypeError

    flow = _flow("daily")
    assert flow.validate_parameters({"mode": "any_order", "cohort": "week"})["mode"] == "any_order"
    for bad in ({"mode": "bogus"}, {"cohort": "quarter"}):
        with pytest.raises(ParameterTypeError) as err:
            flow.validate_parameters(bad)
        assert next(iter(bad)) in str(err.value)


def test_backfill_form() -> None:
    schema = _schema("backfill")
    props = schema["properties"]
    assert schema["required"] == ["start", "end"]
    assert _date(props["start"]) and _date(props["end"])
    assert props["force"]["default"] is False
    _accepts("backfill", {"start": "2026-11-01", "end": "2026-11-30"})
    assert "'end' is a required property" in _rejects("backfill", {"start": "2026-11-01"})
    assert "'start'" in _rejects("backfill", {"start": "yesterday", "end": "2026-11-30"})


def test_impact_form() -> None:
    schema = _schema("impact")
    props = schema["properties"]
    # the deployment fills in the framework file; a person picks the step and the change date
    assert set(schema["required"]) - set(DEPLOYED["impact"]["parameters"]) == {"step", "change_date"}
    assert _date(props["change_date"]) and _date(props["as_of"]) and props["as_of"]["default"] is None
    for key in ("before_cohorts", "after_cohorts"):
        assert props[key]["type"] == "integer" and props[key]["minimum"] >= 1 and "maximum" in props[key]
    assert props["dry_run"]["default"] is True
    _accepts("impact", {"step": "first_deployment", "change_date": "2026-07-03"})
    assert "'before_cohorts'" in _rejects(
        "impact", {"step": "first_deployment", "change_date": "2026-07-03", "before_cohorts": 0}
    )
    assert "'change_date'" in _rejects("impact", {"step": "first_deployment", "change_date": "July 3rd"})
    assert "'as_of'" in _rejects("impact", {"step": "first_deployment", "change_date": "2026-07-03", "as_of": "today"})


def test_the_deployment_parameters_are_the_flow_defaults_or_valid_values() -> None:
    for name, spec in DEPLOYED.items():
        props = _schema(name)["properties"]
        assert set(spec.get("parameters", {})) <= set(props), name
