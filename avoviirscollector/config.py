"""Every setting of the suite, read once from the environment into one frozen object.

Programs call :func:`settings_or_exit` once in ``main()``; nothing reads ``os.environ`` anywhere else. A bad value
stops the program at start with one line on stderr naming the variable and what it accepts, and exit status 2.

| variable | default | accepts |
|---|---|---|
| VIIRS_BASE | /viirs | an absolute path, or a relative one (made absolute at start) |
| VIIRS_RETENTION | unset (keep everything) | whole number of days >= 0 |
| NUM_GINA_CONNECTIONS | 4 | whole number 1..16 |
| GINA_BACKFILL_DAYS | 2 | whole number 0..30 |
| VIIRS_FACILITY | all | all (every receiving station, as GINA recommends), or gilmore, uafgina, barrow, uaf5 |
| MAILHOST, LOG_SENDER, LOG_RECIPIENT | unset | mail of ERROR records when all three are set |
| GINA_URL | http://nrt-status.gina.alaska.edu | an http:// or https:// URL |
| MIRROR_GINA_CONFIG | the package's etc/mirror_gina.yaml | path of a YAML queue file |
| TASK_PORT, UPDATE_PORT, PUBLISH_PORT, MONITOR_PORT | 19091, 19191, 29092, 29093 | TCP port 1..65535, all different |
| TLE_URL | celestrak's weather set | an http:// or https:// URL |
| RECOVERY_HOURS | 6 | hours 1..168: how far back every complete granule in sdr/ is made sure to be in a task |
| AVO_ETC | the package's etc/ | folder holding trollstalker.ini and segment_gatherer.ini |
| ALLOWED_CLIENTS | unset (every address) | IPv4/IPv6 addresses and CIDR blocks, separated by commas or blanks |
| MAIL_USER | unset (no login) | user name for the mail relay; requires MAIL_PASSWORD_FILE, and TLS (see mailer.py) |
| MAIL_PASSWORD_FILE | unset | a readable file holding the mail password (its first line); only with MAIL_USER |
| MIRROR_GIVE_UP_TRIES | 10 | 1..1000: tries before mirror_gina gives up on a file that fails by its own fault |
| MIRROR_STALE_MINUTES | 15 | whole number 2..10080: unhealthy when no mirror_gina run succeeded for this long |
| VIIRS_MIN_FREE | 5% | percent of the filesystem (e.g. 5%) or bytes (e.g. 20G, 500M, 1000000); 0 turns it off |
| SILENCE_HOURS | 3 | whole number 1..720: unhealthy when a queued satellite had nothing new listed for this long |
| MIRROR_POLL_SECONDS | 15 | 0 or 5..55: a mirror_gina run lists what changed this often (0: once a run, by days) |
| HEARTBEAT_TTL | 10 | seconds 2..300: clients of the public ports drop a connection silent this long (heartbeat.py) |
| PAIR_PEER | unset (one host) | the other host's IPv4 address: two hosts, one collector (pair/); needs the next four |
| PAIR_ADDRESS | unset | with PAIR_PEER: the virtual IPv4 address with its prefix (e.g. 192.0.2.10/24) |
| PAIR_INTERFACE | unset | with PAIR_PEER: the interface that carries PAIR_ADDRESS (e.g. eth0) |
| PAIR_ROUTER_ID | unset | with PAIR_PEER: VRRP virtual router id 1..255, the same on both hosts, unique on the LAN |
| PAIR_WITNESS | unset | with PAIR_PEER: an IPv4 address a host must reach to hold PAIR_ADDRESS (the site's gateway) |
| PAIR_PRIORITY | 100 (with PAIR_PEER) | VRRP priority 1..254: the higher keeps the address when two actives meet |
| PAIR_REPLICATION_PORT | 19291 (with PAIR_PEER) | TCP port 1..65535, not one of the four above: hand-outs to the peer |

The pair's settings are all unset by default: a single host, and nothing of pair/ starts. PAIR_PEER set makes
the pair: PAIR_ADDRESS, PAIR_INTERFACE, PAIR_ROUTER_ID and PAIR_WITNESS are then needed; any of them set without
PAIR_PEER is an error (IPv4 only: VRRP over IPv6 needs version 3, which keepalived's pair here does not use).
"""

from __future__ import annotations

import ipaddress
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from avoviirscollector.allowlist import AllowList, AllowListError, parse_allowlist

