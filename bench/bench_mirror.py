"""Benchmark: mirror_gina against aria2c on one scaled-down pass served by the GINA double.

The pass: GRANULES granules of one orbit, per granule a GITCO of 60 MB, a GMTCO of 16 MB, SVM03/04/05/15/16 of
4 MB and SVI01/04/05 of 10 MB (real HDF5 files). The double runs as its own process with a per-connection cap
(CAP, default 4 MB/s) and a second one uncapped. Measured in the same run, ours (4 connections, the queues
snpp-moderate and snpp-imagery) beside ``aria2c -x4 -s4 -k1M -j1`` over the listing in the double's own order
(name order) followed by ``md5sum`` of what it fetched:

- total time for the pass against the cap-sum floor (bytes / (4 x CAP));
- time until the first complete product granule is in place (btd of the newest granule: GMTCO, SVM15, SVM16);
- CPU seconds per GB (ours: md5 included; aria2c: aria2c plus md5sum);
- our peak RSS fetching one 300 MB file;
- uncapped throughput;
- one run's delay from a new file in the listing to its placement in sdr/ (cron adds 0-60 s before the run).

Run: ``scripts/loopback-netns .venv/bin/python bench/bench_mirror.py`` (or ``make bench``). Needs aria2c
(``apt-get install -y aria2``) for the comparison; without it only our figures are printed, and it says so.
Environment: BENCH_GRANULES (3), BENCH_CAP_MBPS (4), BENCH_BIG_MB (300), BENCH_DIR (a temp dir),
BENCH_ONLY=listing (only the listing cost per day, before and after listing the whole window only hourly),
BENCH_SHAPES (equal,big,forty,stall), BENCH_RUNS (3).

Shapes (issue 9, item 8), each against aria2c in the same run, median of BENCH_RUNS runs: four equal 32 MiB files,
one 300 MB file, forty 12 MB files, and the pass above with one response stalling (2 kB/s).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from avoviirscollector.viirs import PRODUCTS, format_name, parse_name  # noqa: E402
from tests.gina_double import GRANULE_SECONDS, make_sdr_file  # noqa: E402

MB = 1_000_000
SIZES = {"GITCO": 60 * MB, "GMTCO": 16 * MB, "SVM03": 4 * MB, "SVM04": 4 * MB, "SVM05": 4 * MB, "SVM15": 4 * MB,
         "SVM16": 4 * MB, "SVI01": 10 * MB, "SVI04": 10 * MB, "SVI05": 10 * MB}
GRANULES = int(os.environ.get("BENCH_GRANULES", "3"))
CAP = float(os.environ.get("BENCH_CAP_MBPS", "4")) * MB
BIG = int(os.environ.get("BENCH_BIG_MB", "300")) * MB
CONNECTIONS = 4
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_pass(files: Path) -> list[str]:
    start0 = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0) - dt.timedelta(hours=1)
    names = []
    for g in range(GRANULES):
        start = start0 + dt.timedelta(seconds=GRANULE_SECONDS * g)
        end = start + dt.timedelta(seconds=GRANULE_SECONDS)
        for seg, size in SIZES.items():
            name = format_name(seg, "npp", start, end, 71000, start + dt.timedelta(minutes=10))
            make_sdr_file(files / name, seg, size, seed=len(names))
            names.append(name)
    big = format_name("GITCO", "j01", start0, start0 + dt.timedelta(seconds=GRANULE_SECONDS), 30000, start0)
    make_sdr_file(files / big, "GITCO", BIG, seed=999)
    return names + [big]


class Double:
    def __init__(self, root: Path, rate: float | None, extra: list[str] | None = None) -> None:
        self.port = free_port()
        args = [sys.executable, "-m", "tests.gina_double", "--port", str(self.port), "--dir", str(root),
                "--granules", "0"]
        if rate:
            args += ["--rate", str(rate)]
        args += extra or []
        self.proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                requests.get(self.url + "/products.json", timeout=1)
                return
            except (requests.ConnectionError, requests.Timeout):
                time.sleep(0.1)
        raise RuntimeError("the GINA double did not start")

    def listing(self, satellite: str) -> list[dict]:
        today = dt.datetime.now(dt.UTC).date()
        params = {"start_date": str(today - dt.timedelta(days=1)), "end_date": str(today + dt.timedelta(days=1)),
                  "satellites[]": satellite}
        return requests.get(self.url + "/products.json", params=params, timeout=10).json()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Appearances:
    """Polls a directory every 5 ms and notes when each wanted file is complete."""

    def __init__(self, directory: Path, done_when) -> None:
        self.directory = directory
        self.done_when = done_when
        self.times: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self, t0: float) -> None:
        self.t0 = t0
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                for name in os.listdir(self.directory):
                    if name not in self.times and self.done_when(name):
                        self.times[name] = time.monotonic() - self.t0
            except FileNotFoundError:
                pass
            self._stop.wait(0.005)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _vm_hwm_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_child(args: list[str], env: dict | None = None, cwd: Path | None = None) -> tuple[float, float, int, int]:
    """Run a command; returns (wall s, cpu s, peak RSS kB, exit status).

    The peak RSS is the child's own VmHWM, sampled every 5 ms: ``ru_maxrss`` would include the pages of this
    (bigger) process that the child had before its exec.
    """
    t0 = time.monotonic()
    proc = subprocess.Popen(args, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _vm_hwm_kb(proc.pid))
            done.wait(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, usage = os.wait4(proc.pid, 0)
    done.set()
    sampler.join()
    wall = time.monotonic() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if proc.returncode:
        print(f"   ! {Path(args[0]).name} exited {proc.returncode}: {err.strip()[-300:]}")
    return wall, usage.ru_utime + usage.ru_stime, peak[0], proc.returncode


def first_granule_time(times: dict[str, float], names: list[str], product: str = "btd") -> float | None:
    """When every file of ``product`` for the newest granule was complete."""
    newest = max(parse_name(n).start_time for n in names if parse_name(n).platform == "npp")
    wanted = [n for n in names if parse_name(n).start_time == newest and parse_name(n).segment in PRODUCTS[product]]
    if not all(n in times for n in wanted):
        return None
    return max(times[n] for n in wanted)


def ours(double: Double, base: Path, queues: list[str], watch_names: list[str] | None = None):
    shutil.rmtree(base, ignore_errors=True)
    (base / "sdr").mkdir(parents=True)
    env = dict(os.environ, VIIRS_BASE=str(base), GINA_URL=double.url, NUM_GINA_CONNECTIONS=str(CONNECTIONS))
    args = [str(BIN / "mirror_gina"), "--once"]
    for queue in queues:
        args += ["--queue", queue]
    watch = Appearances(base / "sdr", lambda name: True)
    watch.start(time.monotonic())
    wall, cpu, rss, status = run_child(args, env)
    watch.stop()
    return wall, cpu, rss, status, watch.times


def aria2(double: Double, workdir: Path, listing: list[dict], label: str, quiet: bool = False):
    shutil.rmtree(workdir, ignore_errors=True)
    (workdir / "out").mkdir(parents=True)
    lines = []
    for record in listing:
        lines += [record["url"], f"  out={record['url'].rsplit('/', 1)[1]}"]
    (workdir / "input.txt").write_text("\n".join(lines) + "\n")
    hook = workdir / "done.sh"
    hook.write_text(f'#!/bin/sh\necho "$(date +%s.%N) $3" >> {workdir}/done.log\n')
    hook.chmod(0o755)
    t_start = time.time()
    wall, cpu, rss, status = run_child(
        ["aria2c", "-x4", "-s4", "-k1M", "-j1", "--file-allocation=none", "--console-log-level=warn",
         "--summary-interval=0", "--show-console-readout=false", "--auto-file-renaming=false",
         f"--on-download-complete={hook}", "-d", str(workdir / "out"), "-i", str(workdir / "input.txt")])
    time.sleep(0.3)  # the last hooks run asynchronously
    times = {}
    for line in (workdir / "done.log").read_text().splitlines():
        stamp, path = line.split(" ", 1)
        times[Path(path).name] = float(stamp) - t_start
    files = sorted(str(p) for p in (workdir / "out").iterdir() if p.suffix == ".h5")
    md5_wall, md5_cpu, _, _ = run_child(["md5sum", *files])
    sums = {}
    out = subprocess.run(["md5sum", *files], capture_output=True, text=True).stdout
    for line in out.splitlines():
        digest, path = line.split(None, 1)
        sums[Path(path).name] = digest
    bad = [r for r in listing if sums.get(r["url"].rsplit("/", 1)[1]) != r["md5sum"]]
    if bad:
        print(f"   ! aria2c: {len(bad)} files with a wrong md5")
    if not quiet:
        print(f"   {label}: aria2c alone {wall:.2f} s, then md5sum of its files {md5_wall:.2f} s (both count in its "
              f"total)")
    return wall + md5_wall, cpu + md5_cpu, rss, status, times


MiB = 1 << 20
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
STALL_RATE = 2000  # bytes/s of the one stalling response: nearly nothing, yet above curl's 1 kB/s stall floor


def make_shape(shape: str, files: Path, pass_files: Path) -> tuple[str, str]:
    """The files of one shape in ``files``; returns (satellite listed, our queue)."""
    files.mkdir(parents=True, exist_ok=True)
    t0 = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0) - dt.timedelta(hours=2)
    if shape == "equal":  # four equal files of 32 MiB
        for g in range(4):
            start = t0 + dt.timedelta(seconds=GRANULE_SECONDS * g)
            name = format_name("GITCO", "npp", start, start + dt.timedelta(seconds=85), 71500, start)
            make_sdr_file(files / name, "GITCO", 32 * MiB, seed=100 + g)
        return "snpp", "snpp-imagery"
    if shape == "big":  # one 300 MB file (the one the RSS is measured on)
        for path in pass_files.glob("GITCO_j01_*.h5"):
            os.link(path, files / path.name)
        return "noaa20", "noaa20-imagery"
    if shape == "forty":  # forty files of 12 MB
        for g in range(10):
            start = t0 + dt.timedelta(seconds=GRANULE_SECONDS * g)
            for k, seg in enumerate(("GITCO", "SVI01", "SVI04", "SVI05")):
                name = format_name(seg, "npp", start, start + dt.timedelta(seconds=85), 71600, start)
                make_sdr_file(files / name, seg, 12 * MB, seed=200 + 4 * g + k)
        return "snpp", "snpp-imagery"
    if shape == "stall":  # the pass above, one response of it trickling at STALL_RATE
        for path in pass_files.glob("*_npp_*.h5"):
            os.link(path, files / path.name)
        return "snpp", "snpp-moderate,snpp-imagery"
    raise ValueError(shape)


def shape_run(tool: str, shape: str, root: Path, work: Path, satellite: str, queues: str, extra: list[str]) -> float:
    """One run of ``tool`` ("ours" or "aria2c") on the shape in ``root`` against a capped double; its wall time."""
    double = Double(root, CAP, extra)  # a fresh one per run: the stall fault is for one response
    try:
        if tool == "ours":
            wall, _cpu, _rss, status, placed = ours(double, work / "ours", queues.split(","))
            if status != 0 or len(placed) != len(list((root / "files").glob("*.h5"))):
                print(f"   ! {shape}: ours placed {len(placed)} files, exit {status}")
        else:
            wall, *_ = aria2(double, work / "aria2", double.listing(satellite), shape, quiet=True)
    finally:
        double.stop()
    return wall


def run_shapes(work: Path, shapes: list[str], have_aria2: bool) -> list[dict]:
    """Each shape against the capped double, ours and aria2c alternately, RUNS times; medians."""
    import statistics

    rows = []
    for shape in shapes:
        root = work / f"shape-{shape}"
        satellite, queues = make_shape(shape, root / "files", work / "gina" / "files")
        size = sum(p.stat().st_size for p in (root / "files").glob("*.h5"))
        floor = size / (CONNECTIONS * CAP)
        extra = ["--fault", "slow_body:1", "--slow-rate", str(STALL_RATE)] if shape == "stall" else []
        times: dict[str, list[float]] = {"ours": [], "aria2c": []}
        for _ in range(RUNS):
            for tool in ("ours", "aria2c") if have_aria2 else ("ours",):
                times[tool].append(shape_run(tool, shape, root, work, satellite, queues, extra))
        row = {"shape": shape, "files": len(list((root / "files").glob("*.h5"))), "mb": size / MB, "floor": floor,
               "ours": statistics.median(times["ours"]), "ours_runs": times["ours"]}
        if times["aria2c"]:
            row.update(aria2c=statistics.median(times["aria2c"]), aria2c_runs=times["aria2c"])
        rows.append(row)
        print(f"   {shape}: ours {', '.join(f'{t:.2f}' for t in times['ours'])} s; aria2c "
              f"{', '.join(f'{t:.2f}' for t in times['aria2c']) or '-'} s", flush=True)
        shutil.rmtree(root, ignore_errors=True)
    return rows


def print_shapes(rows: list[dict]) -> None:
    print(f"== shapes: {CONNECTIONS} connections capped at {CAP / MB:g} MB/s each, median of {RUNS} runs; aria2c -x4 "
          f"-s4 -k1M -j1 + md5sum as the reference")
    print(f"{'shape':8}{'files':>6}{'MB':>7}{'floor s':>9}{'ours s':>9}{'aria2c s':>10}{'ours/cap':>10}"
          f"{'aria2c/cap':>12}{'ours/aria2c':>13}   goal (>= 0.97 of cap, <= 1.02x aria2c)")
    for r in rows:
        a = r.get("aria2c")
        ok = r["floor"] / r["ours"] >= 0.97 and (a is None or r["ours"] <= 1.02 * a)
        a_time = f"{a:.2f}" if a else "-"
        a_cap = f"{r['floor'] / a:.3f}" if a else "-"
        versus = f"{r['ours'] / a:.3f}x" if a else "-"
        print(f"{r['shape']:8}{r['files']:>6}{r['mb']:>7.0f}{r['floor']:>9.2f}{r['ours']:>9.2f}{a_time:>10}"
              f"{r['floor'] / r['ours']:>10.3f}{a_cap:>12}{versus:>13}   {'met' if ok else 'NOT met'}")


LISTED_PER_DAY = 2700  # files a day per satellite in the listing (about 100 granules x 27 level-1 VIIRS files)
SATELLITES = 3


def listing_cost(backfill_days: int = 2) -> dict:
    """Listing bytes and parse CPU per day at GINA's volume, every minute's run before (the whole backfill window
    every time) and after (the window at start and hourly, today only between, plus yesterday before 03:00 UTC).

    Records are the GINA double's (url, md5sum, satellite, sensor, processing_level, size) for real file names;
    the files listed for a day grow through it (a file is listed once its granule is processed). Bytes are the
    JSON bodies; CPU is measured here, parsing a real body with mirror_gina's own code (json + parse_records)."""
    from avoviirscollector.mirror.listing_records import parse_records
    from avoviirscollector.mirror.window import listing_window

    day0 = dt.datetime(2026, 11, 27)
    segs = ["GITCO", "GMTCO", "GDNBO", "GIMGO", "GMODO", "SVDNB"] + [f"SVI0{i}" for i in range(1, 6)] + \
        [f"SVM{i:02d}" for i in range(1, 17)]
    records = []
    for g in range(100):
        start = day0 + dt.timedelta(seconds=GRANULE_SECONDS * g * 5)
        for seg in segs:
            name = format_name(seg, "npp", start, start + dt.timedelta(seconds=85), 71000, start)
            records.append({"url": f"http://nrt-status.gina.alaska.edu/products/{name}", "md5sum": "0" * 32,
                            "satellite": "snpp", "sensor": "viirs", "processing_level": "level1",
                            "size": 12_345_678})
    body = json.dumps(records[:LISTED_PER_DAY]).encode()
    per_record = len(body) / LISTED_PER_DAY
    t0 = time.process_time()
    for _ in range(5):
        parse_records(json.loads(body), "http://nrt-status.gina.alaska.edu")
    cpu_per_record = (time.process_time() - t0) / 5 / LISTED_PER_DAY

    def day_records(days: int | None, minute: int) -> float:
        today = LISTED_PER_DAY * minute / 1440
        window = backfill_days if days is None else min(days, backfill_days)
        return today + LISTED_PER_DAY * max(0, window - 1)

    before = after = 0.0
    last_full = None
    for minute in range(1440):
        now = day0.replace(tzinfo=dt.UTC) + dt.timedelta(minutes=minute)
        before += day_records(None, minute)
        window = listing_window(now, last_full, backfill_days, poll=False)  # the by-days listings of this figure
        days = None if window.full else (window.end - window.start).days
        if days is None:
            last_full = now
        after += day_records(days, minute)
    out = {}
    for label, count in (("before", before), ("after", after)):
        out[label] = {"records": count * SATELLITES, "bytes": count * SATELLITES * per_record,
                      "cpu_s": count * SATELLITES * cpu_per_record}
    return out


