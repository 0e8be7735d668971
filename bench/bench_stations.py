"""Every pass, from every station, within seconds, politely: what mirror_gina asks of GINA, what it fetches, and how
soon a listed granule reaches a worker, today's way (one listing a run, by whole days, of one station: the
original's) beside the new one (every station, listing rounds every MIRROR_POLL_SECONDS by minute bounds, asked
again with If-None-Match), measured in one run.

1. Listing bytes a day at real volume. The GINA double holds four days of passes as listed records (no files):
   three satellites a quarter orbit apart, a pass every orbit of 10-11 granules (about 150 granules a day each),
   every granule's 27 level-1 files (the 12 the queues want and 15 others), at two stations: most passes at both
   (the second station's copy 0.1 s later in start, made 3.5 minutes later), some at one only; each file listed 2
   minutes after it was made, 4-12 minutes after its granule's end. A day of mirror_gina's listing requests is
   replayed against it with the mirror's own query (gina.listing_window, gina.listing_params), on the double's own
   listing code (``listing(query, now=...)``): today's way asks gilmore once a minute by days, every answer in full
   (its client sent no ``If-None-Match``); the new way asks every station every ``--poll`` seconds by minutes; both
   list the whole backfill window at the first run and hourly. In the new way a query asked again whose answer did
   not change is a 304 when the server sends ETags (the double's: a hash of the body, as the mirror's client uses
   them), and is answered in full without them (GINA's support for ETags is unknown, so both are shown). Bytes =
   the JSON bodies plus the status line and headers of one real answer. File sizes are the double's rough real ones
   (GITCO 60 MB, GMTCO 16 MB, GDNBO 8 MB, SVDNB 4 MB, the other geolocation files 16-60 MB, bands 6-20 MB).
   Goal: the new way, with two stations, asks at most what today's way asks of one station, with and without ETags.
2. File bytes a day at real volume: mirror_gina's planner (mirror/plan.py) over that day's listing, with the default
   queues: one station's wanted files, two stations' with one copy of each granule file (the new way), and twice
   one station's (each station's copies fetched). Goal: two stations cost about one station's bytes (plus the
   passes only the second station received), not twice.
3. Listing -> task handed out, on the real suite (supervisord, cron running mirror_gina every minute, the GINA
   double at two stations, small real files, no TLEs), for ``--granules`` granules listed at random moments:
   the seconds from the moment the double lists a granule (its first station's copy) to the moment a worker like
   the deployed one receives its task, per product granule, p50 and p99; today's way (MIRROR_POLL_SECONDS=0,
   VIIRS_FACILITY=gilmore) beside the new one; passes at the second station only are counted as missed by today's
   way. Goal for the new way: p50 <= 15 s, p99 <= 30 s.

Run inside a loopback-only network namespace:
``scripts/loopback-netns .venv/bin/python bench/bench_stations.py [--poll S] [--granules N] [--skip-suite]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avoviirscollector.config import load_settings  # noqa: E402
from avoviirscollector.mirror.listing_records import parse_records  # noqa: E402
from avoviirscollector.mirror.plan import plan_jobs  # noqa: E402
from avoviirscollector.mirror.queues import load_queues  # noqa: E402
from avoviirscollector.mirror.window import listing_params, listing_window  # noqa: E402
from avoviirscollector.viirs import PRODUCTS, format_name  # noqa: E402
from tests.broker_support import DeployedWorker  # noqa: E402
from tests.e2e.chaos import read_task  # noqa: E402
from tests.e2e.harness import Suite  # noqa: E402
from tests.gina_double import COPY_DELAY, COPY_OFFSET, GinaDouble  # noqa: E402
from tests.support import percentile  # noqa: E402

SATELLITES = {"npp": ("snpp", 0.0), "j01": ("noaa20", 0.25), "j02": ("noaa21", 0.5)}  # orbit phase offsets
ORBIT = dt.timedelta(minutes=101.5)
GRANULE = dt.timedelta(seconds=85.35)
#: the 27 VIIRS level-1 files of a granule, with rough real sizes (MB)
LEVEL1 = {**{f"SVM{i:02d}": 6 for i in range(1, 17)}, **{f"SVI{i:02d}": 20 for i in range(1, 6)}, "SVDNB": 4,
          "GMODO": 16, "GMTCO": 16, "GIMGO": 60, "GITCO": 60, "GDNBO": 8}
STATIONS = ("gilmore", "uafgina")
WANTED = sorted({segment for segments in PRODUCTS.values() for segment in segments})


# -- 1 and 2: a day at real volume -----------------------------------------------------------------------------------
def list_granule(double: GinaDouble, platform: str, orbit_number: int, granule: dt.datetime, made: dt.datetime,
                 stations: tuple[str, ...]) -> int:
    """One granule's level-1 files as listed at ``stations`` (each copy a little later); the number of records."""
    count = 0
    for index, station in enumerate(stations):
        copy = granule + dt.timedelta(seconds=COPY_OFFSET * index)
        created = made + dt.timedelta(seconds=COPY_DELAY * index)
        listed = (created + dt.timedelta(minutes=2)).replace(tzinfo=dt.UTC).timestamp()
        for segment, size_mb in LEVEL1.items():
            name = format_name(segment, platform, copy, granule + GRANULE, orbit_number, created)
            double.add_listed(name, int(size_mb * 1e6), station, listed)
            count += 1
    return count


