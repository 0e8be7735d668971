"""The suite's health: the reasons it is unhealthy (none: healthy), worked out from what a program already knows.

Pure: no sockets, no files, no clock. avo_status gathers the facts itself (it asks supervisord, listens to
task_broker for ``--wait`` seconds, reads mirror_gina's health record, asks statvfs); the monitor feeds what it
holds (its last poll and the status stream it follows). Both judge with :func:`assess`, so the same facts give
``avoviirscollector status --quick`` and the monitor's ``/healthz`` the same verdict, in the same words.

Unhealthy, one reason a line, when
    - supervisord does not answer, or a program it runs is not RUNNING;
    - task_broker is one of the programs and its status was not heard;
    - the filesystem of ``$VIIRS_BASE`` is :data:`FULL_PERCENT` full or more;
    - the mirror is unhealthy (``mirror.health.mirror_problems``): no mirror_gina run succeeded for
      ``MIRROR_STALE_MINUTES`` (counted from cron's start while none ever did), files GINA listed over an hour ago
      are neither placed nor given up on, or a satellite had nothing new listed for ``SILENCE_HOURS``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from avoviirscollector.mirror.health import mirror_problems

FULL_PERCENT = 98.0


@dataclass(frozen=True)
class Facts:
    """What a program knows of the suite at one moment."""

    viirs_base: str
    programs: Sequence[dict] = ()  # supervisord's processes (supervisor_client.ask_programs)
    supervisor_error: str | None = None  # why supervisord did not answer
    queue: dict | None = None  # task_broker's latest status (queue_status), None when not heard
    queue_error: str | None = None  # why it was not heard
    disk: Mapping = field(default_factory=dict)  # the filesystem's figures (ondisk.usage.disk_use)
    mirror_health: Mapping = field(default_factory=dict)  # state/mirror_gina.health.json


@dataclass(frozen=True)
class Verdict:
    problems: list[str]  # every reason, the mirror's last
    mirror_problems: list[str]  # the mirror's reasons alone

    @property
    def healthy(self) -> bool:
        return not self.problems


def assess(facts: Facts, now: float, stale_minutes: int, silence_hours: int) -> Verdict:
    """The verdict on ``facts`` at ``now`` (epoch seconds), with the mirror's limits ``MIRROR_STALE_MINUTES`` and
    ``SILENCE_HOURS``."""
    cron = [p for p in facts.programs if p["name"] == "cron" and p["state"] == "RUNNING" and p.get("start")]
    since = dt.datetime.fromtimestamp(cron[0]["start"], dt.UTC) if cron else None
    mirror = mirror_problems(dict(facts.mirror_health), dt.datetime.fromtimestamp(now, dt.UTC), stale_minutes,
                             silence_hours, since)
    return Verdict(problems=_suite_problems(facts) + mirror, mirror_problems=mirror)


def _suite_problems(facts: Facts) -> list[str]:
    """The reasons but the mirror's: supervisord, the programs, task_broker's status, the filesystem."""
    problems = []
    if facts.supervisor_error:
        problems.append(f"supervisord: {facts.supervisor_error}")
    for prog in facts.programs:
        if prog["state"] != "RUNNING":
            problems.append(f"{prog['name']} is {prog['state']}" + (f" ({prog['description']})"
                                                                   if prog.get("description") else ""))
    broker_configured = any(p["name"] == "task_broker" for p in facts.programs)
    if broker_configured and facts.queue is None:
        problems.append(f"task_broker status not heard: {facts.queue_error}")
    percent = facts.disk.get("percent_used")
    if percent is not None and percent >= FULL_PERCENT:
        problems.append(f"filesystem of {facts.viirs_base} is {percent:.0f}% full")
    return problems
