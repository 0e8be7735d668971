"""keepalived's configuration for one host of the pair, written from the PAIR_* settings (pure: no file, no
process), and the command line that runs it.

What the configuration says, and why:

- one ``vrrp_instance`` (``avo_pair``), ``state BACKUP`` on both hosts with ``nopreempt``: at a start the first host
  whose wait of about 3.6 s ends takes the address (three missed adverts plus a skew of (256 - priority)/256 s, so a
  higher ``PAIR_PRIORITY`` is ahead by (p1 - p2)/256 s only: 39 ms for 100 against 90); afterwards the holder keeps
  it and a host that returns is the standby (a failback is a second interruption for nothing). Priority does decide
  when two actives see each other again (after a split): the lower one gives the address up;
- ``advert_int 1``: the standby takes over about 3 to 3.7 s after the active's last advert;
- ``garp_master_refresh`` (:data:`GARP_REFRESH_SECONDS`): the active repeats its gratuitous ARP every few seconds,
  not only at its takeover and when it hears a lower priority (the heal of a split). A worker whose ARP entry for
  the address names the other host (it answered last during a split, or it lost its processes with its kernel
  alive and still answers ARP for the address) sends its packets there, where they vanish, until the entry ages
  (30 s and more on Linux, and a TCP connection backs off meanwhile); with the refresh it follows within a few
  seconds. One ARP packet on the LAN every few seconds;
- ``unicast_peer`` (``PAIR_PEER``) with ``check_unicast_src``, not VRRP's multicast group 224.0.0.18: the adverts
  go to the other host only, a LAN whose switches filter multicast still carries them, and another VRRP pair on
  the site with the same router id cannot join or disturb this one (the suite's rule is no multicast on the wire);
- ``track_script`` pinging ``PAIR_WITNESS`` each second, waiting 0.3 s for the answer (``fall 2``, ``init_fail``):
  a host that cannot reach the witness goes to FAULT and gives the address up 1.3 to 2.3 s after it lost it (the
  next ping, up to 1 s later, fails after 0.3 s, the one after that 1 s later); the other host takes the address
  no sooner than 2.6 s after the last advert it heard (three adverts plus the skew of priority 100, less up to one
  advert), so an active cut off from the witness and the peer together has given the address up before the peer
  takes it. The witness is a LAN neighbour (the gateway): 0.3 s is hundreds of times its answer time;
- the notify FIFO (``vrrp_notify_fifo``) read by ``avoviirscollector pair notify``, which keepalived starts and
  stops itself: unlike notify scripts, which keepalived runs in parallel (two close changes can finish in the wrong
  order), the FIFO delivers the changes in order (keepalived.conf(5));
- ``enable_script_security`` with ``script_user root``: keepalived runs the scripts as root and refuses one whose
  path a non-root user could change.

keepalived's pid files outlive a SIGKILL, a host that lost power and a container restarted (its file system is
kept): keepalived then reads a pid that a process of today may hold (in a container, pid 1 is the new keepalived
itself) and exits 0 with "daemon is already running", for ever. :func:`running_keepalived` tells a live keepalived
on these files from a stale file, so ``avoviirscollector pair keepalived`` removes stale ones before it starts.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from avoviirscollector.config import PairSettings

#: the VRRP instance and track script names in the configuration (the notify reader keeps this instance's lines)
INSTANCE = "avo_pair"
WITNESS_SCRIPT = "avo_witness"
#: VRRP timing: adverts a second; the witness pinged each second, two misses make a FAULT, two answers undo it
ADVERT_SECONDS = 1
WITNESS_FALL = 2
WITNESS_RISE = 2
WITNESS_WAIT = 0.3  # seconds a ping waits for the witness's answer
GARP_REFRESH_SECONDS = 5  # the active's gratuitous ARP repeated this often


@dataclass(frozen=True)
class KeepalivedFiles:
    """The files of keepalived on this host, all in one folder that only root may write (``--dir``)."""

    folder: Path

    @property
    def config(self) -> Path:
        return self.folder / "keepalived.conf"

    @property
    def fifo(self) -> Path:
        """The notify FIFO: keepalived makes it and writes a line per change of state."""
        return self.folder / "notify.fifo"

    @property
    def pid(self) -> Path:
        return self.folder / "keepalived.pid"

    @property
    def vrrp_pid(self) -> Path:
        return self.folder / "vrrp.pid"


def running_keepalived(files: KeepalivedFiles, proc: Path = Path("/proc")) -> dict[Path, int]:
    """The pid files of ``files`` naming a keepalived that runs now on ``files.config`` (its command line says
    ``--use-file`` with that path), each with its pid. A file whose pid is gone, is another program (or this very
    process), or is a keepalived on another configuration is stale: not in the answer."""
    live: dict[Path, int] = {}
    for path in (files.pid, files.vrrp_pid):
        try:
            pid = int(path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        if pid <= 0 or pid == os.getpid():
            continue
        try:
            argv = (proc / str(pid) / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [word.decode("utf-8", "replace") for word in argv]
        if words and Path(words[0]).name == "keepalived" and _uses(words, files.config):
            live[path] = pid
    return live


def _uses(words: list[str], config: Path) -> bool:
    for flag in ("--use-file", "-f"):
        if flag in words[:-1] and words[words.index(flag) + 1] == str(config):
            return True
    return f"--use-file={config}" in words


def _word(value: str, what: str) -> str:
    """``value`` as keepalived can take it inside a quoted script line: no blank, quote or backslash."""
    if not value or any(ch.isspace() or ch in "\"'\\" for ch in value):
        raise ValueError(f"keepalived cannot take {what} {value!r} in a script line: no blanks or quotes allowed")
    return value


def notify_command(program: str, viirs_base: Path, pair: PairSettings) -> list[str]:
    """The notify reader's command line as keepalived starts it (keepalived appends the FIFO's path)."""
    return [program, "pair", "notify", "--base", str(viirs_base), "--release", str(pair.address), pair.interface]


def keepalived_config(pair: PairSettings, files: KeepalivedFiles, ping: str, notify: Sequence[str]) -> str:
    """keepalived.conf for this host: the PAIR_* settings, the FIFO of ``files``, ``ping`` (its absolute path) for
    the witness, and ``notify`` (the command keepalived starts to read the FIFO, see :func:`notify_command`)."""
    notify_line = " ".join(_word(part, "the notify command's word") for part in notify)
    witness = f"{_word(ping, 'the ping program')} -c 1 -W {WITNESS_WAIT} -n -q {pair.witness}"
    return f"""\
