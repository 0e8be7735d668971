"""The GINA double: listing, real HDF5 files, range semantics, bandwidth cap, faults."""

import datetime as dt
import hashlib
import http.client
import json
import time

import h5py
import pytest
import requests

from avoviirscollector.gina_double import GinaDouble, _parse_range
from avoviirscollector.viirs import parse_name

START = dt.datetime(2026, 11, 23, 10, 0, 0)


@pytest.fixture
def double(tmp_path):
    d = GinaDouble(tmp_path / "gina")
    d.start()
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture
def one_file(double):
    return double.add_granule("npp", 70000, START, segments=("SVM16",), sizes={"SVM16": 300_000})[0]


def test_files_are_real_hdf5_with_viirs_names_and_groups(double):
    served = double.add_granule("j01", 12345, START, segments=("GMTCO", "SVM16", "SVDNB"), scale=0.002)
    for item in served:
        sdr = parse_name(item.name)
        assert sdr.platform == "j01" and sdr.orbit_number == 12345
        with h5py.File(item.path, "r") as h5:
            assert "All_Data" in h5 and "Data_Products" in h5
    with h5py.File(served[1].path, "r") as h5:
        assert "VIIRS-M16-SDR_All" in h5["All_Data"]


def test_listing_filters_by_satellite_and_date(double):
    double.add_granule("npp", 70000, START, segments=("SVM16",), scale=0.002)
    double.add_granule("j01", 20000, START, segments=("SVM16",), scale=0.002)
    old = double.add_granule("npp", 60000, START - dt.timedelta(days=5), segments=("SVM16",), scale=0.002)[0]
    query = {"start_date": "2026-11-22", "end_date": "2026-11-24", "satellites[]": "snpp", "sensors[]": "viirs"}
    records = requests.get(f"{double.url}/products.json", params=query, timeout=5).json()
    assert [parse_name(r["url"].rsplit("/", 1)[1]).platform for r in records] == ["npp"]
    assert old.name not in json.dumps(records)
    assert {"url", "md5sum"} <= set(records[0])
    body = requests.get(records[0]["url"], timeout=5).content
    assert hashlib.md5(body).hexdigest() == records[0]["md5sum"]


def test_range_semantics(double, one_file):
    url = f"{double.url}/files/{one_file.name}"
    data = one_file.path.read_bytes()
    r = requests.get(url, headers={"Range": "bytes=100-199"}, timeout=5)
    assert r.status_code == 206 and r.content == data[100:200]
    assert r.headers["Content-Range"] == f"bytes 100-199/{len(data)}" and r.headers["Accept-Ranges"] == "bytes"
    r = requests.get(url, headers={"Range": "bytes=-10"}, timeout=5)
    assert r.status_code == 206 and r.content == data[-10:]
    r = requests.get(url, headers={"Range": f"bytes={len(data) - 5}-"}, timeout=5)
    assert r.content == data[-5:]
    r = requests.get(url, headers={"Range": f"bytes={len(data)}-"}, timeout=5)
    assert r.status_code == 416 and r.headers["Content-Range"] == f"bytes */{len(data)}"
    assert _parse_range("bytes=0-1,5-6", 10) is None  # several ranges: the whole file (200)
    r = requests.get(f"{double.url}/files/nothing.h5", timeout=5)
    assert r.status_code == 404


def test_keep_alive_serves_several_requests_on_one_connection(double, one_file):
    conn = http.client.HTTPConnection("127.0.0.1", int(double.url.rsplit(":", 1)[1]), timeout=5)
    try:
        for start in (0, 1000, 2000):
            conn.request("GET", f"/files/{one_file.name}", headers={"Range": f"bytes={start}-{start + 9}"})
            resp = conn.getresponse()
            assert resp.status == 206 and len(resp.read()) == 10
    finally:
        conn.close()


def test_per_connection_bandwidth_cap(tmp_path):
    with GinaDouble(tmp_path / "g", rate=1e6) as d:
        item = d.add_granule("npp", 1, START, segments=("SVM15",), sizes={"SVM15": 400_000})[0]
        t0 = time.monotonic()
        body = requests.get(f"{d.url}/files/{item.name}", timeout=10).content
        elapsed = time.monotonic() - t0
    assert len(body) == item.size
    assert 0.3 < elapsed < 3.0  # 400 kB at 1 MB/s


def test_faults(double, one_file):
    url = f"{double.url}/files/{one_file.name}"
    rng = {"Range": "bytes=1000-200999"}
    double.set_fault("ignore_ranges", 1)
    r = requests.get(url, headers=rng, timeout=5)
    assert r.status_code == 200 and len(r.content) == one_file.size and "Accept-Ranges" not in r.headers
    double.set_fault("error5xx", 1)
    assert requests.get(url, headers=rng, timeout=5).status_code == 503
    assert requests.get(url, headers=rng, timeout=5).status_code == 206  # count used up
    for fault in ("short_body", "drop"):
        double.set_fault(fault, 1)
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            requests.get(url, headers=rng, timeout=5).content  # noqa: B018 - the body is the point
    double.set_fault("slow_first_byte", 1)
    double.slow_seconds = 0.5
    t0 = time.monotonic()
    requests.get(url, headers={"Range": "bytes=0-9"}, timeout=5)
    assert time.monotonic() - t0 >= 0.45
    double.set_fault("wrong_md5")
    record = requests.get(f"{double.url}/products.json", timeout=5).json()[0]
    assert record["md5sum"] != one_file.md5
    double.clear_faults()
    double.set_fault("html")
    r = requests.get(f"{double.url}/products.json", timeout=5)
    assert r.headers["Content-Type"] == "text/html" and r.text.startswith("<html>")
    double.clear_faults()
    double.set_fault("bad_json", 1)
    with pytest.raises(ValueError):
        requests.get(f"{double.url}/products.json", timeout=5).json()
    with pytest.raises(ValueError):
        double.set_fault("no-such-fault")


def test_standalone_console_script_serves_and_stops_on_sigterm(tmp_path):
    import signal
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "avoviirscollector.gina_double", "--port", str(port), "--dir",
                             str(tmp_path / "g"), "--granules", "1", "--scale", "0.002", "--satellites", "snpp"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        records = None
        while time.monotonic() < deadline:
            try:
                records = requests.get(f"http://127.0.0.1:{port}/products.json", timeout=2).json()
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        assert records and len(records) == 12  # one granule of every segment the products need
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
        assert proc.returncode == 0 and "stopped" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
