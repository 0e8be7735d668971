"""Granules as files (granules.py): keys, splitting a gatherer's dataset, one file per segment, the sdr/ inventory."""

from __future__ import annotations

import datetime as dt

from avoviirscollector.granules import GranuleKey, GranuleMap, Inventory, Starts, keys_of, merge_files, split_dataset
from avoviirscollector.viirs import PRODUCTS, format_name

T0 = dt.datetime(2026, 3, 1, 12, 0, 3, 300000)


def name(segment: str, platform: str = "npp", start: dt.datetime = T0, orbit: int = 70000, minutes: int = 9,
         source: str = "cspp_dev") -> str:
    return format_name(segment, platform, start, start + dt.timedelta(seconds=85.4), orbit,
                       start + dt.timedelta(minutes=minutes), source)


def item(file_name: str) -> dict:
    return {"uri": f"/viirs/sdr/{file_name}", "uid": file_name}


def test_a_dataset_of_one_granule_is_one_complete_granule_with_its_own_data():
    data = {"platform_name": "Suomi-NPP", "orbit_number": 70000, "start_time": T0, "end_time": T0, "extra": 1,
            "dataset": [item(name(s)) for s in PRODUCTS["btd"]]}
    split = split_dataset("btd", data)
    assert split.incomplete == [] and split.foreign == 0 and len(split.complete) == 1
    granule = split.complete[0]
    assert granule["extra"] == 1 and granule["platform_name"] == "Suomi-NPP" and granule["orbit_number"] == 70000
    assert granule["start_time"] == T0.replace(tzinfo=dt.UTC)
    assert [entry["uid"] for entry in granule["dataset"]] == [name(s) for s in PRODUCTS["btd"]]


def test_a_slot_that_mixed_platforms_gives_only_whole_granules_each_with_its_platform():
    # segment_gatherer keys slots by start time alone: two satellites with one start time can share a slot
    files = [name("GITCO", "npp", orbit=70000), name("SVI05", "j01", orbit=30000), name("SVI05", "npp", orbit=70000),
             name("GITCO", "j02", orbit=10000)]
    split = split_dataset("tir", {"platform_name": "NOAA-20", "orbit_number": 30000, "dataset": map(item, files)})
    assert len(split.complete) == 1
    only = split.complete[0]
    assert only["platform_name"] == "Suomi-NPP" and only["orbit_number"] == 70000
    assert {entry["uid"][6:9] for entry in only["dataset"]} == {"npp"}
    assert sorted(split.incomplete) == [GranuleKey("tir", "NOAA-20", T0), GranuleKey("tir", "NOAA-21", T0)]


def test_foreign_entries_are_counted_not_taken():
    split = split_dataset("dnb", {"dataset": [item("leapsec.dat"), item(name("GDNBO")), item(name("SVDNB"))]})
    assert split.foreign == 1 and len(split.complete) == 1


def test_a_reissued_file_replaces_the_older_copy_of_its_segment():
    old = [item(name(s)) for s in PRODUCTS["btd"]]
    reissue = item(name("SVM15", minutes=30, source="noaa_ops"))
    merged = merge_files("btd", old, [reissue, item(name("SVM15", minutes=1))])
    assert [entry["uid"] for entry in merged] == [old[0]["uid"], reissue["uid"], old[2]["uid"]]
    assert keys_of("btd", merged) == {GranuleKey("btd", "Suomi-NPP", T0)}


def test_inventory_finds_complete_granules_with_the_time_they_became_complete():
    placed = {}
    for second, segment in enumerate(["GMTCO", "SVM15", "GITCO", "SVI05", "SVM16"]):
        placed[name(segment)] = 1000.0 + second
    placed[name("SVM16", minutes=20)] = 2000.0  # a second copy later: completes nothing new
    placed[name("GITCO", platform="j01")] = 1500.0  # another satellite, same start: not complete
    placed["leapsec.dat"] = 1.0
    inventory = Inventory()
    inventory.begin_pass()
    for file_name, when in placed.items():
        inventory.seen(file_name, when)
    inventory.end_pass(complete=True)
    assert "leapsec.dat" not in inventory and len(inventory) == 7
    found = {item.key.product: item for item in inventory.complete()}
    assert set(found) == {"btd", "tir"}
    assert found["btd"].complete_at == 1004.0 and found["btd"].first_at == 1000.0
    assert found["tir"].complete_at == 1003.0
    assert [f.name for f in found["btd"].files][2] == name("SVM16", minutes=20)  # newest copy handed out
    assert [item.key.product for item in inventory.complete(since=1003.5)] == ["btd"]
    inventory.seen(name("GMTCO"), 5000.0)  # seen again (a touch, a second event): keeps its first placement
    assert {item.key.product: item.complete_at for item in inventory.complete()}["btd"] == 1004.0
    inventory.gone(name("GMTCO"))
    assert {item.key.product for item in inventory.complete()} == {"tir"}