def populate(double: GinaDouble, first: dt.datetime, days: float, rng: random.Random) -> int:
    """Four days of passes as listed records (see the module docstring); the number of records."""
    count = 0
    for platform, (_sat, phase) in SATELLITES.items():
        orbit_number = {"npp": 67000, "j01": 33000, "j02": 9000}[platform]
        start = first + ORBIT * phase
        while start < first + dt.timedelta(days=days):
            at = rng.choices(["both", "gilmore", "uafgina"], weights=[70, 15, 15])[0]
            stations = STATIONS if at == "both" else (at,)
            for number in range(rng.randint(10, 11)):
                granule = (start + GRANULE * number).replace(microsecond=0)
                made = granule + GRANULE + dt.timedelta(minutes=rng.uniform(4, 12))
                count += list_granule(double, platform, orbit_number, granule, made, stations)
            start += ORBIT
            orbit_number += 1
    return count


def header_bytes(double: GinaDouble) -> int:
    """The status line and headers of one real products.json answer."""
    import requests

    before = double.bytes_served()
    requests.get(f"{double.url}/products.json", params={"start_date": "2000-01-01", "end_date": "2000-01-02"},
                 timeout=10)
    after = double.bytes_served()
    return after["listing_headers"] - before["listing_headers"]


def replay_day(double: GinaDouble, day: dt.datetime, poll: int, facilities: tuple[str, ...], etags: bool,
               headers: int) -> dict:
    """The listing requests of one day of mirror_gina runs, answered by the double: bytes and requests."""
    step = poll if poll else 60
    last_full: dict[str, dt.datetime] = {}
    seen: dict[str, str] = {}  # query -> the hash of its last answer (what an ETag says)
    total = requests_made = not_modified = 0
    t = day
    while t < day + dt.timedelta(days=1):
        for sat, _ in SATELLITES.values():
            key = (sat, "viirs", "level1", facilities, 2)
            window = listing_window(t, last_full.get(sat), 2, poll=poll > 0)
            if window.full:
                last_full[sat] = t
            query = listing_params(key, window)
            as_dict: dict[str, list[str]] = {}
            for name, value in query:
                as_dict.setdefault(name, []).append(value)
            body = json.dumps(double.listing(as_dict, now=t.timestamp())).encode()
            digest = hashlib.sha256(body).hexdigest()
            text = json.dumps(query)
            requests_made += 1
            if etags and seen.get(text) == digest:
                not_modified += 1
                total += headers
            else:
                total += headers + len(body)
            seen[text] = digest
        t += dt.timedelta(seconds=step)
    return {"bytes": total, "requests": requests_made, "not_modified": not_modified}


