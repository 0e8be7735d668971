"""The gatherers' programs come from ``viirs.PRODUCTS`` (gatherers.py): ``supervise`` writes them, the repo's
supervisord.conf includes them, and a sixth product is one more entry in PRODUCTS plus its section in the ini,
which ``supervise`` checks (it refuses to start without it). supervisord's own configuration reader is the judge
of what the file gives."""

from __future__ import annotations

import configparser
import logging
import os
import shutil
from pathlib import Path

import pytest
from supervisor.options import ServerOptions

from avoviirscollector import cli
from avoviirscollector.config import PACKAGE_ETC
from avoviirscollector.gatherers import GROUP, PROGRAMS_FILE, ini_problems, program_names, programs_text, write_programs
from avoviirscollector.viirs import INI_PATTERN, PRODUCTS

REPO = Path(__file__).resolve().parent.parent
SIXTH = {**PRODUCTS, "fog": ("GMTCO", "SVM15", "SVM16", "SVI04")}
FOG_SECTION = f"""
[fog]
pattern = {INI_PATTERN.replace("{platform_name}", "{platform_shortname}")}
critical_files = :GMTCO,:SVM15,:SVM16,:SVI04
wanted_files = :GMTCO,:SVM15,:SVM16,:SVI04
all_files = :GMTCO,:SVM15,:SVM16,:SVI04
variable_tags = proctime,source,start_time,end_time
topics = /AVO/viirs/sdr
publish_topic = /AVO/viirs/granule/fog
time_name = start_time
time_tolerance = 1
timeliness = 600
check_existing_files_after_start = False
nameservers = localhost
"""


def supervisord_groups(base: Path, monkeypatch) -> dict[str, list]:
    """The repo's supervisord.conf as supervisord reads it, with ``base`` as VIIRS_BASE: {group: its programs'
    configs}."""
    (base / "log").mkdir(exist_ok=True)
    for name, value in {"VIIRS_BASE": str(base), "AVO_BIN": "/bin", "AVO_ETC": str(PACKAGE_ETC),
                        "AVO_SUPERVISOR_USER": "u", "AVO_SUPERVISOR_PASSWORD_SHA": "{SHA}0"}.items():
        monkeypatch.setenv(name, value)
    options = ServerOptions()
    options.configfile = str(REPO / "supervisord.conf")
    options.process_config(do_usage=False)
    return {group.name: group.process_configs for group in options.process_group_configs}


def test_the_programs_are_the_products_alike_but_for_the_product():
    parser = configparser.RawConfigParser()
    parser.read_string(programs_text(PRODUCTS))
    names = program_names(PRODUCTS)
    assert parser.sections() == [f"program:{name}" for name in names] + [f"group:{GROUP}"]
    assert parser[f"group:{GROUP}"]["programs"].split(",") == names
    for product, name in zip(PRODUCTS, names, strict=True):
        section = dict(parser[f"program:{name}"])
        assert section.pop("command").endswith(f"segment_gatherer.py -c %(ENV_AVO_ETC)s/segment_gatherer.ini -C "
                                               f"{product}")
        assert section == {key: value for key, value in parser[f"program:{names[0]}"].items() if key != "command"}
        assert section["stopsignal"] == "INT"  # SIGTERM would wait for every open slot
    with pytest.raises(ValueError):
        programs_text([])


def test_supervisord_reads_the_repos_file_with_the_written_programs(tmp_path, monkeypatch):
    assert "[program:segment_gatherer" not in (REPO / "supervisord.conf").read_text()  # none written by hand
    (tmp_path / "run").mkdir()
    path = write_programs(tmp_path, PRODUCTS)
    assert path == tmp_path / PROGRAMS_FILE and os.listdir(tmp_path / "run") == ["gatherers.conf"]
    groups = supervisord_groups(tmp_path, monkeypatch)
    assert [config.name for config in groups[GROUP]] == program_names(PRODUCTS)
    tir = next(config for config in groups[GROUP] if config.name == "segment_gatherer-tir")
    assert tir.command.endswith("-C tir") and tir.command.startswith("/bin/avo_wait_for trollstalker_viirs -- ")
    assert {"nameserver", "trollstalker", "task_broker", "msg_publisher"} <= set(groups)


@pytest.fixture
def root_logging():
    """The root logger's handlers and level as they were before the test (supervise sets its own)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def test_a_sixth_product_is_its_entry_in_products_and_its_section_in_the_ini(tmp_path, monkeypatch, capsys,
                                                                              root_logging):
    """PRODUCTS with a sixth product: supervise refuses the package's ini (no section for it), saying so; given an
    etc folder whose ini has the section, it writes six programs before it would exec supervisord, and supervisord's
    reader finds six gatherers in the repo's file."""
    monkeypatch.setattr(cli, "PRODUCTS", SIXTH)
    base = tmp_path / "viirs"
    monkeypatch.setenv("VIIRS_BASE", str(base))
    monkeypatch.setenv("AVO_ETC", str(PACKAGE_ETC))
    assert cli.main(["supervise", "-c", str(REPO / "supervisord.conf")]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"avoviirscollector: {PACKAGE_ETC / 'segment_gatherer.ini'}: no section [fog] for the product fog"]
    assert not base.exists()  # nothing made before the check

    etc = tmp_path / "etc"
    shutil.copytree(PACKAGE_ETC, etc)
    (etc / "segment_gatherer.ini").write_text((PACKAGE_ETC / "segment_gatherer.ini").read_text() + FOG_SECTION)
    assert ini_problems(etc / "segment_gatherer.ini", SIXTH) == []
    monkeypatch.setenv("AVO_ETC", str(etc))
    execs = []

    def execve(path, argv, env):  # supervise's last step, where supervisord would take over this process
        execs.append((path, argv, env))
        raise SystemExit(0)

    monkeypatch.setattr(cli.os, "execve", execve)
    with pytest.raises(SystemExit):
        cli.main(["supervise", "-c", str(REPO / "supervisord.conf")])
    assert execs and execs[0][2]["AVO_ETC"] == str(etc)
    groups = supervisord_groups(base, monkeypatch)
    assert [config.name for config in groups[GROUP]] == program_names(SIXTH)
    assert groups[GROUP][-1].command.endswith("-C fog")


def test_the_ini_check_names_each_disagreement(tmp_path):
    ini = tmp_path / "segment_gatherer.ini"
    assert ini_problems(ini, PRODUCTS) == [f"{ini}: cannot be read"]
    text = (PACKAGE_ETC / "segment_gatherer.ini").read_text()
    ini.write_text(text.replace("all_files = :GITCO,:SVI05", "all_files = :GITCO")
                   .replace("publish_topic = /AVO/viirs/granule/dnb", "publish_topic = /AVO/viirs/granule/dnb2"))
    assert ini_problems(ini, PRODUCTS) == [
        f"{ini}: [tir] all_files is ':GITCO', not :GITCO,:SVI05",
        f"{ini}: [dnb] publish_topic is '/AVO/viirs/granule/dnb2', not /AVO/viirs/granule/dnb",
    ]
