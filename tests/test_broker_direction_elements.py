"""The element store of the pass-direction helper: the TLE files in elements/, read with the suite's one parser."""

from __future__ import annotations

import logging
import shutil

from pyorbital.orbital import Orbital

from avoviirscollector.broker.elements import ElementStore
from avoviirscollector.tle import parse_tles
from tests.broker_support import TLE_EPOCH, TLE_FILE

STORE_LOG = "task_broker.direction"


def test_the_test_tle_set_is_valid_and_pyorbital_reads_it(tmp_path):
    sets = parse_tles(TLE_FILE.read_text().splitlines(), "weather.txt")
    assert sorted(s.norad for s in sets) == [37849, 43013, 54234]
    for name in ("Suomi-NPP", "NOAA-20", "NOAA-21"):  # found by catalogue number
        orbital = Orbital(name, tle_file=str(TLE_FILE))
        lon, lat, alt = orbital.get_lonlatalt(TLE_EPOCH.replace(tzinfo=None))
        assert abs(lat) < 0.5 and 800 < alt < 860  # on its ascending node, VIIRS's altitude
    assert {s.epoch for s in sets} == {TLE_EPOCH}
    assert {s.source for s in sets} == {"weather.txt"}
    shutil.copy(TLE_FILE, tmp_path / "weather.txt")
    store = ElementStore(tmp_path)
    for norad in (37849, 43013, 54234):
        assert store.best(norad, TLE_EPOCH).epoch == TLE_EPOCH


def test_bad_checksum_or_mangled_lines_are_skipped(tmp_path, caplog):
    """The store's policy: a bad element set in a file is skipped, the file's good sets are used, one WARNING."""
    lines = TLE_FILE.read_text().splitlines()
    good = lines[1:3]
    bad_checksum = [good[0][:-1] + str((int(good[0][-1]) + 1) % 10), good[1]]

    def read(text_lines) -> list[int]:
        """The satellites a fresh store finds in a file of ``text_lines``."""
        (tmp_path / "tle.txt").write_text("\n".join(text_lines) + "\n")
        store = ElementStore(tmp_path)
        return [norad for norad in (37849, 43013, 54234) if store.best(norad, TLE_EPOCH) is not None]

    assert read(good) == [37849]
    assert read(bad_checksum) == []
    assert read([good[0], good[1][:40]]) == []
    # among good sets of other satellites, in 3-line form, with a comment line and junk between them
    caplog.set_level(logging.WARNING, STORE_LOG)
    caplog.clear()
    mixed = ["# weather satellites, fetched by hand", *bad_checksum, lines[3], lines[4], lines[5][:50],
             *lines[6:9], "<html>rate limited</html>", ""]
    assert read(mixed) == [54234]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "tle.txt" in warnings[0] and "1 element sets used" in warnings[0]


def test_element_store_rereads_a_changed_directory(tmp_path):
    now = [0.0]
    store = ElementStore(tmp_path, clock=lambda: now[0])
    assert store.best(37849, TLE_EPOCH) is None
    shutil.copy(TLE_FILE, tmp_path / "weather.txt")
    now[0] += 11
    assert store.best(37849, TLE_EPOCH).source == "weather.txt"
