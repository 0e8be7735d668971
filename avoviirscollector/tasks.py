"""``avoviirscollector tasks``: operators list, drop and re-queue task_broker's tasks.

Commands
    ``avoviirscollector tasks [list] [--json]``
        The queued tasks (oldest first) and the hand-outs and drops of the last ``RECOVERY_HOURS`` (the ledger:
        time, worker address, task, granules).
    ``avoviirscollector tasks drop ID``
        Take queued task ID out for good (its granules are not recovered again).
    ``avoviirscollector tasks requeue --from TIME [--to TIME] [--product P] [--platform NAME]``
        Queue again every complete granule in ``sdr/`` whose start time is in [from, to] (``--to`` defaults to
        ``--from``: one granule), handed out or not: for a worker that crashed mid-task, say. Times are ISO UTC
        (``2026-11-28T01:00:03``); a granule's start time is in its file names.

It talks to the running task_broker over its operators' socket (``$VIIRS_BASE/run/task_broker.ctl``, see
``broker/control.py``); every change is written to the task journal by the broker. Exit status: 0 done, 1 the
broker refused or did not answer, 2 bad arguments or settings. Settings: ``VIIRS_BASE``.
"""

from __future__ import annotations

import argparse
import json
import sys

from avoviirscollector.broker.control import PLATFORM_NAMES, ask
from avoviirscollector.config import settings_or_exit
from avoviirscollector.viirs import PRODUCTS

PROGRAM = "avoviirscollector tasks"


def _granules(keys: list) -> str:
    return ", ".join(f"{platform} {start[:21]}" for _, platform, start in keys) or "-"


def format_list(answer: dict) -> str:
    lines = [f"queued: {len(answer['queued'])}"]
    for task in answer["queued"]:
        lines.append(f"  {task['id']:>6} {task['product']:<4} {task['platform_name']:<9} orbit {task['orbit_number']}"
                     f" {task['pass_direction']:<10} {task['start_time'][:19]}..{task['end_time'][11:19]}"
                     f" {task['files']} files")
    entries = answer["handed out"]
    lines.append(f"handed out or dropped (ledger): {len(entries)}")
    for entry in entries:
        lines.append(f"  {entry['id']:>6} {entry['t'][:19]} {entry['kind']:<10} {entry['worker'] or '?':<15} "
                     f"{entry['what']}")
        lines.append(f"         granules: {_granules(entry['granules'])}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROGRAM, description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command")
    listing = commands.add_parser("list", help="queued tasks and the ledger")
    listing.add_argument("--json", action="store_true", help="the broker's answer as JSON")
    drop = commands.add_parser("drop", help="take a queued task out for good")
    drop.add_argument("id", type=int)
    requeue = commands.add_parser("requeue", help="queue the complete granules of a time range again")
    requeue.add_argument("--from", dest="start", required=True, help="first granule start time (ISO, UTC)")
    requeue.add_argument("--to", dest="end", help="last granule start time (default: --from)")
    requeue.add_argument("--product", choices=list(PRODUCTS))
    requeue.add_argument("--platform", choices=list(PLATFORM_NAMES))
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    settings = settings_or_exit(PROGRAM)
    run_dir = settings.viirs_base / "run"
    if args.command in (None, "list"):
        request = {"command": "list"}
    elif args.command == "drop":
        request = {"command": "drop", "id": args.id}
    else:
        request = {"command": "requeue", "from": args.start, "to": args.end or args.start, "product": args.product,
                   "platform": args.platform}
    try:
        answer = ask(run_dir, request)
    except TimeoutError as err:
        print(f"{PROGRAM}: {err}", file=sys.stderr)
        return 1
    if "error" in answer:
        print(f"{PROGRAM}: task_broker refused: {answer['error']}", file=sys.stderr)
        return 1
    if request["command"] == "list":
        print(json.dumps(answer, indent=2) if args.json else format_list(answer))
    elif "dropped" in answer:
        print(f"dropped {answer['dropped']}")
    else:
        print(f"re-queued {len(answer['requeued'])} granules" + "".join(f"\n  {g}" for g in answer["requeued"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