#: GINA's receiving stations, as its own scripts name them (``VIIRS_FACILITY`` takes any of them, or ``all``)
FACILITIES = ("gilmore", "uafgina", "barrow", "uaf5")
DEFAULT_GINA_URL = "http://nrt-status.gina.alaska.edu"
DEFAULT_TLE_URL = "https://celestrak.org/NORAD/elements/gp.php?GROUP=weather&FORMAT=tle"
PACKAGE_ETC = Path(__file__).resolve().parent / "etc"


@dataclass(frozen=True)
class MinFree:
    """VIIRS_MIN_FREE: the free space to keep under VIIRS_BASE, a percentage of the filesystem or bytes."""

    percent: float | None = 5.0
    size: int | None = None

    def bytes_of(self, total: int) -> int:
        """The free bytes wanted on a filesystem of ``total`` bytes (0: off)."""
        if self.size is not None:
            return self.size
        return int(total * (self.percent or 0.0) / 100)

    @property
    def off(self) -> bool:
        return not self.size and not self.percent

    def __str__(self) -> str:
        return f"{self.percent:g}%" if self.size is None else f"{self.size} bytes"


_UNITS = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def _min_free(env: Mapping[str, str]) -> MinFree:
    raw = env.get("VIIRS_MIN_FREE", "").strip()
    if raw == "":
        return DEFAULTS.min_free
    accepted = "a percentage 0-90 (e.g. 5%) or bytes with an optional K, M, G or T (e.g. 20G); 0 turns it off"
    text = raw.upper().replace(" ", "")
    try:
        if text.endswith("%"):
            percent = float(text[:-1])
            if not 0 <= percent <= 90:
                raise SettingsError(f"VIIRS_MIN_FREE={raw!r} is out of range: expected {accepted}")
            return MinFree(percent=percent)
        text = text[:-1] if text.endswith("B") else text
        unit = text[-1] if text and text[-1] in _UNITS else ""
        number = float(text[: len(text) - len(unit)])
    except SettingsError:
        raise
    except ValueError:
        raise SettingsError(f"VIIRS_MIN_FREE={raw!r} is not valid: expected {accepted}") from None
    if number < 0 or number != number or number * _UNITS[unit] > 10**18:
        raise SettingsError(f"VIIRS_MIN_FREE={raw!r} is out of range: expected {accepted}")
    return MinFree(percent=None, size=int(number * _UNITS[unit]))


class SettingsError(ValueError):
    """A setting has a value the suite does not accept; the message is the one line shown to the operator."""


@dataclass(frozen=True)
class PairSettings:
    """Two hosts, one collector (the PAIR_* settings): what keepalived on this host needs to share one address
    with the other host (pair/keepalived.py writes its configuration from this). Only there when PAIR_PEER is set.

    ``address`` is the virtual (service) address with its prefix: workers, subscribers and operators use it only.
    ``witness`` is an address both hosts must reach to hold it (a host that cannot, steps down)."""

    peer: ipaddress.IPv4Address
    address: ipaddress.IPv4Interface
    interface: str
    router_id: int
    witness: ipaddress.IPv4Address
    priority: int = 100
    replication_port: int = 19291  # task_broker's hand-outs to the other host (broker/replication.py)


@dataclass(frozen=True)
class Settings:
    """The suite's settings (SPEC section 3). Build with :func:`load_settings`."""

    viirs_base: Path = Path("/viirs")
    retention_days: int | None = None
    num_gina_connections: int = 4
    gina_backfill_days: int = 2
    facilities: tuple[str, ...] = ()  # the stations asked for; (): all of them (no facility in the query)
    mailhost: str | None = None
    log_sender: str | None = None
    log_recipient: str | None = None
    gina_url: str = DEFAULT_GINA_URL
    mirror_gina_config: Path = PACKAGE_ETC / "mirror_gina.yaml"
    task_port: int = 19091
    update_port: int = 19191
    publish_port: int = 29092
    monitor_port: int = 29093
    tle_url: str = DEFAULT_TLE_URL
    recovery_hours: int = 6
    etc_dir: Path = PACKAGE_ETC
    allowed_clients: AllowList | None = None  # None: every address may connect (SPEC section 12)
    mail_user: str | None = None
    mail_password_file: Path | None = None  # read by the mailer when it logs in; never kept here
    mirror_give_up_tries: int = 10
    min_free: MinFree = MinFree()
    mirror_stale_minutes: int = 15
    silence_hours: int = 3
    mirror_poll_seconds: int = 15
    heartbeat_ttl: int = 10  # seconds (ZMTP heartbeats of the public sockets, see heartbeat.py)
    pair: PairSettings | None = None  # None: one host (PAIR_PEER unset); else two hosts share PAIR_ADDRESS

    @property
    def sdr_dir(self) -> Path:
        """Placed, verified granule files: the only directory trollstalker watches."""
        return self.viirs_base / "sdr"

    @property
    def tmp_dir(self) -> Path:
        """Partial downloads; same filesystem as ``sdr/`` so placement is one rename."""
        return self.viirs_base / "tmp"

    @property
    def log_dir(self) -> Path:
        return self.viirs_base / "log"

    @property
    def elements_dir(self) -> Path:
        """TLE files."""
        return self.viirs_base / "elements"

    @property
    def state_dir(self) -> Path:
        """What must survive a restart: task queue, download journal."""
        return self.viirs_base / "state"

    @property
    def mail_enabled(self) -> bool:
        return bool(self.mailhost and self.log_sender and self.log_recipient)

    def make_dirs(self) -> None:
        """Create the directories of SPEC section 2 (readable by the operator)."""
        for path in (self.sdr_dir, self.tmp_dir, self.log_dir, self.elements_dir, self.state_dir):
            path.mkdir(mode=0o755, parents=True, exist_ok=True)