def fetched_bytes(double: GinaDouble, day: dt.datetime, facilities: tuple[str, ...], dedup: bool) -> int:
    """File bytes of one day's wanted files, as mirror_gina's planner picks them from the day's listing."""
    queues = load_queues(load_settings({}).mirror_gina_config, load_settings({}))
    total = 0
    for sat, _ in SATELLITES.values():
        query = {"satellites[]": [sat], "start_date": [f"{day:%Y-%m-%d %H%M}"],
                 "end_date": [f"{day + dt.timedelta(days=1) - dt.timedelta(minutes=1):%Y-%m-%d %H%M}"]}
        if facilities:
            query["facilities[]"] = list(facilities)
        items = double.listing(query, now=(day + dt.timedelta(days=2)).timestamp())
        sizes = {item["url"].rsplit("/", 1)[1]: item["size"] for item in items}
        records, _ = parse_records(items, double.url, facilities)
        mine = [q for q in queues if q.satellite == sat]
        if dedup:
            jobs = plan_jobs(records, mine, set()).jobs
            total += sum(sizes[job.name] for job in jobs)
        else:
            total += sum(sizes[r.name] for r in records if any(q.wants(r.name) for q in mine))
    return total


def real_volume(poll: int, rng: random.Random) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-stations-") as tmp, GinaDouble(Path(tmp)) as double:
        day = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
        began = time.monotonic()
        records = populate(double, (day - dt.timedelta(days=3)).replace(tzinfo=None), 4.2, rng)
        print(f"  the double holds {records:,} listed records (4 days, 2 stations) ({time.monotonic() - began:.0f} s)")
        headers = header_bytes(double)
        out = {"headers": headers}
        for label, step, stations, etags in (("today: gilmore, by days, once a minute", 0, ("gilmore",), False),
                                             (f"new: every station, by minutes, every {poll} s, with ETags", poll,
                                              (), True),
                                             (f"new: every station, by minutes, every {poll} s, no ETags", poll,
                                              (), False)):
            began = time.monotonic()
            out[label] = replay_day(double, day, step, stations, etags, headers)
            print(f"  replayed {label} ({time.monotonic() - began:.0f} s)")
        one = fetched_bytes(double, day, ("gilmore",), dedup=True)
        out["files"] = {"one station (gilmore)": one,
                        "two stations, one copy each (new)": fetched_bytes(double, day, (), dedup=True),
                        "two stations, each station's copies": fetched_bytes(double, day, (), dedup=False),
                        "twice one station": 2 * one}
        return out


# -- 3: listing -> task on the real suite ----------------------------------------------------------------------------
def list_new_granules(double: GinaDouble, granules: int, rng: random.Random) -> dict[dt.datetime, float]:
    """``granules`` new npp granules listed 8 to 25 s apart, at one station or both (the second 30 to 200 s later);
    {granule start: when it was first listed}."""
    listed: dict[dt.datetime, float] = {}
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
    for index in range(granules):
        start = now - dt.timedelta(minutes=40) + GRANULE * index
        at = rng.choices(["both", "gilmore", "uafgina"], weights=[70, 15, 15])[0]
        stations = STATIONS if at == "both" else (at,)
        second = time.time() + rng.uniform(30, 200)
        listed[start] = time.time()
        double.add_granule_at_stations("npp", 80000 + index // 10, start, stations=stations,
                                       segments=WANTED, scale=0.004,
                                       listed_at=[None, second][:len(stations)])
        time.sleep(rng.uniform(8, 25))
    return listed


def handed_out_after(worker: DeployedWorker, listed: dict[dt.datetime, float], deadline: float) -> dict[tuple, float]:
    """{(product, granule start): seconds from first listing to the worker's task} until every product granule of
    ``listed`` is handed out or the monotonic ``deadline``."""
    waits: dict[tuple, float] = {}
    while time.monotonic() < deadline and len(waits) < len(listed) * len(PRODUCTS):
        for raw, when in zip(list(worker.received), list(worker.received_at), strict=False):
            for key in read_task(raw).granules:
                first = min((s for s in listed if abs((s - key[2]).total_seconds()) < 1), default=None)
                if first is not None:
                    waits.setdefault((key[0], first), when - listed[first])
        time.sleep(0.5)
    return waits