# keepalived for avoviirscollector's pair, written from the PAIR_* settings by `avoviirscollector pair` at each
# start: edit the settings, not this file.
global_defs {{
    enable_script_security
    script_user root
    vrrp_notify_fifo {_word(str(files.fifo), "the FIFO path")}
    vrrp_notify_fifo_script "{notify_line}"
    fifo_write_vrrp_states_on_reload
}}

vrrp_script {WITNESS_SCRIPT} {{
    script "{witness}"
    interval 1
    timeout 1
    fall {WITNESS_FALL}
    rise {WITNESS_RISE}
    init_fail
}}

vrrp_instance {INSTANCE} {{
    state BACKUP
    nopreempt
    interface {pair.interface}
    virtual_router_id {pair.router_id}
    priority {pair.priority}
    advert_int {ADVERT_SECONDS}
    garp_master_refresh {GARP_REFRESH_SECONDS}
    unicast_peer {{
        {pair.peer}
    }}
    check_unicast_src
    virtual_ipaddress {{
        {pair.address} dev {pair.interface}
    }}
    track_script {{
        {WITNESS_SCRIPT}
    }}
}}
"""


def keepalived_argv(keepalived: str, files: KeepalivedFiles) -> list[str]:
    """keepalived in the foreground, VRRP only, logging to its stdout (no syslog), its pid files in ``files``."""
    return [keepalived, "--dont-fork", "--log-console", "--log-detail", "--no-syslog", "--vrrp",
            "--use-file", str(files.config), "--pid", str(files.pid), "--vrrp_pid", str(files.vrrp_pid)]