def print_listing_cost() -> None:
    cost = listing_cost()
    b, a = cost["before"], cost["after"]
    print(f"== listing cost per day, {SATELLITES} satellites x {LISTED_PER_DAY} files/day, backfill 2 days, a run "
          f"every minute")
    print(f"{'':30}{'before':>14}{'after':>14}{'after/before':>14}")
    print(f"{'records listed':30}{b['records']:>14,.0f}{a['records']:>14,.0f}{a['records'] / b['records']:>14.3f}")
    print(f"{'bytes listed (MB)':30}{b['bytes'] / MB:>14,.0f}{a['bytes'] / MB:>14,.0f}{a['bytes'] / b['bytes']:>14.3f}")
    print(f"{'CPU parsing listings (s)':30}{b['cpu_s']:>14,.1f}{a['cpu_s']:>14,.1f}{a['cpu_s'] / b['cpu_s']:>14.3f}")


def capped_runs(capped: Double, work: Path, queues: list[str], listing: list[dict], pass_names: list[str],
                pass_bytes: int, have_aria2: bool) -> dict[str, dict]:
    """The pass against the capped double: ours, then aria2c over ``listing``; total time, first granule, CPU."""
    results = {}
    wall, cpu, _rss, status, times = ours(capped, work / "ours", queues)
    results["ours"] = dict(total=wall, first=first_granule_time(times, pass_names),
                           cpu_gb=cpu / (pass_bytes / 1e9), ok=status == 0 and len(times) == len(pass_names))
    if have_aria2:
        wall, cpu, _rss, status, times = aria2(capped, work / "aria2", listing, "capped")
        results["aria2c"] = dict(total=wall, first=first_granule_time(times, pass_names),
                                 cpu_gb=cpu / (pass_bytes / 1e9), ok=status == 0)
    return results


