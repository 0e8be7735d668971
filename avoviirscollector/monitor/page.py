"""The status page: one server-rendered HTML document with inline CSS and SVG, no script, nothing fetched.

Pure: :func:`render` turns a :class:`View` (a snapshot of monitor's state) into text. Elements carry classes and
``data-`` attributes (``granule``, ``complete``/``incomplete``, ``tasked``, ``handed-out``; ``data-satellite``,
``data-product``, ``data-start``) so that a person's browser and a test's headless browser read the same thing.

Two tables of the last 24 hours:

- ``table#latency.latency``: one ``tr.latency-row`` per satellite and station (``data-satellite``,
  ``data-station``), one ``td.leg`` per leg (``data-leg``: created_to_listed, listed_to_placed, placed_to_tasked,
  tasked_to_handed_out, listed_to_handed_out; ``data-median`` in seconds, empty without samples; ``data-samples``);
- ``table#stations.stations``: one ``tr.station`` per receiving station (``data-station``, ``data-files-first``,
  ``data-copies-skipped``, ``data-lead`` (median seconds, empty when unknown), ``data-leads`` (samples),
  ``data-one-station-passes``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from html import escape

from avoviirscollector import isotime
from avoviirscollector.formatting import human_bytes
from avoviirscollector.monitor.history import WINDOW, GranuleRow, History
from avoviirscollector.monitor.latency import LEG_TITLES, LEGS
from avoviirscollector.monitor.stations import StationRow
from avoviirscollector.ondisk.journal import HANDED_OUT
from avoviirscollector.queue_status import pair_line
from avoviirscollector.viirs import PRODUCTS

REFRESH_SECONDS = 30
GREEN_BELOW, YELLOW_BELOW = 6, 10  # queue length thresholds (the original dashboard's)
COMPLETE_GREEN = 0.9  # completeness judged good at 90% and above
PASS_GAP = 300.0  # granules of one satellite more than 5 minutes apart belong to different passes
MAX_PASSES = 12  # passes shown in detail (newest first): four per satellite
WIDTH = 1100

CSS = """
body{font:14px/1.35 system-ui,sans-serif;margin:16px;color:#222;background:#fafafa}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:18px 0 6px}
.ok{color:#1a7f37}.warn{color:#b08800}.bad{color:#cf222e}
.verdict{display:inline-block;padding:2px 10px;border-radius:4px;color:#fff;font-weight:600}
.verdict.ok{background:#1a7f37}.verdict.bad{background:#cf222e}.verdict.unknown{background:#777}
table{border-collapse:collapse;background:#fff}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}
th{background:#f0f0f0}.num{text-align:right}.small{font-size:12px;color:#555}
.errors{font:12px monospace;white-space:pre-wrap;background:#fff;border:1px solid #ddd;padding:6px;max-width:1100px}
svg text{font:11px system-ui,sans-serif;fill:#333}
.granule.complete{fill:#2da44e}.granule.incomplete{fill:#fb8f44}.granule.empty{fill:#e5534b}
.mark.tasked{fill:none;stroke:#0969da}.mark.handed-out{fill:#0969da}
.grid{display:flex;flex-wrap:wrap;gap:10px}.pass{background:#fff;border:1px solid #ddd;padding:4px}
"""


@dataclass
class View:
    now: float
    history: History
    live: dict | None = None
    programs: list[dict] = field(default_factory=list)
    supervisor_error: str | None = None
    health: dict = field(default_factory=dict)
    failures: dict = field(default_factory=dict)
    disk: dict = field(default_factory=dict)
    errors: list[dict] = field(default_factory=list)
    verdict: tuple[bool, list[str]] | None = None


def _t(epoch: float | None, fmt: str = "%Y-%m-%d %H:%M:%SZ") -> str:
    if epoch is None:
        return "?"
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime(fmt)


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _seconds(value: float) -> str:
    """A duration for a person: ``4.2 s``, ``85 s``, ``3.5 min``, ``1.2 h``."""
    if value < 10:
        return f"{value:.1f} s"
    if value < 120:
        return f"{value:.0f} s"
    if value < 7200:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.1f} h"


def _data_number(value: float | None) -> str:
    """A number for a ``data-`` attribute (seconds to the millisecond); empty when unknown."""
    return "" if value is None else repr(round(value, 3))


def latency_table(medians: dict[tuple[str, str], dict[str, tuple[float, int]]]) -> str:
    """Per satellite and station, each leg's median over 24 hours and its number of samples."""
    out = ['<table id="latency" class="latency"><tr><th>satellite</th><th>station</th>',
           *(f'<th data-leg="{leg}">{escape(LEG_TITLES[leg])}</th>' for leg in LEGS), "</tr>"]
    if not medians:
        out.append(f'<tr><td colspan="{2 + len(LEGS)}" class="small">no samples yet</td></tr>')
    for (satellite, station), legs in sorted(medians.items()):
        out.append(f'<tr class="latency-row" data-satellite="{escape(satellite)}" data-station="{escape(station)}">'
                   f"<td>{escape(satellite)}</td><td>{escape(station)}</td>")
        for leg in LEGS:
            median, count = legs.get(leg, (None, 0))
            shown = "-" if median is None else f'{_seconds(median)} <span class="small">({count})</span>'
            out.append(f'<td class="num leg" data-leg="{leg}" data-median="{_data_number(median)}"'
                       f' data-samples="{count}">{shown}</td>')
        out.append("</tr>")
    out.append("</table>")
    return "".join(out)


def stations_table(rows: dict[str, StationRow]) -> str:
    """Per receiving station: files first from it, its copies left alone, by how much earlier it came first
    (median), passes seen there only; over 24 hours."""
    out = ['<table id="stations" class="stations"><tr><th>station</th><th>files first</th>'
           '<th>copies left alone</th><th>came first by (median)</th><th>passes seen there only</th></tr>']
    if not rows:
        out.append('<tr><td colspan="5" class="small">no files placed yet</td></tr>')
    for station, row in rows.items():
        lead = row.lead_median
        shown = "-" if lead is None else f'{_seconds(lead)} <span class="small">({len(row.leads)})</span>'
        out.append(f'<tr class="station" data-station="{escape(station)}" data-files-first="{row.files_first}" '
                   f'data-copies-skipped="{row.copies_skipped}" data-lead="{_data_number(lead)}" '
                   f'data-leads="{len(row.leads)}" data-one-station-passes="{row.one_station_passes}">'
                   f'<td>{escape(station)}</td><td class="num">{row.files_first}</td>'
                   f'<td class="num">{row.copies_skipped}</td><td class="num">{shown}</td>'
                   f'<td class="num">{row.one_station_passes}</td></tr>')
    out.append("</table>")
    return "".join(out)


def queue_class(length: int) -> str:
    return "ok" if length < GREEN_BELOW else "warn" if length < YELLOW_BELOW else "bad"


def passes(rows: list[GranuleRow]) -> list[tuple[str, list[GranuleRow]]]:
    """Granule rows grouped into passes: per satellite, starts less than 5 minutes apart; newest pass first."""
    by_sat: dict[str, list[GranuleRow]] = {}
    for row in rows:
        by_sat.setdefault(row.key.platform_name, []).append(row)
    out = []
    for satellite, members in by_sat.items():
        members.sort(key=lambda r: r.key.start_time)
        current: list[GranuleRow] = []
        for row in members:
            if current and (row.key.start_time - current[-1].key.start_time).total_seconds() > PASS_GAP:
                out.append((satellite, current))
                current = []
            current.append(row)
        if current:
            out.append((satellite, current))
    out.sort(key=lambda item: item[1][0].key.start_time, reverse=True)
    return out


def _start_epoch(row: GranuleRow) -> float:
    return row.key.start_time.replace(tzinfo=dt.UTC).timestamp()


def _granule_title(row: GranuleRow) -> str:
    state = ("handed out" + (f" to {row.handed_out}" if row.handed_out else "")) if row.handed_out is not None \
        else "dropped" if row.dropped else "tasked" if row.tasked else "not tasked"
    missing = f" (missing {', '.join(row.missing)})" if row.missing else ""
    return (f"{row.key.product} {row.key.platform_name} {row.key.start_time:%Y-%m-%d %H:%M:%S}: "
            f"{row.have}/{row.need} files{missing}; {state}")


def timeline(rows: list[GranuleRow], now: float) -> str:
    """24 hours of passes: one band per satellite, one row per product; each pass a bar colored by the share of
    its granules that are complete."""
    satellites = sorted({row.key.platform_name for row in rows})
    products = list(PRODUCTS)
    left, row_h, band_gap = 110, 12, 14
    height = 20 + len(satellites) * (len(products) * row_h + band_gap)
    span = WIDTH - left - 10
    start = now - WINDOW

    def x(epoch: float) -> float:
        return left + max(0.0, min(1.0, (epoch - start) / WINDOW)) * span

    out = [f'<svg class="timeline" width="{WIDTH}" height="{height}" role="img" '
           f'aria-label="passes of the last 24 hours">']
    for hour in range(0, 25, 3):
        tick = start + hour * 3600
        out.append(f'<line x1="{x(tick):.1f}" y1="12" x2="{x(tick):.1f}" y2="{height}" stroke="#ddd"/>'
                   f'<text x="{x(tick) - 30 * (hour == 24) - 14:.1f}" y="10">{_t(tick, "%H:%M")}</text>')
    grouped = passes(rows)
    for index, satellite in enumerate(satellites):
        top = 16 + index * (len(products) * row_h + band_gap)
        out.append(f'<text x="2" y="{top + 2.5 * row_h:.0f}">{escape(satellite)}</text>')
        for p_index, product in enumerate(products):
            y = top + p_index * row_h
            out.append(f'<text x="78" y="{y + row_h - 2}">{product}</text>')
            for sat, members in grouped:
                if sat != satellite:
                    continue
                mine = [r for r in members if r.key.product == product]
                if not mine:
                    continue
                done = sum(r.complete for r in mine)
                ratio = done / len(mine)
                cls = "complete" if ratio >= 1 else "empty" if done == 0 else "incomplete"
                x0 = x(_start_epoch(mine[0]))
                x1 = max(x0 + 3, x(_start_epoch(mine[-1]) + 86))
                out.append(f'<rect class="pass-bar granule {cls}" data-satellite="{escape(satellite)}" '
                           f'data-product="{product}" x="{x0:.1f}" y="{y}" width="{x1 - x0:.1f}" '
                           f'height="{row_h - 1}"><title>{escape(satellite)} {product} pass '
                           f'{mine[0].key.start_time:%H:%M}: {done}/{len(mine)} granules complete</title></rect>')
    out.append("</svg>")
    return "".join(out)


def pass_detail(satellite: str, members: list[GranuleRow]) -> str:
    """One pass: a grid of granules (columns) by product (rows); a ring under a tasked granule, a dot when handed
    out."""
    starts = sorted({r.key.start_time for r in members})
    products = list(PRODUCTS)
    cell, left = 11, 30
    width = left + len(starts) * cell + 4
    height = len(products) * (cell + 5) + 4
    out = [f'<div class="pass" data-satellite="{escape(satellite)}"><div class="small">{escape(satellite)} '
           f'{starts[0]:%Y-%m-%d %H:%M}-{starts[-1]:%H:%M}Z, {len(starts)} granules</div>'
           f'<svg width="{width}" height="{height}">']
    column = {start: i for i, start in enumerate(starts)}
    for p_index, product in enumerate(products):
        out.append(f'<text x="0" y="{p_index * (cell + 5) + cell - 2}">{product}</text>')
    for row in members:
        px = left + column[row.key.start_time] * cell
        py = products.index(row.key.product) * (cell + 5)
        cls = "complete" if row.complete else "empty" if row.have == 0 else "incomplete"
        marks = (" tasked" if row.tasked else "") + (" handed-out" if row.handed_out is not None else "")
        out.append(f'<rect class="granule {cls}{marks}" data-satellite="{escape(satellite)}" '
                   f'data-product="{row.key.product}" data-start="{row.key.start_time:%Y-%m-%dT%H:%M:%S}" '
                   f'data-files="{row.have}/{row.need}" x="{px}" y="{py}" width="{cell - 2}" height="{cell - 2}">'
                   f'<title>{escape(_granule_title(row))}</title></rect>')
        if row.handed_out is not None:
            out.append(f'<circle class="mark handed-out" cx="{px + cell / 2 - 1}" cy="{py + cell + 1}" r="2"/>')
        elif row.tasked:
            out.append(f'<circle class="mark tasked" cx="{px + cell / 2 - 1}" cy="{py + cell + 1}" r="2"/>')
    out.append("</svg></div>")
    return "".join(out)


def queue_chart(samples: list[list[float]], now: float, current: int | None) -> str:
    """The queue length over 24 hours (the maximum of each minute) on green / yellow / red bands."""
    height, left, bottom = 150, 40, 18
    top_value = max([YELLOW_BELOW + 2, *(s[1] * 1.1 for s in samples), current or 0])
    plot_h = height - bottom - 6
    span = WIDTH - left - 10
    start = now - WINDOW

    def y(value: float) -> float:
        return 6 + plot_h * (1 - min(value, top_value) / top_value)

    def x(epoch: float) -> float:
        return left + max(0.0, min(1.0, (epoch - start) / WINDOW)) * span

    out = [f'<svg class="queue" width="{WIDTH}" height="{height}" role="img" aria-label="queue length, 24 hours">',
           f'<rect x="{left}" y="{y(GREEN_BELOW):.1f}" width="{span}" height="{y(0) - y(GREEN_BELOW):.1f}" '
           f'fill="#dafbe1"/>',
           f'<rect x="{left}" y="{y(YELLOW_BELOW):.1f}" width="{span}" '
           f'height="{y(GREEN_BELOW) - y(YELLOW_BELOW):.1f}" fill="#fff8c5"/>',
           f'<rect x="{left}" y="6" width="{span}" height="{y(YELLOW_BELOW) - 6:.1f}" fill="#ffebe9"/>']
    shown: list[float] = []
    for value in (0, GREEN_BELOW, YELLOW_BELOW, int(top_value)):
        if all(abs(y(value) - other) >= 11 for other in shown):  # labels never overlap
            shown.append(y(value))
            out.append(f'<text x="2" y="{y(value) + 4:.1f}">{value}</text>')
    for hour in range(0, 25, 3):
        tick = start + hour * 3600
        out.append(f'<text x="{x(tick) - 30 * (hour == 24) - 14:.1f}" y="{height - 4}">{_t(tick, "%H:%M")}</text>')
    points = [(x(t), y(n)) for t, n in samples if t >= start]
    if points:
        path = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
        out.append(f'<polyline class="queue-line" data-samples="{len(points)}" points="{path}" fill="none" '
                   f'stroke="#0969da" stroke-width="1.5"/>')
    out.append("</svg>")
    return "".join(out)


def render(view: View) -> str:
    """The whole page: headline and verdict, satellites, passes, queue, latency, stations, mirror_gina, programs,
    last errors, disk."""
    h, now = view.history, view.now
    parts = _head(view)
    parts += _satellites(h, now)
    parts += _passes(h, now)
    parts += _queue(view)
    parts.append('<h2>Latency, last 24 hours</h2><div class="small">median of each leg (samples): the creation '
                 'time in the file name -> first listed by GINA -> placed in sdr/ -> the granule tasked -> handed '
                 'out to a worker; and listed (the granule\'s file listed last) -> handed out, end to end</div>')
    parts.append(latency_table(h.latency_medians(now)))
    parts.append('<h2>Stations, last 24 hours</h2><div class="small">files placed from each receiving station, '
                 'its copies left alone (another station\'s copy of the file was placed or being fetched), by how '
                 'much earlier it listed the files kept (median), and the passes seen at it only</div>')
    parts.append(stations_table(h.station_stats(now)))
    parts += _mirror(view)
    parts += _programs(view)
    parts += _errors(view.errors)
    parts += _disk(view.disk)
    parts.append("</body></html>\n")
    return "".join(parts)


def _head(view: View) -> list[str]:
    verdict = view.verdict
    verdict_html = ('<span class="verdict unknown">health not checked yet</span>' if verdict is None else
                    '<span class="verdict ok" id="verdict">HEALTHY</span>' if verdict[0] else
                    '<span class="verdict bad" id="verdict">UNHEALTHY</span>')
    parts = ['<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
             f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">',
             '<title>avoviirscollector monitor</title>', f"<style>{CSS}</style></head><body>",
             f'<h1>avoviirscollector {verdict_html}</h1>',
             f'<div class="small">at {_t(view.now)}; this page refreshes every {REFRESH_SECONDS} s; '
             f'<a href="metrics">/metrics</a> <a href="healthz">/healthz</a></div>']
    if verdict is not None and not verdict[0]:
        parts.append('<ul class="problems">' + "".join(f'<li class="bad">{escape(p)}</li>' for p in verdict[1])
                     + "</ul>")
    return parts


def _satellites(h: History, now: float) -> list[str]:
    completeness = h.completeness(now)
    last = h.last_granule()
    parts = ['<h2>Satellites</h2><table id="satellites"><tr><th>satellite</th><th>last granule (start)</th>'
             '<th>placed</th><th>delay</th><th>complete, 24 h</th></tr>']
    for satellite in sorted(set(last) | {s for s, _ in completeness}):
        entry = last.get(satellite, {})
        done = sum(v[0] for (s, _), v in completeness.items() if s == satellite)
        total = sum(v[1] for (s, _), v in completeness.items() if s == satellite)
        ratio = done / total if total else None
        cls = "" if ratio is None else "ok" if ratio >= COMPLETE_GREEN else "bad"
        per_product = ", ".join(f"{p} {completeness[(satellite, p)][0]}/{completeness[(satellite, p)][1]}"
                                for p in PRODUCTS if (satellite, p) in completeness)
        parts.append(f'<tr class="satellite" data-satellite="{escape(satellite)}"><td>{escape(satellite)}</td>'
                     f'<td>{_t(entry.get("start"))}</td><td>{_t(entry.get("placed"))}</td>'
                     f'<td class="num">{_ago(entry.get("delay"))}</td>'
                     f'<td class="{cls}">{"?" if ratio is None else f"{100 * ratio:.0f}%"} '
                     f'<span class="small">({done}/{total} granules: {per_product})</span></td></tr>')
    parts.append("</table>")
    return parts


def _passes(h: History, now: float) -> list[str]:
    rows = h.granules(now)
    parts = ['<h2>Passes, last 24 hours</h2><div class="small">each bar a pass: green every granule complete, '
             'orange some incomplete, red none; below, the newest passes granule by granule (ring: tasked, '
             'dot: handed out)</div>', timeline(rows, now), '<div class="grid" id="passes">']
    for satellite, members in passes(rows)[:MAX_PASSES]:
        parts.append(pass_detail(satellite, members))
    parts.append("</div>")
    return parts


def _queue(view: View) -> list[str]:
    h, now, live = view.history, view.now, view.live
    current = live.get("queued", live["queue length"]) if live else None  # "queued": the real count while it
    # says 0 (a stop, or a moment's hold while silent workers are answered)
    handed_24h = sum(1 for when, kind, _ in h.handed.values() if kind == HANDED_OUT and when >= now - WINDOW)
    parts = ["<h2>Queue</h2>"]
    if live is None:
        parts.append('<div class="bad" id="queue-now">task_broker status not heard</div>')
    else:
        by_product = ", ".join(f"{escape(str(p))} {n}" for p, n in sorted(live.get("tasks by product", {}).items()))
        day = ", ".join(f"{escape(k[:-7])} {live[k]}" for k in sorted(live) if k.endswith(" (24 h)"))
        parts.append(f'<div id="queue-now" class="{queue_class(current)}" data-length="{current}">'
                     f'<b>{current}</b> tasks waiting{": " + by_product if by_product else ""}; '
                     f'{handed_24h} handed out in 24 h{"; " + day if day else ""}</div>')
        if isinstance(live.get("pair"), dict):  # two hosts: this host's role and its link to the other
            pair = live["pair"]
            whole = pair.get("link") == "whole"
            parts.append(f'<div id="pair" class="{"ok" if whole else "bad"}" '
                         f'data-role="{escape(str(pair.get("role")))}" data-link="{escape(str(pair.get("link")))}">'
                         f'{escape(pair_line(pair))}</div>')
    parts.append(queue_chart(h.queue_samples, now, current))
    return parts


def _mirror(view: View) -> list[str]:
    h, now, health = view.history, view.now, view.health
    pending = health.get("pending") if isinstance(health.get("pending"), dict) else {}
    given_up = [n for n, e in view.failures.items() if isinstance(e, dict) and e.get("given_up")]
    if not health:
        return ["<h2>mirror_gina</h2>", f'<div id="mirror">no health record yet; {h.placed_since(now - 3600)} files '
                f'placed in the last hour</div>']
    success = isotime.epoch(health.get("last_success"))
    return ["<h2>mirror_gina</h2>",
            f'<div id="mirror">last run {escape(str(health.get("last_run", "?")))} '
            f'({escape(str(health.get("last_run_summary", "")))}); last success '
            f'{_ago(now - success) + " ago" if success else "never"}; {len(pending)} files listed and not '
            f'placed; {len(given_up)} given up on; {h.placed_since(now - 3600)} files placed in the last '
            f'hour</div>']


def _programs(view: View) -> list[str]:
    parts = ['<h2>Programs</h2><table id="programs"><tr><th>program</th><th>state</th><th></th></tr>']
    if view.supervisor_error:
        parts.append(f'<tr><td colspan="3" class="bad">supervisord does not answer: '
                     f'{escape(view.supervisor_error)}</td></tr>')
    starts = view.history.counter("starts")
    for prog in view.programs:
        cls = "ok" if prog["state"] == "RUNNING" else "bad"
        count = int(starts.get((prog["name"].split(":")[-1],), 0))
        parts.append(f'<tr class="program" data-state="{escape(prog["state"])}"><td>{escape(prog["name"])}</td>'
                     f'<td class="{cls}">{escape(prog["state"])}</td><td class="small">'
                     f'{escape(prog.get("description", ""))}; started {count}x</td></tr>')
    parts.append("</table>")
    return parts


def _errors(errors: list[dict]) -> list[str]:
    if not errors:
        return ["<h2>Last errors</h2>", '<div id="errors" class="ok">none</div>']
    return ["<h2>Last errors</h2>", '<div class="errors" id="errors">' + "\n".join(
        f"{escape(e['log'])}: {escape(e['line'])}" for e in errors) + "</div>"]


def _disk(disk: dict) -> list[str]:
    if "total" not in disk:
        return ["<h2>Disk</h2>", f'<div id="disk" class="bad">{escape(str(disk.get("error", "unknown")))}</div>']
    cls = "bad" if disk["percent_used"] >= 95 else "warn" if disk["percent_used"] >= 85 else "ok"
    return ["<h2>Disk</h2>", f'<div id="disk" class="{cls}">{human_bytes(disk["used"])} used of '
            f'{human_bytes(disk["total"])} ({disk["percent_used"]:.0f}%), {human_bytes(disk["free"])} free</div>']
