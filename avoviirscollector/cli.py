"""avoviirscollector: the suite's front door.

Commands
    ``avoviirscollector supervise [-c supervisord.conf]``
        Check every setting (one line and exit status 2 on a bad one) and that ``$AVO_ETC/segment_gatherer.ini``
        has every product of ``viirs.PRODUCTS`` as it is (one line a disagreement, exit status 2), create the
        ``$VIIRS_BASE`` folders, write the gatherers' programs (``run/gatherers.conf``, gatherers.py, which the file
        includes), then exec supervisord in the foreground with the given file (default ``./supervisord.conf``).
        It exports ``VIIRS_BASE`` (absolute), ``AVO_BIN`` (the folder of this Python's console scripts) and
        ``AVO_ETC`` (the setting: the package's etc folder unless set) for the file's ``%(ENV_...)s`` references,
        and puts ``AVO_BIN`` first on PATH for the cron jobs. supervisord handles the signals from then on: SIGTERM
        or Ctrl-C stops every program.
        Access (SPEC section 12): with ``ALLOWED_CLIENTS`` unset it logs one WARNING that every address may connect
        to the public ports. It sets ``POSTTROLL_AUTHORIZED_CLIENT_ADDRESSES`` (unless already set) to this host's
        own addresses, so that posttroll's ZAP check on every internal socket (nameserver, registrations, address
        announcements, the publishers of trollstalker and the gatherers) refuses any other peer.
        The supervisor (supervisor_auth.py): the control socket needs the user name and password of
        ``$VIIRS_BASE/run/supervisor.auth`` (0600; generated unless a private one is there). It forgets when
        mirror_gina last listed GINA in full, so that the suite's first run lists the whole backfill window. At the
        suite's first start (no ``state/task_queue.journal``) it starts task_broker's journal with the hand-out
        ledger beginning then, before any program runs: granules completed from then on are tasked even if their
        files were placed before task_broker came up; what was in ``sdr/`` before is the archive.
    ``avoviirscollector status [--json]``
        How things stand (see status.py).
    ``avoviirscollector tasks [list | drop ID | requeue --from TIME ...]``
        List, drop and re-queue task_broker's tasks (see tasks.py).
    ``avoviirscollector pair config|keepalived|notify|role``
        keepalived for two hosts, one collector, from the PAIR_* settings (see pair/cli.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from avoviirscollector import isotime
from avoviirscollector.config import Settings, settings_or_exit
from avoviirscollector.gatherers import ini_problems, write_programs
from avoviirscollector.ondisk.state import MIRROR_LISTINGS
from avoviirscollector.supervisor_auth import ensure_credentials, supervisord_environment
from avoviirscollector.viirs import PRODUCTS

INTERNAL_ALLOW = "POSTTROLL_AUTHORIZED_CLIENT_ADDRESSES"


def own_addresses() -> list[str]:
    """127.0.0.1 and the IPv4 address of every interface of this host (network namespace).

    posttroll publishers advertise the default route's interface address, so the suite's own subscribers connect
    to, and come from, that address: it must be allowed on the internal sockets along with loopback."""
    found = ["127.0.0.1"]
    try:
        from posttroll.address_receiver import get_local_ips

        found += [ip for ip in get_local_ips() if ip not in found]
    except Exception:  # noqa: BLE001 (netifaces missing or failing: loopback alone is the safe answer)
        pass
    return found


def access_environment(settings: Settings, env: dict[str, str], log: logging.Logger) -> None:
    """The WARNING for an unset ALLOWED_CLIENTS, and posttroll's allow-list of its internal sockets in ``env``."""
    if settings.allowed_clients is None:
        log.warning("ALLOWED_CLIENTS is not set: every address may connect to TASK_PORT %d, UPDATE_PORT %d and "
                    "PUBLISH_PORT %d (take tasks, read every message); set it to the workers' addresses",
                    settings.task_port, settings.update_port, settings.publish_port)
    else:
        log.info("ALLOWED_CLIENTS: the public ports accept %s (and this host's 127.0.0.1, ::1) only",
                 settings.allowed_clients)
    if not env.get(INTERNAL_ALLOW, "").strip():
        env[INTERNAL_ALLOW] = json.dumps(own_addresses())
    log.info("internal posttroll sockets accept peers from %s only (%s)", env[INTERNAL_ALLOW], INTERNAL_ALLOW)