def uncapped_runs(uncapped: Double, work: Path, queues: list[str], pass_bytes: int, have_aria2: bool,
                  results: dict[str, dict]) -> None:
    """The pass against the uncapped double (ours, then aria2c): throughput into ``results``; then our peak RSS
    fetching the one big file."""
    wall, *_ = ours(uncapped, work / "ours", queues)
    results["ours"]["uncapped"] = pass_bytes / MB / wall
    if have_aria2:
        wall, *_ = aria2(uncapped, work / "aria2", uncapped.listing("snpp"), "uncapped")
        results["aria2c"]["uncapped"] = pass_bytes / MB / wall

    _wall, _cpu, rss, status, _ = ours(uncapped, work / "ours", ["noaa20-imagery"])
    results["ours"]["rss_mb"] = rss / 1024


def one_new_file(capped: Double, work: Path, pass_names: list[str]) -> tuple[float | None, str]:
    """One run that finds one new file (the newest granule's SVM16; the rest of the pass already in sdr/): from the
    start of the run (listing included) to the file in sdr/; returns (seconds or None: never, its segment)."""
    newest_start = max(parse_name(n).start_time for n in pass_names)
    newest = next(n for n in pass_names if parse_name(n).start_time == newest_start and n.startswith("SVM16"))
    base = work / "ours"
    shutil.rmtree(base, ignore_errors=True)
    (base / "sdr").mkdir(parents=True)
    for name in pass_names:
        if name != newest:
            os.link(work / "gina" / "files" / name, base / "sdr" / name)
    env = dict(os.environ, VIIRS_BASE=str(base), GINA_URL=capped.url)
    watch = Appearances(base / "sdr", lambda n: n == newest)
    start = time.monotonic()
    watch.start(start)
    run_child([str(BIN / "mirror_gina"), "--once", "--queue", "snpp-moderate"], env)
    watch.stop()
    return watch.times.get(newest), newest.split("_")[0]


