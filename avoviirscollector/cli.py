"""avoviirscollector: the suite's front door.

Commands
    ``avoviirscollector supervise [-c supervisord.conf]``
        Check every setting (one line and exit status 2 on a bad one), create the ``$VIIRS_BASE`` folders, then
        exec supervisord in the foreground with the given file (default ``./supervisord.conf``). It exports
        ``VIIRS_BASE`` (absolute), ``AVO_BIN`` (the folder of this Python's console scripts) and ``AVO_ETC`` (the
        setting: the package's etc folder unless set) for the file's ``%(ENV_...)s`` references, and puts
        ``AVO_BIN`` first on PATH for
        the cron jobs. supervisord handles the signals from then on: SIGTERM or Ctrl-C stops every program.
    ``avoviirscollector status [--json]``
        How things stand (see status.py).
    ``avoviirscollector tasks [list | drop ID | requeue --from TIME ...]``
        List, drop and re-queue task_broker's tasks (see tasks.py).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from avoviirscollector.config import settings_or_exit


def supervise(args: argparse.Namespace) -> int:
    settings = settings_or_exit("avoviirscollector")
    conf = Path(args.config).absolute()
    if not conf.is_file():
        print(f"avoviirscollector: no supervisord configuration at {conf}", file=sys.stderr)
        return 2
    settings.make_dirs()
    (settings.viirs_base / "run").mkdir(mode=0o755, exist_ok=True)
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ)
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
    args, rest = parser.parse_known_args(argv)
    if args.command == "status":
        from avoviirscollector import status

        return status.main(rest)
    if args.command == "tasks":
        from avoviirscollector import tasks

        return tasks.main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return supervise(args)


if __name__ == "__main__":
    raise SystemExit(main())