def forget_listings(settings: Settings, log: logging.Logger) -> None:
    """The suite's first mirror_gina run lists GINA's whole backfill window: forget when it last was (mirror_gina's
    ``state/mirror_gina.listings.json``), whatever happened while the suite was down."""
    path = settings.state_dir / MIRROR_LISTINGS
    try:
        path.unlink()
    except FileNotFoundError:
        return
    except OSError as err:
        log.warning("cannot remove %s (%s): the first listings may cover only the last hour", path, err)
        return
    log.info("the first mirror_gina run lists GINA's whole backfill window")


def begin_ledger(settings: Settings, log: logging.Logger) -> None:
    """At the suite's first start (no task journal yet) start task_broker's journal with its hand-out ledger
    beginning now, before supervisord runs any program: a granule placed before task_broker first came up (a slow
    start on a busy host) is then recovered from sdr/ like any other, and the files that were in sdr/ before are the
    archive, never tasked."""
    import datetime as dt

    from avoviirscollector.broker.store import JournalStore

    store = JournalStore(settings.state_dir)
    now = dt.datetime.now(dt.UTC)
    try:
        started = store.begin(now)
    except OSError as err:
        log.warning("cannot start %s (%s): task_broker's first start will begin its ledger itself", store.path, err)
        return
    if started:
        log.info("first start of the suite: task_broker's ledger begins at %s (granules completed in sdr/ from now on "
                 "are tasked, those before are the archive)", isotime.stamp(now))


def supervise(args: argparse.Namespace) -> int:
    settings = settings_or_exit("avoviirscollector")
    conf = Path(args.config).absolute()
    if not conf.is_file():
        print(f"avoviirscollector: no supervisord configuration at {conf}", file=sys.stderr)
        return 2
    problems = ini_problems(settings.etc_dir / "segment_gatherer.ini", PRODUCTS)
    if problems:
        for problem in problems:
            print(f"avoviirscollector: {problem}", file=sys.stderr)
        return 2
    settings.make_dirs()
    (settings.viirs_base / "run").mkdir(mode=0o755, exist_ok=True)
    from avoviirscollector.logs import setup_logging

    log = setup_logging("avoviirscollector")
    forget_listings(settings, log)
    begin_ledger(settings, log)
    write_programs(settings.viirs_base, PRODUCTS)  # the gatherers' programs, which supervisord.conf includes
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ)
    access_environment(settings, env, log)
    env.update(supervisord_environment(ensure_credentials(settings.viirs_base / "run", log)))
    env.update(
        VIIRS_BASE=str(settings.viirs_base),
        AVO_BIN=str(bin_dir),
        AVO_ETC=str(settings.etc_dir),
        PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}",
        PYTHONUNBUFFERED="1",
        TZ="UTC",
    )
    supervisord = bin_dir / "supervisord"
    os.execve(supervisord, [str(supervisord), "--nodaemon", "--configuration", str(conf)], env)
    return 0  # not reached


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="avoviirscollector", description="VIIRS SDR collection suite")
    commands = parser.add_subparsers(dest="command", required=True)
    sup = commands.add_parser("supervise", help="check settings, create folders, run supervisord in the foreground")
    sup.add_argument("-c", "--config", default="supervisord.conf", help="supervisord.conf (default ./%(default)s)")
    commands.add_parser("status", help="how things stand", add_help=False)
    commands.add_parser("tasks", help="list, drop and re-queue tasks", add_help=False)
    commands.add_parser("pair", help="keepalived for two hosts, one collector (PAIR_* settings)", add_help=False)
    args, rest = parser.parse_known_args(argv)
    if args.command == "status":
        from avoviirscollector import status

        return status.main(rest)
    if args.command == "tasks":
        from avoviirscollector import tasks

        return tasks.main(rest)
    if args.command == "pair":
        from avoviirscollector.pair import cli as pair_cli

        return pair_cli.main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return supervise(args)


if __name__ == "__main__":
    raise SystemExit(main())
