"""isotime: the one reader and writer of the suite's ISO 8601 times, and no other reader in the package."""

from __future__ import annotations

import ast
import datetime as dt
from pathlib import Path

import pytest

from avoviirscollector import isotime

PACKAGE = Path(isotime.__file__).parent


@pytest.mark.parametrize("text", ["2026-12-02T16:05:00Z", "2026-12-02T16:05:00+00:00", "2026-12-02T16:05:00",
                                  "2026-12-02T17:05:00+01:00", "2026-12-02 16:05:00.000000"])
def test_every_form_the_suite_meets_is_the_same_aware_utc_time(text):
    when = isotime.parse(text)

    assert when == dt.datetime(2026, 12, 2, 16, 5, tzinfo=dt.UTC)
    assert when.utcoffset() == dt.timedelta(0)
    assert isotime.naive(text) == dt.datetime(2026, 12, 2, 16, 5)
    assert isotime.epoch(text) == when.timestamp()


def test_a_datetime_passes_through_as_utc_and_a_naive_one_means_utc():
    assert isotime.parse(dt.datetime(2026, 12, 2, 16, 5)) == dt.datetime(2026, 12, 2, 16, 5, tzinfo=dt.UTC)
    tokyo = dt.timezone(dt.timedelta(hours=9))
    assert isotime.parse(dt.datetime(2026, 12, 3, 1, 5, tzinfo=tokyo)).hour == 16


@pytest.mark.parametrize("value", ["yesterday", "", "2026-13-01T00:00:00", None, 17, ["2026-12-02"], {}])
def test_what_is_not_an_iso_time_is_a_value_error_or_none_for_the_lenient_readers(value):
    with pytest.raises(ValueError):
        isotime.parse(value)
    assert isotime.utc(value) is None
    if not isinstance(value, int):
        assert isotime.epoch(value) is None


def test_epoch_takes_numbers_as_they_are_but_not_booleans():
    assert isotime.epoch(1_764_691_500) == 1_764_691_500.0
    assert isotime.epoch(12.5) == 12.5
    assert isotime.epoch(True) is None


def test_stamp_writes_z_times_that_parse_reads_back():
    when = dt.datetime(2026, 12, 2, 16, 5, 7, 123456, tzinfo=dt.UTC)

    assert isotime.stamp(when) == "2026-12-02T16:05:07Z"
    assert isotime.stamp(when, micro=True) == "2026-12-02T16:05:07.123456Z"
    assert isotime.stamp(when.timestamp(), micro=True) == "2026-12-02T16:05:07.123456Z"
    assert isotime.stamp(dt.datetime(2026, 12, 2, 16, 5, 7)) == "2026-12-02T16:05:07Z"
    assert isotime.stamp(when.astimezone(dt.timezone(dt.timedelta(hours=-9)))) == "2026-12-02T16:05:07Z"
    assert isotime.parse(isotime.stamp(when, micro=True)) == when


def test_no_other_module_of_the_package_parses_or_writes_an_iso_time_of_its_own():
    """fromisoformat, and strftime with an extended ISO format, only in isotime (not the compact stamps of names)."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "isotime.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            name = node.func.attr
            iso_format = any(isinstance(a, ast.Constant) and isinstance(a.value, str) and "%Y-%m-%dT" in a.value
                             for a in node.args)
            if name == "fromisoformat" or (name in ("strftime", "strptime") and iso_format):
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {name}")
    assert found == []
