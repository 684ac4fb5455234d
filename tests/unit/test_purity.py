"""framework/ is the pure core: it must not import I/O or orchestration libraries."""

from __future__ import annotations

import ast
from pathlib import Path

FORBIDDEN = {"prefect", "sqlalchemy", "slack_sdk", "great_expectations", "psycopg", "pymysql"}
CORE = Path(__file__).resolve().parents[2] / "framework"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_framework_modules_import_no_io_libraries() -> None:
    files = sorted(CORE.rglob("*.py"))
    assert len(files) >= 5, "the core package was not found"
    offenders = {str(f.relative_to(CORE)): sorted(_imports(f) & FORBIDDEN) for f in files}
    assert {f: bad for f, bad in offenders.items() if bad} == {}


def test_the_walker_sees_nested_and_from_imports(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from prefect import flow\n    import sqlalchemy.orm\n")
    assert _imports(probe) >= {"prefect", "sqlalchemy"}