def latencies(tmp: Path, env: dict[str, str], granules: int, rng: random.Random) -> tuple[list[float], int, int]:
    """(seconds from first listing to hand-out per product granule, granules never handed out, granules listed)."""
    with GinaDouble(tmp / "gina") as double:
        suite = Suite(tmp, extra_env={"GINA_URL": double.url, **env})
        listed: dict[dt.datetime, float] = {}
        try:
            suite.start()
            suite.wait_flowing()
            worker = DeployedWorker(suite.settings.task_port, suite.settings.update_port, list(PRODUCTS),
                                    hang_after=120)
            worker.start()
            time.sleep(rng.uniform(0, 60))  # start anywhere in a cron minute
            listed = list_new_granules(double, granules, rng)
            waits = handed_out_after(worker, listed, time.monotonic() + 120)
            worker.stopping.set()
            worker.join(5)
        finally:
            suite.stop()
    handed = {start for _, start in waits}
    return sorted(waits.values()), len(set(listed) - handed), len(listed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--poll", type=int, default=15, help="MIRROR_POLL_SECONDS of the new way (%(default)s)")
    parser.add_argument("--granules", type=int, default=24, help="granules listed per way in part 3 (%(default)s)")
    parser.add_argument("--skip-suite", action="store_true", help="parts 1 and 2 only")
    parser.add_argument("--skip-volume", action="store_true", help="part 3 only")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    goals = []
    if not args.skip_volume:
        goals += volume_part(args.poll, rng)
    if not args.skip_suite:
        goals += suite_part(args.poll, args.granules, rng)
    print("\ngoals: " + "; ".join(f"{name}: {'met' if ok else 'NOT met'}" for name, ok in goals))
    return 0


def volume_part(poll: int, rng: random.Random) -> list[tuple[str, bool]]:
    print("1-2. a day at real volume")
    volume = real_volume(poll, rng)
    today = volume["today: gilmore, by days, once a minute"]["bytes"]
    print(f"\n{'listing requests of a day':60s} {'requests':>9s} {'304':>6s} {'MB/day':>9s} {'vs today':>9s}")
    for label, figures in volume.items():
        if isinstance(figures, dict) and "bytes" in figures:
            print(f"{label:60s} {figures['requests']:9d} {figures['not_modified']:6d} {figures['bytes'] / 1e6:9.1f} "
                  f"{figures['bytes'] / today:9.3f}")
    files = volume["files"]
    one = files["one station (gilmore)"]
    print(f"\n{'file bytes of a day':60s} {'GB/day':>9s} {'vs one':>9s}")
    for label, size in files.items():
        print(f"{label:60s} {size / 1e9:9.1f} {size / one:9.3f}")
    new_worst = max(figures["bytes"] for label, figures in volume.items()
                    if isinstance(figures, dict) and label.startswith("new"))
    return [("listing bytes, two stations, new <= today's of one", new_worst <= today)]


def suite_part(poll: int, granules: int, rng: random.Random) -> list[tuple[str, bool]]:
    print("\n3. listing -> task handed out, real suite")
    ways = (("today: MIRROR_POLL_SECONDS=0, VIIRS_FACILITY=gilmore",
             {"MIRROR_POLL_SECONDS": "0", "VIIRS_FACILITY": "gilmore"}),
            (f"new: MIRROR_POLL_SECONDS={poll}, VIIRS_FACILITY=all", {"MIRROR_POLL_SECONDS": str(poll)}))
    rows = []
    for label, env in ways:
        with tempfile.TemporaryDirectory(prefix="bench-stations-suite-") as tmp:
            waits, missed, listed = latencies(Path(tmp), env, granules, rng)
        rows.append((label, waits, missed, listed))
        print(f"  {label}: {len(waits)} product granules handed out, {missed} of {listed} granules never")
    print(f"\n{'listing -> task handed out':55s} {'n':>4s} {'p50 s':>7s} {'p99 s':>7s} {'max s':>7s} "
          f"{'granules missed':>16s}")
    for label, waits, missed, listed in rows:
        p50, p99 = percentile(waits, 50), percentile(waits, 99)
        print(f"{label:55s} {len(waits):4d} {p50 or 0:7.1f} {p99 or 0:7.1f} {max(waits or [0]):7.1f} "
              f"{missed:>9d} of {listed}")
    new = rows[-1][1]
    return [("new way p50 <= 15 s", bool(new) and percentile(new, 50) <= 15),
            ("new way p99 <= 30 s", bool(new) and percentile(new, 99) <= 30),
            ("new way misses no granule", rows[-1][2] == 0)]


if __name__ == "__main__":
    raise SystemExit(main())
