"""A corpus of broken framework files (tests/unit/corpus/): `growth validate` on each exits 2
with one line per problem, each naming the file and the key path (or the line and column of
a YAML error), never a traceback. The huge file is made here rather than kept in the repo."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from flows.cli import main
from framework.config import MAX_FILE_CHARS, ConfigError, load_config

CORPUS = Path(__file__).resolve().parent / "corpus"

EXPECTED = {
    "wrong_types.yaml": [
        "funnel.mode: Input should be 'independent', 'any_order' or 'ordered'",
        "funnel.window_days: Input should be a valid integer",
        "report.top_n: Input should be a valid integer",
    ],
    "unknown_key.yaml": ["entity.colour: unknown key"],
    "duplicate_step_key.yaml": ["steps[2].key: duplicate key 'workspace' (also steps[1])"],
    "duplicate_mapping_key.yaml": ["line 2, column 1: not valid YAML: duplicate key 'name' in one mapping"],
    "bad_yaml.yaml": ["line 4, column 71: not valid YAML: expected ',' or ']', but got '}'"],
    "empty.yaml": ["(top level): the file is empty"],
    "comments_only.yaml": ["(top level): the file is empty"],
    "not_a_mapping.yaml": ["(top level): expected a mapping of keys, got list"],
    "non_utf8.yaml": ["(top level): not UTF-8 text (byte 9)"],
    "alias_bomb.yaml": ["(top level): too many values (more than 100,000, counting YAML aliases each time used)"],
    "self_alias.yaml": ["name[0]: a YAML alias refers to a value that contains it"],
    "deep_nesting.yaml": ["(top level): nested too deeply (at most 50 levels)"],
    "python_tag.yaml": [
        "line 1, column 7: not valid YAML: could not determine a constructor for the tag "
        "'tag:yaml.org,2002:python/object/apply:os.system'"
    ],
    "tab_indent.yaml": ["line 2, column 1: not valid YAML: found character '\\t' that cannot start any token"],
    "nul_byte.yaml": ["(top level): not valid YAML: unacceptable character #x0000: special characters are not allowed"],
    "steps_not_mappings.yaml": [
        "steps[0]: expected a mapping of keys, got a number",
        "steps[1]: expected a mapping of keys, got text",
        "steps[2]: expected a mapping of keys, got nothing (null)",
        "x_steps: unknown key",
    ],
    "where_nested.yaml": ["steps[1].where.state: expected a string, number, boolean or a list of them"],
    "unset_variable.yaml": ["sources.app.url: environment variable GROWTH_CORPUS_UNSET_VARIABLE is not set"],
}


def test_the_corpus_is_what_the_test_expects() -> None:
    assert sorted(p.name for p in CORPUS.glob("*.yaml")) == sorted([*EXPECTED, "good.yaml"])


def test_the_corpus_good_file_is_valid(capsys: pytest.CaptureFixture[str]) -> None:
    """Every broken file is this one broken in one way (or a file of its own)."""
    assert main(["validate", str(CORPUS / "good.yaml")]) == 0
    assert "ok: 'Corpus', 2 steps" in capsys.readouterr().out


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_broken_file_exits_2_with_the_key_path(
    name: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GROWTH_CORPUS_UNSET_VARIABLE", raising=False)
    path = CORPUS / name
    started = time.monotonic()
    code = main(["validate", str(path)])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    assert captured.err.splitlines() == [f"{path}: {line}" for line in EXPECTED[name]]
    assert "Traceback" not in captured.err
    assert time.monotonic() - started < 5  # no alias bomb, deep nesting or huge file hangs the check


def test_huge_file_is_refused_before_parsing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = (CORPUS / "good.yaml").read_text(encoding="utf-8")
    filler = "".join(f"# {i:08d} {'x' * 60}\n" for i in range(MAX_FILE_CHARS // 70 + 10))
    path = tmp_path / "huge.yaml"
    path.write_text(good + filler, encoding="utf-8")
    size = len(path.read_text(encoding="utf-8"))
    assert size > MAX_FILE_CHARS
    started = time.monotonic()
    assert main(["validate", str(path)]) == 2
    assert capsys.readouterr().err == (
        f"{path}: (top level): the file is too large ({size:,} characters; at most {MAX_FILE_CHARS:,})\n")
    assert time.monotonic() - started < 2


def test_a_large_but_sane_file_still_loads(tmp_path: Path) -> None:
    """The limits leave room: 200 steps, long names, a few hundred KB of comments."""
    good = (CORPUS / "good.yaml").read_text(encoding="utf-8")
    steps = "".join(
        f"  - {{key: s{i}, name: '{'Step ' * 40}{i}', source: app, table: t{i}, entity_id: a, timestamp: ts}}\n"
        for i in range(200)
    )
    path = tmp_path / "large.yaml"
    path.write_text(good + steps + "# " + "c" * 300_000 + "\n", encoding="utf-8")
    assert len(load_config(path, env={}).steps) == 202


def test_missing_and_unreadable_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(tmp_path / "nope.yaml")]) == 2
    assert capsys.readouterr().err == f"{tmp_path / 'nope.yaml'}: cannot read the file: No such file or directory\n"
    assert main(["validate", str(tmp_path)]) == 2  # a folder
    assert capsys.readouterr().err.startswith(f"{tmp_path}: cannot read the file: ")
    with pytest.raises(ConfigError):
        load_config(tmp_path)
