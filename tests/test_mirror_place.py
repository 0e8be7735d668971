"""Placement (HDF5 check, one rename) and the download journal."""

import os

import pytest

from avoviirscollector.mirror.place import Journal, PlacementError, place_file
from avoviirscollector.ondisk.state import read_placed
from tests.gina_double import make_sdr_file

NAME = "SVM16_npp_d20261123_t1000000_e1001254_b70000_c20261123101000000000_cspp_dev.h5"


@pytest.fixture
def dirs(tmp_path):
    for sub in ("sdr", "tmp", "state"):
        (tmp_path / sub).mkdir()
    return tmp_path


def test_valid_hdf5_is_renamed_into_sdr(dirs):
    temp = dirs / "tmp" / (NAME + ".part")
    make_sdr_file(temp, "SVM16", 20_000)
    inode = temp.stat().st_ino
    target = place_file(temp, dirs / "sdr", NAME)
    assert target == dirs / "sdr" / NAME and target.stat().st_ino == inode  # renamed, not copied
    assert not temp.exists()


@pytest.mark.parametrize("content, reason", [
    (b"<html>502</html>" * 100, "not an HDF5 file"),
    (b"", "not an HDF5 file"),
])
def test_not_hdf5_is_refused_and_temp_removed(dirs, content, reason):
    temp = dirs / "tmp" / (NAME + ".part")
    temp.write_bytes(content)
    with pytest.raises(PlacementError, match=reason):
        place_file(temp, dirs / "sdr", NAME)
    assert os.listdir(dirs / "sdr") == [] and not temp.exists()


def test_truncated_hdf5_is_refused(dirs):
    temp = dirs / "tmp" / (NAME + ".part")
    make_sdr_file(temp, "SVM16", 200_000)
    with open(temp, "r+b") as fh:
        fh.truncate(1000)
    with pytest.raises(PlacementError):
        place_file(temp, dirs / "sdr", NAME)
    assert os.listdir(dirs / "sdr") == []


def test_existing_file_in_sdr_is_never_replaced(dirs):
    (dirs / "sdr" / NAME).write_bytes(b"placed earlier")
    temp = dirs / "tmp" / (NAME + ".part")
    make_sdr_file(temp, "SVM16", 20_000)
    with pytest.raises(PlacementError, match="already in sdr"):
        place_file(temp, dirs / "sdr", NAME)
    assert (dirs / "sdr" / NAME).read_bytes() == b"placed earlier"


def test_journal_survives_a_torn_last_line(dirs):
    journal = Journal(dirs / "state")
    journal.append("a.h5", 10, "m" * 32, 1.5, 4)
    with open(journal.path, "ab") as fh:  # a run killed in the middle of its write
        fh.write(b'{"time":"2026-11-23T10:00:00Z","name":"b.h5","by')
    journal.append("c.h5", 30, "n" * 32, 0.25, 2)
    records = [raw for raw, _ in read_placed(journal.path)]
    assert [r["name"] for r in records] == ["a.h5", "c.h5"]
    assert records[1] == {"time": records[1]["time"], "name": "c.h5", "bytes": 30, "md5": "n" * 32,
                          "seconds": 0.25, "connections": 2}
    assert list(read_placed(dirs / "state" / "missing")) == []


def test_journal_keeps_when_the_listing_first_showed_the_file(dirs):
    journal = Journal(dirs / "state")
    journal.append("a.h5", 10, "m" * 32, 1.5, 4, listed="2026-11-23T09:58:00Z")
    journal.append("b.h5", 10, "m" * 32, 1.5, 4)
    first, second = (raw for raw, _ in read_placed(journal.path))
    assert first["listed"] == "2026-11-23T09:58:00Z" and "listed" not in second