#: the default of every setting: the one place they are written (README's table and docker-compose.yml are checked
#: against it by tests/test_config.py)
DEFAULTS = Settings()


def _int(env: Mapping[str, str], name: str, default: int | None, low: int, high: int | None) -> int | None:
    raw = env.get(name, "").strip()
    if raw == "":
        return default
    accepted = f"a whole number from {low} to {high}" if high is not None else f"a whole number >= {low}"
    try:
        value = int(raw, 10)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not valid: expected {accepted}") from None
    if value < low or (high is not None and value > high):
        raise SettingsError(f"{name}={raw!r} is out of range: expected {accepted}")
    return value


def _url(env: Mapping[str, str], name: str, default: str) -> str:
    raw = env.get(name, "").strip()
    if raw == "":
        return default
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingsError(f"{name}={raw!r} is not valid: expected an http:// or https:// URL with a host")
    return raw.rstrip("/")


def _optional(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(name, "").strip()
    return raw or None


def _allowed_clients(env: Mapping[str, str]) -> AllowList | None:
    raw = env.get("ALLOWED_CLIENTS", "")
    try:
        return parse_allowlist(raw)
    except AllowListError as err:
        raise SettingsError(f"ALLOWED_CLIENTS={raw.strip()!r} is not valid: {err}; expected IPv4 or IPv6 addresses "
                            f"and CIDR blocks separated by commas or blanks") from None


def _mail_login(env: Mapping[str, str]) -> tuple[str | None, Path | None]:
    user = _optional(env, "MAIL_USER")
    raw = env.get("MAIL_PASSWORD_FILE", "").strip()
    if user is None:
        if raw:
            raise SettingsError(f"MAIL_PASSWORD_FILE={raw!r} is set but MAIL_USER is not: expected both or neither")
        return None, None
    if not raw:
        raise SettingsError(f"MAIL_USER={user!r} needs MAIL_PASSWORD_FILE: expected the path of a file holding the "
                            f"mail password")
    path = Path(raw).absolute()
    if not path.is_file() or not os.access(path, os.R_OK):
        raise SettingsError(f"MAIL_PASSWORD_FILE={raw!r} is not valid: expected a readable file holding the mail "
                            f"password")
    return user, path


def parse_facilities(raw: object, name: str) -> tuple[str, ...]:
    """``all`` (or nothing) -> () (every station); else the station names given, in order, each once (commas or
    blanks between them; the queue file may give a YAML list). Raises :class:`SettingsError` naming ``name``."""
    items = [str(item) for item in raw] if isinstance(raw, (list, tuple)) else str(raw).replace(",", " ").split()
    accepted = f"all, or one or more of {', '.join(FACILITIES)} separated by commas or blanks"
    if not items or items == ["all"]:
        return ()
    wrong = [item for item in items if item not in FACILITIES]
    if wrong:
        raise SettingsError(f"{name}={raw if isinstance(raw, str) else items!r} is not valid: expected {accepted}")
    return tuple(dict.fromkeys(items))


def _poll_seconds(env: Mapping[str, str]) -> int:
    value = _int(env, "MIRROR_POLL_SECONDS", DEFAULTS.mirror_poll_seconds, 0, 55)
    if 0 < value < 5:
        raise SettingsError(f"MIRROR_POLL_SECONDS={env['MIRROR_POLL_SECONDS'].strip()!r} is out of range: expected "
                            f"0 or a whole number from 5 to 55")
    return value


#: the PAIR_* settings: all or none (PAIR_PRIORITY has a default)
PAIR_NEEDED = ("PAIR_ADDRESS", "PAIR_INTERFACE", "PAIR_ROUTER_ID", "PAIR_WITNESS")
PAIR_EXAMPLES = {"PAIR_ADDRESS": "the virtual IPv4 address with its prefix, e.g. 192.0.2.10/24",
                 "PAIR_INTERFACE": "the interface that carries PAIR_ADDRESS, e.g. eth0",
                 "PAIR_ROUTER_ID": "the VRRP virtual router id, a whole number from 1 to 255",
                 "PAIR_WITNESS": "an IPv4 address both hosts reach, e.g. the site's gateway"}
_INTERFACE_NAME = re.compile(r"[^\s/:]{1,15}")


def _ipv4(name: str, raw: str, what: str) -> ipaddress.IPv4Address:
    try:
        value = ipaddress.IPv4Address(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not valid: expected {what}") from None
    if value.is_unspecified or value.is_multicast or value.is_loopback:
        raise SettingsError(f"{name}={raw!r} is not valid: expected {what}")
    return value


def _pair_address(raw: str) -> ipaddress.IPv4Interface:
    accepted = "the virtual IPv4 address with its prefix length, e.g. 192.0.2.10/24"
    try:
        value = ipaddress.IPv4Interface(raw)
    except ValueError:
        raise SettingsError(f"PAIR_ADDRESS={raw!r} is not valid: expected {accepted}") from None
    network = value.network
    edge = value.ip in (network.network_address, network.broadcast_address) and network.prefixlen < 31
    if "/" not in raw or edge:
        raise SettingsError(f"PAIR_ADDRESS={raw!r} is not valid: expected {accepted}")
    if value.ip.is_unspecified or value.ip.is_multicast or value.ip.is_loopback:
        raise SettingsError(f"PAIR_ADDRESS={raw!r} is not valid: expected {accepted}")
    return value


def _pair(env: Mapping[str, str]) -> PairSettings | None:
    """The PAIR_* settings: None when none is set (one host); all of PAIR_NEEDED with PAIR_PEER, else an error."""
    peer_raw = _optional(env, "PAIR_PEER")
    given = {name: _optional(env, name) for name in PAIR_NEEDED}
    router_id = _int(env, "PAIR_ROUTER_ID", None, 1, 255)
    priority = _int(env, "PAIR_PRIORITY", None, 1, 254)
    replication_port = _int(env, "PAIR_REPLICATION_PORT", None, 1, 65535)
    if peer_raw is None:
        stray = [name for name, raw in given.items() if raw is not None] + (["PAIR_PRIORITY"] if priority else [])
        stray += ["PAIR_REPLICATION_PORT"] if replication_port else []
        if stray:
            raise SettingsError(f"{stray[0]}={env[stray[0]].strip()!r} is set but PAIR_PEER is not: expected "
                                f"PAIR_PEER and {', '.join(PAIR_NEEDED)} all set (two hosts), or none (one host)")
        return None
    peer = _ipv4("PAIR_PEER", peer_raw, "the other host's IPv4 address, e.g. 192.0.2.12")
    for name, raw in given.items():
        if raw is None:
            raise SettingsError(f"PAIR_PEER={peer_raw!r} needs {name}: expected {PAIR_EXAMPLES[name]}")
    address = _pair_address(given["PAIR_ADDRESS"])
    interface = given["PAIR_INTERFACE"]
    if not _INTERFACE_NAME.fullmatch(interface) or interface in (".", ".."):
        raise SettingsError(f"PAIR_INTERFACE={interface!r} is not valid: expected a network interface name of 1 to "
                            f"15 characters without blanks, '/' or ':', e.g. eth0")
    witness = _ipv4("PAIR_WITNESS", given["PAIR_WITNESS"], PAIR_EXAMPLES["PAIR_WITNESS"])
    if address.ip == peer:
        raise SettingsError(f"PAIR_ADDRESS={given['PAIR_ADDRESS']!r} is PAIR_PEER's own address: expected a free "
                            f"address that either host can take")
    if witness in (peer, address.ip):
        which = "PAIR_PEER" if witness == peer else "PAIR_ADDRESS"
        raise SettingsError(f"PAIR_WITNESS={given['PAIR_WITNESS']!r} is {which}: expected a third address both "
                            f"hosts reach (e.g. the site's gateway), not one of the pair's")
    return PairSettings(peer=peer, address=address, interface=interface, router_id=router_id, witness=witness,
                        priority=priority or PairSettings.priority,
                        replication_port=replication_port or PairSettings.replication_port)


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Parse the environment strictly; raise :class:`SettingsError` on the first bad value."""
    env = os.environ if env is None else env
    base_raw = env.get("VIIRS_BASE", "").strip() or str(DEFAULTS.viirs_base)
    config_raw = env.get("MIRROR_GINA_CONFIG", "").strip()
    mirror_config = Path(config_raw).absolute() if config_raw else DEFAULTS.mirror_gina_config
    etc_raw = env.get("AVO_ETC", "").strip()
    etc_dir = Path(etc_raw).absolute() if etc_raw else DEFAULTS.etc_dir
    for needed in ("trollstalker.ini", "segment_gatherer.ini"):
        if not (etc_dir / needed).is_file():
            raise SettingsError(f"AVO_ETC={etc_raw!r} is not valid: expected a folder holding {needed}")
    ports = {}
    for name in ("TASK_PORT", "UPDATE_PORT", "PUBLISH_PORT", "MONITOR_PORT"):
        ports[name] = _int(env, name, getattr(DEFAULTS, name.lower()), 1, 65535)
    if len(set(ports.values())) != len(ports):
        shown = ", ".join(f"{k}={v}" for k, v in ports.items())
        raise SettingsError(f"TASK_PORT, UPDATE_PORT, PUBLISH_PORT and MONITOR_PORT must differ: got {shown}")
    mail_user, mail_password_file = _mail_login(env)
    pair = _pair(env)
    if pair is not None and pair.replication_port in ports.values():
        raise SettingsError(f"PAIR_REPLICATION_PORT={pair.replication_port} is one of TASK_PORT, UPDATE_PORT, "
                            f"PUBLISH_PORT and MONITOR_PORT: expected a port of its own")
    return Settings(
        viirs_base=Path(base_raw).absolute(),
        retention_days=_int(env, "VIIRS_RETENTION", DEFAULTS.retention_days, 0, None),
        num_gina_connections=_int(env, "NUM_GINA_CONNECTIONS", DEFAULTS.num_gina_connections, 1, 16),
        gina_backfill_days=_int(env, "GINA_BACKFILL_DAYS", DEFAULTS.gina_backfill_days, 0, 30),
        facilities=parse_facilities(env.get("VIIRS_FACILITY", ""), "VIIRS_FACILITY"),
        mailhost=_optional(env, "MAILHOST"),
        log_sender=_optional(env, "LOG_SENDER"),
        log_recipient=_optional(env, "LOG_RECIPIENT"),
        gina_url=_url(env, "GINA_URL", DEFAULTS.gina_url),
        mirror_gina_config=mirror_config,
        task_port=ports["TASK_PORT"],
        update_port=ports["UPDATE_PORT"],
        publish_port=ports["PUBLISH_PORT"],
        monitor_port=ports["MONITOR_PORT"],
        tle_url=_url(env, "TLE_URL", DEFAULTS.tle_url),
        recovery_hours=_int(env, "RECOVERY_HOURS", DEFAULTS.recovery_hours, 1, 168),
        etc_dir=etc_dir,
        allowed_clients=_allowed_clients(env),
        mail_user=mail_user,
        mail_password_file=mail_password_file,
        mirror_give_up_tries=_int(env, "MIRROR_GIVE_UP_TRIES", DEFAULTS.mirror_give_up_tries, 1, 1000),
        min_free=_min_free(env),
        mirror_stale_minutes=_int(env, "MIRROR_STALE_MINUTES", DEFAULTS.mirror_stale_minutes, 2, 10080),
        silence_hours=_int(env, "SILENCE_HOURS", DEFAULTS.silence_hours, 1, 720),
        mirror_poll_seconds=_poll_seconds(env),
        heartbeat_ttl=_int(env, "HEARTBEAT_TTL", DEFAULTS.heartbeat_ttl, 2, 300),
        pair=pair,
    )


def settings_or_exit(program: str, env: Mapping[str, str] | None = None) -> Settings:
    """Load the settings, or print one line naming the bad variable and exit with status 2."""
    try:
        return load_settings(env)
    except SettingsError as err:
        print(f"{program}: bad setting: {err}", file=sys.stderr)
        raise SystemExit(2) from None