def measure_pass(work: Path, pass_names: list[str], pass_bytes: int, have_aria2: bool) -> tuple[dict, float]:
    """Everything measured on the pass, ours and aria2c's; returns (results, the cap-sum floor in s)."""
    capped = Double(work / "gina", CAP)
    uncapped = Double(work / "gina", None)
    queues = ["snpp-moderate", "snpp-imagery"]
    try:
        floor = pass_bytes / (CONNECTIONS * CAP)
        listing = capped.listing("snpp")
        assert len(listing) == len(pass_names), (len(listing), len(pass_names))
        results = capped_runs(capped, work, queues, listing, pass_names, pass_bytes, have_aria2)
        uncapped_runs(uncapped, work, queues, pass_bytes, have_aria2, results)
        results["ours"]["one_file"], results["ours"]["one_file_name"] = one_new_file(capped, work, pass_names)
    finally:
        capped.stop()
        uncapped.stop()
    return results, floor


def ratio(x, y):
    return f"{x / y:.2f}x" if x and y else "n/a"


def report(results: dict, floor: float, pass_names: list[str], pass_bytes: int, rows: list[dict]) -> None:
    """The pass's table (ours beside aria2c, the ratios and goals), the shapes' table and everything as JSON."""
    o, a = results["ours"], results.get("aria2c")
    print(f"   pass: {len(pass_names)} files, {pass_bytes / MB:.0f} MB; cap-sum floor {floor:.2f} s")
    print(f"{'':34}{'ours':>12}{'aria2c':>12}   ratio ours/aria2c   goal")
    fmt = "{:34}{:>12}{:>12}   {:<19} {}"
    print(fmt.format("total time for the pass (s)", f"{o['total']:.2f}", f"{a['total']:.2f}" if a else "-",
                     ratio(o["total"], a and a["total"]), "<= 1.00x, floor/ours >= 0.97"))
    print(fmt.format("  floor / total", f"{floor / o['total']:.3f}", f"{floor / a['total']:.3f}" if a else "-", "", ""))
    print(fmt.format("first complete btd granule (s)", f"{o['first']:.2f}" if o["first"] else "never",
                     f"{a['first']:.2f}" if a and a["first"] else "-", ratio(o["first"], a and a["first"]),
                     "<= 0.50x"))
    print(fmt.format("CPU s per GB", f"{o['cpu_gb']:.2f}", f"{a['cpu_gb']:.2f}" if a else "-",
                     ratio(o["cpu_gb"], a and a["cpu_gb"]), "<= 2.00x (aria2c + md5sum)"))
    print(fmt.format(f"peak RSS, one {BIG / MB:.0f} MB file (MB)", f"{o['rss_mb']:.1f}", "-", "", "<= 80 MB"))
    print(fmt.format("uncapped throughput (MB/s)", f"{o['uncapped']:.0f}", f"{a['uncapped']:.0f}" if a else "-",
                     ratio(o["uncapped"], a and a["uncapped"]), ">= 0.80x"))
    one = o.get("one_file")
    print(fmt.format(f"one new {o['one_file_name']} listed -> in sdr/ (s)", f"{one:.2f}" if one else "never", "-",
                     "", "+ 0-60 s cron wait (mean 30 s)"))
    print("   all files placed by ours:", o["ok"], "| aria2c exit ok:", a["ok"] if a else "-")
    print_shapes(rows)
    print(json.dumps({"results": results, "floor": floor, "bytes": pass_bytes, "shapes": rows}, default=str))


