"""tle_refresh against a local HTTP server: unchanged, changed, garbage, HTTP 500, timeout."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from avoviirscollector.tle import TLEError, checksum_ok, parse_tles

ISS = [  # the textbook example: checksums as published
    "ISS (ZARYA)",
    "1 25544U 98067A   08264.51782528 -.00002182  00000-0 -11606-4 0  2927",
    "2 25544  51.6416 247.4627 0006703 130.5360 325.0288 15.72125391563537",
]


def with_checksum(line: str) -> str:
    total = sum(int(c) if c.isdigit() else 1 if c == "-" else 0 for c in line[:68])
    return line[:68] + str(total % 10)


def element_set(name: str, catalog: int, epoch_day: float) -> list[str]:
    one = f"1 {catalog:05d}U 11061A   26{epoch_day:012.8f}  .00000100  00000-0  68000-4 0  999"
    two = f"2 {catalog:05d}  98.7300 200.1234 0001500  90.0000 270.1000 14.19550000123456"
    return [name, with_checksum(one.ljust(69)), with_checksum(two.ljust(69))]


def weather_set(epoch_day: float) -> bytes:
    lines = []
    for name, catalog in (("SUOMI NPP", 37849), ("NOAA 20 (JPSS-1)", 43013), ("NOAA 21 (JPSS-2)", 54234)):
        lines += element_set(name, catalog, epoch_day)
    return ("\r\n".join(lines) + "\r\n").encode("ascii")


class Celestrak:
    """A local stand-in for the TLE source: serves ``body`` with ``status``, or hangs ``delay`` seconds first."""

    def __init__(self) -> None:
        self.body = weather_set(327.5)
        self.status = 200
        self.delay = 0.0
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                outer.requests += 1
                if outer.delay:
                    time.sleep(outer.delay)  # a slow server
                self.send_response(outer.status)
                self.send_header("Content-Length", str(len(outer.body)))
                self.end_headers()
                self.wfile.write(outer.body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/NORAD/elements/gp.php?GROUP=weather&FORMAT=tle"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def celestrak():
    server = Celestrak()
    try:
        yield server
    finally:
        server.close()


def refresh(base: Path, url: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(VIIRS_BASE=str(base), TLE_URL=url)
    return subprocess.run([sys.executable, "-m", "avoviirscollector.tle", *args], env=env, capture_output=True,
                          text=True, timeout=60)


def leftovers(base: Path) -> list[str]:
    return sorted(p.name for p in (base / "elements").iterdir() if p.name != "tle.txt")


def test_first_download_then_unchanged_is_not_rewritten(tmp_path, celestrak):
    base = tmp_path / "viirs"
    first = refresh(base, celestrak.url)
    assert first.returncode == 0, first.stderr
    target = base / "elements" / "tle.txt"
    assert target.read_bytes() == celestrak.body
    assert "TLEs updated" in first.stdout and "3 element sets" in first.stdout
    old = target.stat().st_mtime - 3600
    os.utime(target, (old, old))
    inode = target.stat().st_ino
    second = refresh(base, celestrak.url)
    assert second.returncode == 0
    assert "unchanged" in second.stdout
    assert target.stat().st_mtime == old and target.stat().st_ino == inode
    assert leftovers(base) == []
    assert celestrak.requests == 2


def test_changed_set_replaces_the_file_atomically(tmp_path, celestrak):
    base = tmp_path / "viirs"
    assert refresh(base, celestrak.url).returncode == 0
    target = base / "elements" / "tle.txt"
    inode = target.stat().st_ino
    celestrak.body = weather_set(327.75)
    result = refresh(base, celestrak.url)
    assert result.returncode == 0, result.stdout
    assert target.read_bytes() == celestrak.body
    assert target.stat().st_ino != inode  # a new file renamed in, not the old one rewritten in place
    assert oct(target.stat().st_mode & 0o777) == "0o644"
    assert leftovers(base) == []


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stdout.splitlines() if " ERROR " in line]


def fails_keeping_the_old_file(base: Path, celestrak: Celestrak, status: int, body: bytes) -> list[str]:
    """A good refresh, then one against an answer of ``status`` with ``body``: it fails (exit status 1), keeps the
    first file and leaves nothing behind. Its ERROR lines."""
    assert refresh(base, celestrak.url).returncode == 0
    good = celestrak.body
    celestrak.status, celestrak.body = status, body
    result = refresh(base, celestrak.url)
    assert result.returncode == 1
    assert (base / "elements" / "tle.txt").read_bytes() == good
    assert leftovers(base) == []
    return error_lines(result)


@pytest.mark.parametrize("garbage", [
    b"<html><body>Rate limit exceeded</body></html>\n",
    b"",
    b"\x89HDF\r\n\x1a\n" + bytes(range(256)),
    "\n".join(ISS[:2]).encode() + b"\n",  # cut after line 1
    "\n".join([ISS[0], ISS[1], ISS[2][:-1] + "0"]).encode() + b"\n",  # bad checksum
])
def test_garbage_keeps_the_old_file(tmp_path, celestrak, garbage):
    errors = fails_keeping_the_old_file(tmp_path / "viirs", celestrak, 200, garbage)
    assert len(errors) == 1 and "not TLEs" in errors[0] and "keeping" in errors[0]


def test_http_500_keeps_the_old_file(tmp_path, celestrak):
    errors = fails_keeping_the_old_file(tmp_path / "viirs", celestrak, 500, b"1 broken\n")
    assert len(errors) == 1 and "HTTP 500" in errors[0]


def test_timeout_keeps_the_old_file_and_gives_up_in_time(tmp_path, celestrak):
    base = tmp_path / "viirs"
    assert refresh(base, celestrak.url).returncode == 0
    good = celestrak.body
    celestrak.delay = 5.0
    started = time.monotonic()
    result = refresh(base, celestrak.url, "--timeout", "1")
    assert time.monotonic() - started < 4.5
    assert result.returncode == 1
    errors = error_lines(result)
    assert len(errors) == 1 and "Timeout" in errors[0]
    assert (base / "elements" / "tle.txt").read_bytes() == good
    assert leftovers(base) == []


def test_unreachable_source_without_an_old_file_says_so(tmp_path):
    base = tmp_path / "viirs"
    result = refresh(base, "http://127.0.0.1:9/tle.txt", "--timeout", "2")
    assert result.returncode == 1
    assert "keeping no TLE file yet" in result.stdout
    assert not (base / "elements" / "tle.txt").exists()


def norads(lines, **kwargs) -> list[int]:
    return [element.norad for element in parse_tles(lines, **kwargs)]


def test_parser():
    assert checksum_ok(ISS[1]) and checksum_ok(ISS[2])
    assert norads(ISS) == [25544]
    assert norads(ISS[1:] + [""] + ISS) == [25544, 25544]
    (iss,) = parse_tles(ISS, "stations.txt")
    assert (iss.line1, iss.line2, iss.source) == (ISS[1], ISS[2], "stations.txt")
    assert iss.epoch == dt.datetime(2008, 1, 1, tzinfo=dt.UTC) + dt.timedelta(days=263.51782528)
    with pytest.raises(TLEError, match="catalog number differs"):
        parse_tles([ISS[1], with_checksum(ISS[2][:2] + "25545" + ISS[2][7:])])
    with pytest.raises(TLEError, match="no element set"):
        parse_tles(["", "  "])
    with pytest.raises(TLEError, match="not a TLE line"):
        parse_tles(["NAME", "ANOTHER NAME"])
    with pytest.raises(TLEError, match="ends inside an element set"):
        parse_tles(ISS[:2])
    with pytest.raises(TLEError, match="epoch .* is not a date"):
        parse_tles([with_checksum(ISS[1][:20] + "400.00000000" + ISS[1][32:]), ISS[2]])


def test_parser_with_the_caller_skipping_bad_sets():
    """One parser, two policies: tle_refresh lets it raise; the direction helper collects problems and goes on."""
    good = element_set("NOAA 20 (JPSS-1)", 43013, 153.5)
    bad_checksum = [ISS[0], ISS[1][:-1] + "0", ISS[2]]
    line1_twice = [ISS[1], *element_set("SUOMI NPP", 37849, 153.5)[1:]]
    cut = ["NOAA 21 (JPSS-2)", ISS[1], ISS[2][:40]]
    text = ["# fetched by hand on a bad day", *bad_checksum, *good, *line1_twice, *cut, *ISS,
            "<html><body>rate limited</body></html>"]
    with pytest.raises(TLEError, match="line 1: not a TLE line"):
        parse_tles(text)
    problems: list[TLEError] = []
    assert norads(text, source="tle.txt", on_error=problems.append) == [43013, 37849, 25544]
    assert [str(p).split(": ", 2)[1] for p in problems] == ["line 1", "line 3", "line 9", "line 13", "line 17"]
    assert all(str(p).startswith("tle.txt: ") for p in problems)
    problems.clear()
    assert parse_tles(["nothing", "here"][:1], on_error=problems.append) == []
    assert "no element set" in str(problems[-1])
    problems.clear()
    assert norads(ISS[:2], on_error=problems.append) == [] and "ends inside" in str(problems[0])
