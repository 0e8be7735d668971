"""supervisord's segment_gatherer programs, one per product of ``viirs.PRODUCTS``: written by ``supervise``.

``avoviirscollector supervise`` writes ``$VIIRS_BASE/run/gatherers.conf`` (atomically) before it starts supervisord,
and the repo's ``supervisord.conf`` includes it (``[include] files = %(ENV_VIIRS_BASE)s/run/gatherers.conf``): a
``[program:segment_gatherer-<product>]`` for each product, all alike but for the product, and the group
``gatherers`` of them all, so that supervisord stops them together. A product added to ``PRODUCTS`` gets its
gatherer program so; its section of ``segment_gatherer.ini`` (the files it needs, its topic) is checked against
``PRODUCTS`` at each start (:func:`ini_problems`: ``supervise`` refuses to start, with one line each, an
``$AVO_ETC/segment_gatherer.ini`` that lacks a product or disagrees with it) and by the tests, as the fetch order
``PRODUCT_FETCH_ORDER`` is (tests/test_mirror_gina.py).

Each gatherer: a ``dataset`` message on ``/AVO/viirs/granule/<product>`` per complete granule. SIGINT stops it in
1-2 s; SIGTERM would wait for every open slot (up to the 600 s timeliness). It is started once trollstalker is
registered with the nameserver (avo_wait_for): a gatherer that starts first can miss trollstalker's address
announcement and then never hear a file.
"""

from __future__ import annotations

import configparser
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

#: the file supervise writes and supervisord.conf includes, under $VIIRS_BASE
PROGRAMS_FILE = Path("run") / "gatherers.conf"
PROGRAM_PREFIX = "segment_gatherer-"
GROUP = "gatherers"

_COMMAND = ("%(ENV_AVO_BIN)s/avo_wait_for trollstalker_viirs -- %(ENV_AVO_BIN)s/segment_gatherer.py "
            "-c %(ENV_AVO_ETC)s/segment_gatherer.ini -C {product}")
_PROGRAM = "[program:{prefix}{product}]\ncommand=" + _COMMAND + """
priority=30
startsecs=2
stopsignal=INT
stopwaitsecs=10
autorestart=true
startretries=20
redirect_stderr=true
stdout_logfile=%(ENV_VIIRS_BASE)s/log/%(program_name)s.log
stdout_logfile_maxbytes=20MB
stdout_events_enabled=true
"""


def program_names(products: Iterable[str]) -> list[str]:
    """The supervisord program of each product's gatherer, in the order of ``products``."""
    return [f"{PROGRAM_PREFIX}{product}" for product in products]


def programs_text(products: Iterable[str]) -> str:
    """The included file: one program per product, then their group."""
    products = list(products)
    if not products:
        raise ValueError("no products: the suite needs at least one gatherer")
    head = ("; Written by `avoviirscollector supervise` from avoviirscollector.viirs.PRODUCTS at each start, included\n"
            "; by supervisord.conf: edit PRODUCTS, not this file (avoviirscollector/gatherers.py).\n\n")
    sections = [_PROGRAM.format(prefix=PROGRAM_PREFIX, product=product) for product in products]
    group = f"[group:{GROUP}]\nprograms={','.join(program_names(products))}\npriority=30\n"
    return head + "\n".join([*sections, group])


def write_programs(viirs_base: Path, products: Iterable[str]) -> Path:
    """Write ``$VIIRS_BASE/run/gatherers.conf`` for ``products`` (a temp file, then one rename); its path."""
    path = viirs_base / PROGRAMS_FILE
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(programs_text(products))
    os.replace(tmp, path)
    return path


def ini_problems(ini: Path, products: Mapping[str, Sequence[str]]) -> list[str]:
    """What in the gatherers' ini ``ini`` disagrees with ``products`` (product -> its segments): a product without
    its section, a section whose files (critical, wanted, all) are not the product's segments, or whose
    ``publish_topic`` is not the product's topic. Empty when it agrees."""
    parser = configparser.RawConfigParser()
    try:
        if not parser.read(ini):
            return [f"{ini}: cannot be read"]
    except configparser.Error as err:
        return [f"{ini}: {err}"]
    problems = []
    for product, segments in products.items():
        if not parser.has_section(product):
            problems.append(f"{ini}: no section [{product}] for the product {product}")
            continue
        section = parser[product]
        wanted = sorted(f":{segment}" for segment in segments)
        for key in ("critical_files", "wanted_files", "all_files"):
            if sorted(section.get(key, "").split(",")) != wanted:
                problems.append(f"{ini}: [{product}] {key} is {section.get(key)!r}, not {','.join(wanted)}")
        if section.get("publish_topic") != f"/AVO/viirs/granule/{product}":
            problems.append(f"{ini}: [{product}] publish_topic is {section.get('publish_topic')!r}, not "
                            f"/AVO/viirs/granule/{product}")
    return problems
