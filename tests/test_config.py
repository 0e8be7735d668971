"""Settings: defaults, strict parsing, and the one-line error with exit status 2 for each bad value."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from avoviirscollector import config
from avoviirscollector.config import DEFAULTS, PACKAGE_ETC, SettingsError, load_settings

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parent.parent


def test_defaults():
    s = load_settings({})
    assert s.viirs_base == Path("/viirs") and s.sdr_dir == Path("/viirs/sdr") and s.tmp_dir == Path("/viirs/tmp")
    assert (s.task_port, s.update_port, s.publish_port) == (19091, 19191, 29092)
    assert s.num_gina_connections == 4 and s.gina_backfill_days == 2 and s.facilities == ()  # every station
    assert s.mirror_poll_seconds == 15
    assert s.retention_days is None and not s.mail_enabled
    assert s.gina_url == "http://nrt-status.gina.alaska.edu"
    assert s.mirror_gina_config == PACKAGE_ETC / "mirror_gina.yaml"
    assert (s.mirror_give_up_tries, s.mirror_stale_minutes, s.silence_hours) == (10, 15, 3)
    assert s.min_free.bytes_of(1000) == 50 and str(s.min_free) == "5%"
    assert load_settings({"VIIRS_MIN_FREE": "20G"}).min_free.bytes_of(1) == 20 * 10**9
    assert load_settings({"VIIRS_MIN_FREE": "0"}).min_free.off


def test_values_are_read():
    s = load_settings({"VIIRS_BASE": "/data/v", "VIIRS_RETENTION": "0", "NUM_GINA_CONNECTIONS": "8",
                       "GINA_BACKFILL_DAYS": "1", "VIIRS_FACILITY": "uafgina", "MAILHOST": "mail",
                       "LOG_SENDER": "a@b", "LOG_RECIPIENT": "c@d", "GINA_URL": "http://127.0.0.1:8080/",
                       "TASK_PORT": "1", "UPDATE_PORT": "2", "PUBLISH_PORT": "65535"})
    assert s.retention_days == 0 and s.num_gina_connections == 8 and s.facilities == ("uafgina",)
    assert s.mail_enabled and s.gina_url == "http://127.0.0.1:8080"
    assert (s.task_port, s.update_port, s.publish_port) == (1, 2, 65535)


def test_settings_are_frozen():
    s = load_settings({})
    with pytest.raises(AttributeError):
        s.task_port = 1  # type: ignore[misc]


BAD = [
    ("TASK_PORT", "abc", "TASK_PORT='abc' is not valid: expected a whole number from 1 to 65535"),
    ("UPDATE_PORT", "70000", "UPDATE_PORT='70000' is out of range: expected a whole number from 1 to 65535"),
    ("PUBLISH_PORT", "0", "PUBLISH_PORT='0' is out of range"),
    ("MONITOR_PORT", "x1", "MONITOR_PORT='x1' is not valid: expected a whole number from 1 to 65535"),
    ("VIIRS_FACILITY", "fairbanks", "VIIRS_FACILITY='fairbanks' is not valid: expected all, or one or more of "
                                    "gilmore, uafgina, barrow, uaf5 separated by commas or blanks"),
    ("VIIRS_FACILITY", "all, gilmore", "VIIRS_FACILITY='all, gilmore' is not valid: expected all, or one or more of "
                                       "gilmore, uafgina, barrow, uaf5 separated by commas or blanks"),
    ("MIRROR_POLL_SECONDS", "2", "MIRROR_POLL_SECONDS='2' is out of range: expected 0 or a whole number from 5 to 55"),
    ("MIRROR_POLL_SECONDS", "60", "MIRROR_POLL_SECONDS='60' is out of range: expected a whole number from 0 to 55"),
    ("VIIRS_RETENTION", "-1", "VIIRS_RETENTION='-1' is out of range: expected a whole number >= 0"),
    ("VIIRS_RETENTION", "seven", "VIIRS_RETENTION='seven' is not valid"),
    ("NUM_GINA_CONNECTIONS", "0", "NUM_GINA_CONNECTIONS='0' is out of range: expected a whole number from 1 to 16"),
    ("NUM_GINA_CONNECTIONS", "2.5", "NUM_GINA_CONNECTIONS='2.5' is not valid"),
    ("GINA_BACKFILL_DAYS", "-2", "GINA_BACKFILL_DAYS='-2' is out of range"),
    ("GINA_URL", "ftp://example.org", "GINA_URL='ftp://example.org' is not valid: expected an http:// or https://"),
    ("TLE_URL", "not a url", "TLE_URL='not a url' is not valid"),
    ("MIRROR_GIVE_UP_TRIES", "0", "MIRROR_GIVE_UP_TRIES='0' is out of range: expected a whole number from 1 to 1000"),
    ("MIRROR_STALE_MINUTES", "soon", "MIRROR_STALE_MINUTES='soon' is not valid: expected a whole number from 2"),
    ("VIIRS_MIN_FREE", "lots", "VIIRS_MIN_FREE='lots' is not valid: expected a percentage 0-90 (e.g. 5%) or bytes"),
    ("VIIRS_MIN_FREE", "95%", "VIIRS_MIN_FREE='95%' is out of range"),
    ("SILENCE_HOURS", "0", "SILENCE_HOURS='0' is out of range: expected a whole number from 1 to 720"),
]


@pytest.mark.parametrize("name,value,message", BAD)
def test_bad_value_is_named(name, value, message):
    with pytest.raises(SettingsError) as err:
        load_settings({name: value})
    assert message in str(err.value)


def test_ports_must_differ():
    with pytest.raises(SettingsError, match="must differ"):
        load_settings({"TASK_PORT": "29092"})
    with pytest.raises(SettingsError, match="MONITOR_PORT must differ"):
        load_settings({"MONITOR_PORT": "19191"})


def test_monitor_port():
    assert load_settings({}).monitor_port == 29093
    assert load_settings({"MONITOR_PORT": "8080"}).monitor_port == 8080


@pytest.mark.parametrize("program", ["msg_publisher", "avoviirscollector supervise"])
@pytest.mark.parametrize("name,value,message", BAD[:5])
def test_program_stops_with_one_line_and_status_2(program, name, value, message, tmp_path):
    env = {"PATH": "/usr/bin:/bin", "VIIRS_BASE": str(tmp_path), name: value}
    command = [str(BIN / program.split()[0]), *program.split()[1:]]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.stderr


def test_allowed_clients():
    assert load_settings({}).allowed_clients is None
    s = load_settings({"ALLOWED_CLIENTS": "127.0.0.1, 192.0.2.0/24 2001:db8::/32"})
    assert str(s.allowed_clients) == "127.0.0.1, 192.0.2.0/24, 2001:db8::/32"
    with pytest.raises(SettingsError) as err:
        load_settings({"ALLOWED_CLIENTS": "127.0.0.1 workerhost"})
    assert str(err.value).startswith("ALLOWED_CLIENTS='127.0.0.1 workerhost' is not valid: 'workerhost' is not an")


def test_mail_login(tmp_path):
    secret = tmp_path / "mail.pw"
    secret.write_text("s3cret\n")
    s = load_settings({"MAIL_USER": "avo", "MAIL_PASSWORD_FILE": str(secret)})
    assert s.mail_user == "avo" and s.mail_password_file == secret
    assert "s3cret" not in repr(s)
    with pytest.raises(SettingsError, match="MAIL_USER='avo' needs MAIL_PASSWORD_FILE"):
        load_settings({"MAIL_USER": "avo"})
    with pytest.raises(SettingsError, match="MAIL_PASSWORD_FILE=.* is set but MAIL_USER is not"):
        load_settings({"MAIL_PASSWORD_FILE": str(secret)})
    with pytest.raises(SettingsError, match="MAIL_PASSWORD_FILE=.* is not valid: expected a readable file"):
        load_settings({"MAIL_USER": "avo", "MAIL_PASSWORD_FILE": str(tmp_path / "missing")})


def test_bad_allowed_clients_stops_supervise_with_one_line(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "VIIRS_BASE": str(tmp_path), "ALLOWED_CLIENTS": "10.0.0.1/8"}
    result = subprocess.run([str(BIN / "avoviirscollector"), "supervise"], env=env, capture_output=True, text=True,
                            timeout=60, cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "ALLOWED_CLIENTS='10.0.0.1/8' is not valid" in lines[0], lines



# The settings whose default is one value, as the README's table and docker-compose.yml write it
SHOWN_DEFAULTS = {
    "VIIRS_BASE": str(DEFAULTS.viirs_base),
    "NUM_GINA_CONNECTIONS": str(DEFAULTS.num_gina_connections),
    "GINA_BACKFILL_DAYS": str(DEFAULTS.gina_backfill_days),
    "VIIRS_FACILITY": "all" if DEFAULTS.facilities == () else ",".join(DEFAULTS.facilities),
    "GINA_URL": DEFAULTS.gina_url,
    "TASK_PORT": str(DEFAULTS.task_port),
    "UPDATE_PORT": str(DEFAULTS.update_port),
    "PUBLISH_PORT": str(DEFAULTS.publish_port),
    "MONITOR_PORT": str(DEFAULTS.monitor_port),
    "RECOVERY_HOURS": str(DEFAULTS.recovery_hours),
    "MIRROR_GIVE_UP_TRIES": str(DEFAULTS.mirror_give_up_tries),
    "VIIRS_MIN_FREE": str(DEFAULTS.min_free),
    "MIRROR_STALE_MINUTES": str(DEFAULTS.mirror_stale_minutes),
    "SILENCE_HOURS": str(DEFAULTS.silence_hours),
    "MIRROR_POLL_SECONDS": str(DEFAULTS.mirror_poll_seconds),
}


def test_the_readme_and_compose_file_show_the_defaults_config_py_has():
    """config.py's dataclass is the one place a default is written: the README's settings table, the table in
    config.py's docstring and docker-compose.yml (``${NAME:-default}``, or the value it fixes) say the same, and
    every variable load_settings reads is in both tables and in docker-compose.yml."""
    readme = dict(re.findall(r"^\| `([A-Z_]+)` \| `?([^`|]*?)`? \|", (REPO / "README.md").read_text(), re.M))
    doc = {}
    for names, default in re.findall(r"^\| ([A-Z_, ]+) \| ([^|]+?) \|", config.__doc__, re.M):
        for name in names.split(", "):
            doc[name] = default
    environment = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]["viirscollector"]["environment"]
    for name, shown in SHOWN_DEFAULTS.items():
        assert readme.get(name) == shown, f"README: {name} default {readme.get(name)!r}, config.py {shown!r}"
        assert shown in doc.get(name, ""), f"config.py's docstring: {name} {doc.get(name)!r}, dataclass {shown!r}"
        value = str(environment[name])
        given = re.fullmatch(r"\$\{" + name + r":-(.*)\}", value)
        assert (given.group(1) if given else value) == shown, f"docker-compose.yml: {name}={value!r}, want {shown!r}"
    source = inspect.getsource(config.load_settings) + inspect.getsource(config)
    read = set(re.findall(r'(?:env\.get\(|_int\(env, |_url\(env, |_optional\(env, )"([A-Z_]+)"', source))
    assert len(read) > 20
    readme_names = {n for row in re.findall(r"^\| (`[A-Z_]+`(?:, `[A-Z_]+`)*) \|", (REPO / "README.md").read_text(),
                                             re.M) for n in re.findall(r"[A-Z_]+", row)}
    assert read - readme_names == set(), "settings missing from the README's table"
    assert read - set(doc) == set(), "settings missing from config.py's docstring"
    assert read - set(environment) - {"AVO_ETC"} == set(), "settings missing from docker-compose.yml"


PAIR = {"PAIR_PEER": "192.0.2.12", "PAIR_ADDRESS": "192.0.2.10/24", "PAIR_INTERFACE": "eth0", "PAIR_ROUTER_ID": "51",
        "PAIR_WITNESS": "192.0.2.1"}


def test_pair_is_unset_by_default_and_read_whole():
    assert load_settings({}).pair is None and DEFAULTS.pair is None
    pair = load_settings(PAIR).pair
    assert (str(pair.peer), str(pair.address), pair.interface, pair.router_id, str(pair.witness), pair.priority) == (
        "192.0.2.12", "192.0.2.10/24", "eth0", 51, "192.0.2.1", 100)
    assert load_settings({**PAIR, "PAIR_PRIORITY": "254"}).pair.priority == 254
    assert pair.replication_port == 19291
    assert load_settings({**PAIR, "PAIR_REPLICATION_PORT": "20000"}).pair.replication_port == 20000


PAIR_BAD = [
    ({"PAIR_ADDRESS": "192.0.2.10/24"}, "PAIR_ADDRESS='192.0.2.10/24' is set but PAIR_PEER is not: expected PAIR_PEER "
                                        "and PAIR_ADDRESS, PAIR_INTERFACE, PAIR_ROUTER_ID, PAIR_WITNESS all set"),
    ({"PAIR_PRIORITY": "90"}, "PAIR_PRIORITY='90' is set but PAIR_PEER is not"),
    ({"PAIR_REPLICATION_PORT": "20000"}, "PAIR_REPLICATION_PORT='20000' is set but PAIR_PEER is not"),
    ({**PAIR, "PAIR_REPLICATION_PORT": "19091"}, "PAIR_REPLICATION_PORT=19091 is one of TASK_PORT"),
    ({**PAIR, "PAIR_REPLICATION_PORT": "0"}, "PAIR_REPLICATION_PORT='0' is out of range"),
    ({**PAIR, "PAIR_PEER": "peerhost"}, "PAIR_PEER='peerhost' is not valid: expected the other host's IPv4 address"),
    ({**PAIR, "PAIR_PEER": "2001:db8::2"}, "PAIR_PEER='2001:db8::2' is not valid"),
    ({k: v for k, v in PAIR.items() if k != "PAIR_WITNESS"}, "PAIR_PEER='192.0.2.12' needs PAIR_WITNESS: expected an "
                                                             "IPv4 address both hosts reach"),
    ({k: v for k, v in PAIR.items() if k != "PAIR_ROUTER_ID"}, "PAIR_PEER='192.0.2.12' needs PAIR_ROUTER_ID"),
    ({**PAIR, "PAIR_ADDRESS": "192.0.2.10"}, "PAIR_ADDRESS='192.0.2.10' is not valid: expected the virtual IPv4 "
                                             "address with its prefix length"),
    ({**PAIR, "PAIR_ADDRESS": "192.0.2.255/24"}, "PAIR_ADDRESS='192.0.2.255/24' is not valid"),
    ({**PAIR, "PAIR_ADDRESS": "192.0.2.12/24"}, "PAIR_ADDRESS='192.0.2.12/24' is PAIR_PEER's own address"),
    ({**PAIR, "PAIR_INTERFACE": "eth0:1"}, "PAIR_INTERFACE='eth0:1' is not valid: expected a network interface name"),
    ({**PAIR, "PAIR_INTERFACE": "a-very-long-interface"}, "PAIR_INTERFACE='a-very-long-interface' is not valid"),
    ({**PAIR, "PAIR_ROUTER_ID": "0"}, "PAIR_ROUTER_ID='0' is out of range: expected a whole number from 1 to 255"),
    ({**PAIR, "PAIR_PRIORITY": "255"}, "PAIR_PRIORITY='255' is out of range: expected a whole number from 1 to 254"),
    ({**PAIR, "PAIR_WITNESS": "192.0.2.12"}, "PAIR_WITNESS='192.0.2.12' is PAIR_PEER: expected a third address"),
    ({**PAIR, "PAIR_WITNESS": "192.0.2.10"}, "PAIR_WITNESS='192.0.2.10' is PAIR_ADDRESS"),
    ({**PAIR, "PAIR_WITNESS": "gateway"}, "PAIR_WITNESS='gateway' is not valid: expected an IPv4 address"),
]


@pytest.mark.parametrize("env,message", PAIR_BAD)
def test_bad_pair_setting_is_named(env, message):
    with pytest.raises(SettingsError) as err:
        load_settings(env)
    assert message in str(err.value)
