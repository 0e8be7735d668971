"""``avoviirscollector pair``: keepalived for two hosts, one collector (see pair/__init__.py).

Commands
    ``avoviirscollector pair config [--dir DIR]``
        Write keepalived's configuration from the PAIR_* settings into ``DIR/keepalived.conf`` (default
        ``/run/avoviirscollector-pair``) and print it. Exit status 2, with one line, when a setting is bad, PAIR_PEER
        is unset (one host: there is nothing to configure) or ping is missing.
    ``avoviirscollector pair keepalived [--dir DIR]``
        The same, then exec keepalived in the foreground on it (VRRP only, its log on stdout): the command of the
        keepalived service of docker-compose.pair.yml. Runs as root (keepalived needs NET_ADMIN). Exit status 2
        when a keepalived already runs on DIR; pid files left by one that died are removed (saying so), and the
        role file says STOP ("keepalived starting") until keepalived says the role.
    ``avoviirscollector pair notify --base VIIRS_BASE [--release ADDRESS INTERFACE] FIFO``
        keepalived's notify FIFO script, started and stopped by keepalived: writes ``run/pair.role`` (role.py).
    ``avoviirscollector pair role [--json]``
        This host's role as the role file says it: one line, or the file's JSON. Exit status 0 when this host is
        the active one (MASTER since this boot), 1 otherwise, 2 when there is no role file.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

from avoviirscollector import isotime
from avoviirscollector.config import settings_or_exit
from avoviirscollector.pair.keepalived import (
    INSTANCE,
    KeepalivedFiles,
    keepalived_argv,
    keepalived_config,
    notify_command,
    running_keepalived,
)
from avoviirscollector.pair.role import Notifier, Role, boot_id, read_role, role_path, write_role

DEFAULT_DIR = Path("/run/avoviirscollector-pair")
PROGRAM = "avoviirscollector pair"


def _fail(message: str) -> int:
    print(f"{PROGRAM}: {message}", file=sys.stderr)
    return 2


def write_config(folder: Path) -> tuple[KeepalivedFiles, str] | int:
    """Write keepalived.conf for this host into ``folder`` (atomically); the files and the text, or an exit
    status after one line on stderr."""
    settings = settings_or_exit(PROGRAM)
    if settings.pair is None:
        return _fail("PAIR_PEER is not set: this is one host, there is no pair to configure")
    ping = shutil.which("ping")
    if ping is None:
        return _fail("ping is not installed (the Debian package iputils-ping): keepalived needs it for PAIR_WITNESS")
    files = KeepalivedFiles(folder.absolute())
    program = str(Path(sys.executable).parent / "avoviirscollector")
    try:
        text = keepalived_config(settings.pair, files, ping, notify_command(program, settings.viirs_base,
                                                                             settings.pair))
    except ValueError as err:
        return _fail(str(err))
    files.folder.mkdir(mode=0o755, parents=True, exist_ok=True)
    tmp = files.config.with_name(f".{files.config.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, files.config)
    return files, text


def run_keepalived(folder: Path) -> int:
    """Write the configuration, then become keepalived (exec) in the foreground."""
    keepalived = shutil.which("keepalived")
    if keepalived is None:
        return _fail("keepalived is not installed (the Debian package keepalived)")
    written = write_config(folder)
    if isinstance(written, int):
        return written
    files, _ = written
    live = running_keepalived(files)
    if live:
        pids = ", ".join(str(pid) for pid in sorted(set(live.values())))
        return _fail(f"keepalived already runs on {files.folder} (pid {pids}): stop it first")
    for path in (files.pid, files.vrrp_pid):
        if path.exists():
            print(f"{PROGRAM}: removing the stale pid file {path} ({_first_word(path)!r}: no keepalived of "
                  f"{files.config} runs with that pid), or keepalived would exit saying it is already running")
            path.unlink(missing_ok=True)
    settings = settings_or_exit(PROGRAM)
    before = read_role(settings.viirs_base)
    try:  # the last word of the keepalived before (MASTER, say) is not true now: nothing is held until it says
        write_role(settings.viirs_base, Role("STOP", isotime.stamp(time.time(), micro=True),
                                             before.role if before else None, settings.pair.priority, boot_id(),
                                             "keepalived starting"))
    except OSError as err:
        print(f"{PROGRAM}: cannot write the role file {role_path(settings.viirs_base)}: {err}", file=sys.stderr)
    sys.stdout.flush()
    os.execv(keepalived, keepalived_argv(keepalived, files))
    return 0  # not reached


def _first_word(path: Path) -> str:
    try:
        return path.read_text().strip()[:20]
    except OSError:
        return ""


def notify(args: argparse.Namespace) -> int:
    """keepalived's notify FIFO script."""
    release = tuple(args.release) if args.release else None
    return Notifier(Path(args.base), Path(args.fifo), INSTANCE, release, shutil.which("ip") or "ip").run()


def show_role(as_json: bool) -> int:
    """Print this host's role; 0 when active, 1 when not, 2 without a role file."""
    settings = settings_or_exit(PROGRAM)
    role = read_role(settings.viirs_base)
    if role is None:
        print(f"no role: {role_path(settings.viirs_base)} is missing or not a role file (one host, or keepalived "
              f"has not started)")
        return 2
    current = boot_id()
    if as_json:
        print(json.dumps(asdict(role)))
    else:
        stale = "" if role.boot_id == current else " (written before this boot: stale)"
        print(f"{role.role} since {role.since}{stale}" + (f": {role.note}" if role.note else ""))
    return 0 if role.active(current) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROGRAM, description="keepalived for two hosts, one collector")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (("config", "write keepalived.conf from the PAIR_* settings and print it"),
                       ("keepalived", "write keepalived.conf, then exec keepalived in the foreground")):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="keepalived's folder (default %(default)s)")
    note = commands.add_parser("notify", help="keepalived's notify FIFO script (keepalived runs it)")
    note.add_argument("--base", required=True, help="VIIRS_BASE: the role file goes to its run/")
    note.add_argument("--release", nargs=2, metavar=("ADDRESS", "INTERFACE"),
                      help="the address to delete when keepalived ends without a word")
    note.add_argument("fifo", help="the FIFO (keepalived gives it)")
    role = commands.add_parser("role", help="this host's role (exit status 0 when active)")
    role.add_argument("--json", action="store_true", help="the role file's JSON")
    args = parser.parse_args(argv)
    if args.command == "config":
        written = write_config(args.dir)
        if isinstance(written, int):
            return written
        print(written[1], end="")
        return 0
    if args.command == "keepalived":
        return run_keepalived(args.dir)
    if args.command == "notify":
        return notify(args)
    return show_role(args.json)
