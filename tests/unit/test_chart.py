"""The funnel chart: a valid PNG of a predictable size, byte-identical for the same report,
robust to empty, absent and unwieldy data."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from framework.report import StepResult
from tasks.chart import DPI, FIXED_IN, MAX_ROWS, ROW_IN, WIDTH_IN, render_funnel_chart
from tests.conftest import ROOT
from tests.unit.test_digest import _steps, make_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _size(path: Path) -> tuple[int, int]:
    """(width, height) in pixels, read back with matplotlib."""
    from matplotlib.image import imread

    pixels = imread(path)
    return pixels.shape[1], pixels.shape[0]


def _expected_size(rows: int) -> tuple[int, int]:
    return round(WIDTH_IN * DPI), round((FIXED_IN + ROW_IN * rows) * DPI)


def _assert_png(path: Path, rows: int) -> bytes:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 1000
    assert _size(path) == _expected_size(rows)
    return data


def test_writes_a_png_of_the_expected_size(tmp_path: Path) -> None:
    target = tmp_path / "nested" / "funnel.png"
    written = render_funnel_chart(make_report(), target)
    assert written == target and target.is_file()
    _assert_png(target, rows=7)
    assert not list(target.parent.glob("*.tmp"))


def test_same_report_same_bytes_without_version_or_time(tmp_path: Path) -> None:
    first = render_funnel_chart(make_report(), tmp_path / "a.png").read_bytes()
    second = render_funnel_chart(make_report(), str(tmp_path / "b.png")).read_bytes()
    assert first == second
    assert b"matplotlib" not in first and b"Software" not in first and b"tIME" not in first


def test_the_highlights_change_the_picture(tmp_path: Path) -> None:
    base = render_funnel_chart(make_report(), tmp_path / "a.png").read_bytes()
    other = render_funnel_chart(make_report(lowest=["paid"]), tmp_path / "b.png").read_bytes()
    assert base != other


def test_lowest_and_qualifying_colours_are_drawn(tmp_path: Path) -> None:
    from matplotlib.image import imread

    from tasks.chart import COLOUR_LOWEST, COLOUR_QUALIFYING, COLOUR_TRACKED

    pixels = imread(render_funnel_chart(make_report(), tmp_path / "a.png"))[:, :, :3]
    colours = {tuple(round(float(c) * 255) for c in px) for px in pixels.reshape(-1, 3)[::7]}
    for hex_colour in (COLOUR_LOWEST, COLOUR_QUALIFYING, COLOUR_TRACKED):
        rgb = tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
        assert rgb in colours, hex_colour


def test_nobody_reached_and_absent_conversions(tmp_path: Path) -> None:
    steps = [
        replace(s, reached=0, conversion=None, overall_conversion=None, lost=None)
        if s.tracked
        else s
        for s in _steps()
    ]
    report = make_report(steps=steps, lowest=[])
    report = replace(report, result=replace(report.result, current_period=replace(report.result.current_period, entities=0)))
    _assert_png(render_funnel_chart(report, tmp_path / "zero.png"), rows=7)


def test_no_steps_at_all(tmp_path: Path) -> None:
    _assert_png(render_funnel_chart(make_report(steps=[], lowest=[]), tmp_path / "none.png"), rows=1)


UNWIELDY = "Étape «très longue» 日本語 🚀 pay $5 then \\frac{1}{2} $ <!channel> " * 60


def _many(n: int, name: str = UNWIELDY) -> list[StepResult]:
    out = []
    for i in range(n):
        reached = max(0, 1000 - 25 * i)
        out.append(
            StepResult(
                key=f"s{i}",
                name=f"{i} {name}",
                position=i + 1,
                tracked=i % 7 != 3,
                qualifying=i % 11 == 5,
                entered=1000,
                reached=reached,
                conversion=None if i % 5 == 0 else reached / 1000,
                overall_conversion=None if i % 6 == 0 else reached / 1000,
            )
        )
    return out


def test_forty_steps_with_long_unicode_and_dollar_names(tmp_path: Path) -> None:
    report = make_report(steps=_many(40), lowest=["s1", "s2", "s12"], framework="Growth 成長 $ " * 30)
    _assert_png(render_funnel_chart(report, tmp_path / "forty.png"), rows=40)


def test_very_many_steps_are_capped(tmp_path: Path) -> None:
    report = make_report(steps=_many(MAX_ROWS + 15, name="step"), lowest=["s1"])
    _assert_png(render_funnel_chart(report, tmp_path / "many.png"), rows=MAX_ROWS + 1)


def test_global_matplotlib_state_is_left_alone(tmp_path: Path) -> None:
    import matplotlib

    before = dict(matplotlib.rcParams)
    backend = matplotlib.get_backend()
    render_funnel_chart(make_report(), tmp_path / "a.png")
    assert dict(matplotlib.rcParams) == before and matplotlib.get_backend() == backend


def test_importing_the_module_does_not_import_matplotlib() -> None:
    code = "import sys, tasks.chart; sys.exit('matplotlib' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0