def main() -> int:
    only = os.environ.get("BENCH_ONLY", "")
    if only == "listing":
        print_listing_cost()
        return 0
    print_listing_cost()
    shapes = [x for x in os.environ.get("BENCH_SHAPES", "equal,big,forty,stall").split(",") if x]
    have_aria2 = shutil.which("aria2c") is not None
    work = Path(os.environ.get("BENCH_DIR") or tempfile.mkdtemp(prefix="bench_mirror."))
    files = work / "gina" / "files"
    files.mkdir(parents=True, exist_ok=True)
    print(f"== bench_mirror: {GRANULES} granules, cap {CAP / MB:g} MB/s per connection, {CONNECTIONS} connections,"
          f" work dir {work}")
    if not have_aria2:
        print("!! aria2c is NOT installed: only our figures are measured (apt-get install -y aria2 to compare)")
    t0 = time.monotonic()
    names = make_pass(files)
    pass_names = names[:-1]
    pass_bytes = sum((files / n).stat().st_size for n in pass_names)
    print(f"   generated {len(names)} files ({pass_bytes / MB:.0f} MB pass + {BIG / MB:.0f} MB file) in "
          f"{time.monotonic() - t0:.1f} s")
    results, floor = measure_pass(work, pass_names, pass_bytes, have_aria2)
    rows = run_shapes(work, shapes, have_aria2)
    report(results, floor, pass_names, pass_bytes, rows)
    if not os.environ.get("BENCH_DIR"):
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