def test_a_complete_pass_forgets_what_it_did_not_see_and_an_interrupted_one_does_not():
    inventory = Inventory()
    for segment in PRODUCTS["dnb"]:
        inventory.seen(name(segment), 1000.0)
    inventory.begin_pass()
    inventory.seen(name("GDNBO"), 1000.0)
    inventory.end_pass(complete=False)
    assert len(inventory) == 2
    inventory.begin_pass()
    inventory.seen(name("GDNBO"), 1000.0)
    inventory.end_pass(complete=True)
    assert name("SVDNB") not in inventory and name("GDNBO") in inventory


def test_inventory_keeps_the_recent_window_and_the_listing_window_only():
    """What is kept follows the windows, not the archive: placed within the window, or of a granule that started
    within the listing window (a late file can still complete it); the rest is dismissed, unparsed, and forgotten
    when the windows move on."""
    old_start = T0 - dt.timedelta(days=40)
    inventory = Inventory(placed_since=5000.0, start_since=T0 - dt.timedelta(days=3))
    inventory.seen(name("GITCO", start=old_start), 100.0)  # an old granule placed long ago: not kept
    inventory.seen(name("SVI05", start=old_start), 6000.0)  # an old granule placed within the window: kept
    inventory.seen(name("GITCO"), 100.0)  # placed long ago, but of a recent granule: kept
    inventory.seen(name("SVI05"), 6000.0)
    inventory.seen("SVI05_npp_d2026xxxx_t1200033_e1201277_b70000_c20260301120903300000_cspp_dev.h5", 6000.0)
    assert len(inventory) == 3 and name("GITCO", start=old_start) not in inventory
    assert [item.key for item in inventory.complete(since=5000.0)] == [GranuleKey("tir", "Suomi-NPP", T0)]
    assert inventory.bounds(placed_since=7000.0, start_since=T0 + dt.timedelta(seconds=1)) == 3
    assert len(inventory) == 0


# -- two receiving stations: one granule's copies start about 0.1 s apart ----------------------------------------------
def test_starts_within_the_tolerance_are_one_granule_and_consecutive_granules_are_not():
    starts = Starts()
    first = T0.replace(second=36, microsecond=900000)
    assert starts.canonical(("npp",), first) == first
    assert starts.canonical(("npp",), first + dt.timedelta(seconds=0.2)) == first  # across a whole second
    assert starts.canonical(("npp",), first - dt.timedelta(seconds=0.1)) == first
    assert starts.canonical(("j01",), first) == first and starts.find(("j02",), first) is None
    later = first + dt.timedelta(seconds=85.35)
    assert starts.canonical(("npp",), later) == later
    starts.forget(("npp",), first)
    assert starts.find(("npp",), first + dt.timedelta(seconds=0.1)) is None


def test_a_granule_map_matches_keys_within_the_tolerance():
    key = GranuleKey("tir", "Suomi-NPP", T0)
    other_station = GranuleKey("tir", "Suomi-NPP", T0 + dt.timedelta(seconds=0.1))
    held = GranuleMap([(key, 1)])
    assert other_station in held and held[other_station] == 1 and held.held(other_station) == key
    assert GranuleKey("mir", "Suomi-NPP", T0) not in held
    assert GranuleKey("tir", "Suomi-NPP", T0 + dt.timedelta(seconds=85.35)) not in held
    held[other_station] = 2
    assert list(held.items()) == [(key, 2)]
    del held[other_station]
    assert not held and key not in held


def test_a_granule_whose_files_came_from_two_stations_is_one_granule_with_one_file_per_segment():
    second = T0 + dt.timedelta(seconds=0.1)
    gilmore = [name(s, minutes=9) for s in PRODUCTS["vis"][:3]]
    uafgina = [name(s, start=second, minutes=12) for s in PRODUCTS["vis"][3:]]
    copy = name(PRODUCTS["vis"][0], start=second, minutes=12)  # the other station's copy of a segment held
    data = {"platform_name": "Suomi-NPP", "dataset": [item(n) for n in gilmore + uafgina + [copy]]}
    split = split_dataset("vis", data)
    assert split.incomplete == [] and len(split.complete) == 1
    files = [entry["uid"] for entry in split.complete[0]["dataset"]]
    assert len(files) == len(PRODUCTS["vis"]) and len({f.split("_", 1)[0] for f in files}) == len(files)
    assert keys_of("vis", data["dataset"]) == {GranuleKey("vis", "Suomi-NPP", T0)}
    merged = merge_files("vis", [item(n) for n in gilmore], [item(n) for n in uafgina] + [item(copy)])
    assert len(merged) == len(PRODUCTS["vis"])  # the copy takes its segment's place, it does not add a file
    inventory = Inventory()
    for file_name in gilmore + uafgina:
        inventory.seen(file_name, 1000.0)
    assert [found.key for found in inventory.complete()] == [GranuleKey("vis", "Suomi-NPP", T0)]
