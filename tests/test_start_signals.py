"""A stop at any moment of a start: each of our programs, as its real console script, gets SIGTERM or SIGINT 0.1,
0.5 and 1 s after it was spawned (while Python starts, while it imports zmq or posttroll, while it binds and
subscribes), each case with a VIIRS_BASE and ports of its own and posttroll's nameserver running.

Each case must end in one of two ways: exit status 0 (its own handler, or the entry point's before the program
touched anything), or death by that very signal with nothing created or changed under VIIRS_BASE (before the entry
point's handlers were in place). A SIGINT that comes while the interpreter itself is still starting (importing
``site``, before a line of the console script runs) makes CPython exit with status 1 ("Failed to import the site
module", KeyboardInterrupt) instead of dying of SIGINT: that too counts as death by the signal, nothing changed
allowed. Either way: no temp file left, no ready marker left, no process of it left, and
task_broker's journal, when written, ends with its clean-stop record. The cron jobs (mirror_gina, cleanup,
tle_refresh), which get the same entry point, are tried at 0.1 s only: later they are doing their work, and their
own contract for a stop holds (mirror_gina exits 1 for a stopped run; cleanup and tle_refresh die of it).

One SIGINT moment is too narrow to hit by timing: CPython checks whether the script is a zip archive (between
``site`` and the script's first line) and drops a KeyboardInterrupt raised there (seen once in CI: task_broker ran on
for 30 s after a SIGINT at 0.1 s). The last test raises it exactly there, from a path hook that a ``sitecustomize``
installs: every program must take it for the stop it was and exit 0 having touched nothing.

The six cases of a program run in parallel threads (each waits on its own process), so a program costs a few
seconds.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from avoviirscollector.config import load_settings
from tests.support import free_ports, wait_until

pytestmark = pytest.mark.processes  # real processes: make check (--in-process) leaves the module out
BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parent.parent
SIGNALS = (signal.SIGTERM, signal.SIGINT)
MOMENTS = (0.1, 0.5, 1.0)
#: program -> its command line ({base} is the case's VIIRS_BASE)
DAEMONS = {
    "task_broker": ["task_broker"],
    "msg_publisher": ["msg_publisher"],
    "monitor": ["monitor"],
    "avo_cron": ["avo_cron", str(REPO / "crontab"), "--runner", "builtin", "--wait-ready", "60",
                 "--at-start", "tle_refresh"],
    "avo_log_forwarder": ["avo_log_forwarder"],
    "avo_wait_for": ["avo_wait_for", "trollstalker_viirs", "--", "/bin/sleep", "30"],
}
JOBS = {
    "mirror_gina": ["mirror_gina", "--once"],
    "cleanup": ["cleanup"],
    "tle_refresh": ["tle_refresh"],
}
TEMP_NAME = re.compile(r".*\.(tmp|new)$|^\..+\.\d+$")


def listing(base: Path) -> dict[str, tuple]:
    """Every path under ``base`` with its kind, size and modification time."""
    found = {}
    for path in sorted(base.rglob("*")):
        st = path.lstat()
        found[str(path.relative_to(base))] = (path.is_dir(), st.st_size if path.is_file() else 0, st.st_mtime_ns)
    return found


def case_env(base: Path) -> dict[str, str]:
    task, update, publish, monitor, dead = free_ports(5)
    return {**os.environ, "VIIRS_BASE": str(base), "TASK_PORT": str(task), "UPDATE_PORT": str(update),
            "PUBLISH_PORT": str(publish), "MONITOR_PORT": str(monitor), "PATH": f"{BIN}:/usr/bin:/bin",
            "GINA_URL": f"http://127.0.0.1:{dead}", "TLE_URL": f"http://127.0.0.1:{dead}/weather.txt",
            "PYTHONFAULTHANDLER": "1"}


def group_gone(pgid: int) -> bool:
    """No process is left in the process group ``pgid`` (the case's program and whatever it started there)."""
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and os.getpgid(int(entry.name)) == pgid:
                return False
        except OSError:
            continue
    return True


def one_case(tmp: Path, command: list[str], signum: int, moment: float) -> str | None:
    """Spawn, signal at ``moment`` s, judge the end; None when it ended as it must, else what went wrong."""
    base = tmp / "viirs"
    tmp.mkdir()
    settings = load_settings({"VIIRS_BASE": str(base)})
    settings.make_dirs()
    (base / "run").mkdir()
    env = case_env(base)
    before = listing(base)
    with open(tmp / "output", "wb") as out:
        proc = subprocess.Popen([str(BIN / command[0]), *command[1:]], env=env, stdin=subprocess.PIPE, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        time.sleep(max(0.0, moment - 0.005))  # Popen returns once the child has exec'd: that is the spawn
        proc.send_signal(signum)
        try:
            code = proc.wait(30)
        except subprocess.TimeoutExpired:  # its threads' tracebacks (PYTHONFAULTHANDLER) say where it is stuck
            proc.send_signal(signal.SIGABRT)
            proc.wait(10)
            return f"no exit within 30 s of the signal:\n{(tmp / 'output').read_text(errors='replace')[-6000:]}"
        wait_until(lambda: group_gone(proc.pid), 10, "no process of the case left")
    finally:
        if proc.poll() is None or not group_gone(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stdin.close()
    return judge(base, before, code, signum, (tmp / "output").read_text(errors="replace"))


def in_interpreter_start(code: int, signum: int, output: str) -> bool:
    """CPython's own start-up interrupted by SIGINT: it exits 1 (not by the signal) before any of our code ran."""
    return (code == 1 and signum == signal.SIGINT and "Failed to import the site module" in output
            and "KeyboardInterrupt" in output)


def judge(base: Path, before: dict, code: int, signum: int, output: str) -> str | None:
    after = listing(base)
    if code == -signum or in_interpreter_start(code, signum, output):
        if after != before:
            changed = sorted(set(after.items()) ^ set(before.items()))
            return f"died of the signal after changing {changed[:5]}"
    elif code != 0:
        return f"exit status {code}:\n{output[-1500:]}"
    left = [name for name in after if TEMP_NAME.match(Path(name).name)]
    markers = [name for name in after if name.startswith("run/ready/") and name.endswith(".json")]
    journal = base / "state" / "task_queue.journal"
    last = journal.read_text().splitlines()[-1:] if journal.exists() else []
    if left or markers:
        return f"left behind: {left + markers}"
    if last and json.loads(last[0]).get("op") != "stop":
        return f"the journal ends with {last[0]!r}, not the clean-stop record"
    return None


def run_cases(tmp_path: Path, command: list[str], moments: tuple[float, ...]) -> dict[str, str]:
    """Every (signal, moment) case of ``command`` in parallel threads: {case: what went wrong}.

    The programs are started with SIGINT at its default, as supervisord starts them: a test run started in the
    background of a shell script inherits SIGINT ignored, and a program whose SIGINT came before its own handler
    would then never hear it (seen: avo_cron waited on for ever after a SIGINT at 0.1 s)."""
    cases = [(signum, moment) for signum in SIGNALS for moment in moments]
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # a handler here: SIG_DFL after exec
    try:
        with ThreadPoolExecutor(len(cases)) as pool:
            futures = {f"{signal.Signals(signum).name} at {moment} s": pool.submit(
                one_case, tmp_path / f"{signum}-{moment}", command, signum, moment) for signum, moment in cases}
            return {name: problem for name, future in futures.items() if (problem := future.result()) is not None}
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("program", sorted(DAEMONS))
def test_a_stop_at_any_moment_of_the_start_is_clean(program, tmp_path, loopback_only, nameserver):
    problems = run_cases(tmp_path, DAEMONS[program], MOMENTS)
    assert problems == {}, "\n".join(f"{program}, {case}: {problem}" for case, problem in problems.items())


@pytest.mark.parametrize("program", sorted(JOBS))
def test_a_cron_job_stopped_while_it_starts_exits_0_having_touched_nothing(program, tmp_path):
    problems = run_cases(tmp_path, JOBS[program], (0.1,))
    assert problems == {}, "\n".join(f"{program}, {case}: {problem}" for case, problem in problems.items())


#: installed by the ``sitecustomize`` below: the KeyboardInterrupt a SIGINT raises while CPython asks the path hooks
#: whether the script (argv[0]) is an archive, which CPython prints and drops
DROPPED_INTERRUPT = """import os, sys


def _interrupted_here(path):
    if path == os.environ["AVO_TEST_INTERRUPT_AT"]:
        raise KeyboardInterrupt
    raise ImportError(path)


sys.path_hooks.insert(0, _interrupted_here)
"""


def dropped_interrupt_case(tmp: Path, command: list[str]) -> str | None:
    """Run ``command`` with the interrupt raised where CPython drops it; None when it exits 0 having touched nothing."""
    base = tmp / "viirs"
    (tmp / "hook").mkdir(parents=True)
    (tmp / "hook" / "sitecustomize.py").write_text(DROPPED_INTERRUPT)
    load_settings({"VIIRS_BASE": str(base)}).make_dirs()
    (base / "run").mkdir()
    script = str(BIN / command[0])
    env = {**case_env(base), "PYTHONPATH": str(tmp / "hook"), "AVO_TEST_INTERRUPT_AT": script}
    before = listing(base)
    proc = subprocess.Popen([script, *command[1:]], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, output = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        return "ran on for 60 s after the dropped SIGINT"
    finally:
        if proc.poll() is None or not group_gone(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    if "Failed checking if argv[0] is an import path entry" not in output:
        return f"the interrupt was not raised where CPython drops it:\n{output[-3000:]}"
    if proc.returncode != 0:
        return f"exit status {proc.returncode}:\n{output[-3000:]}"
    if listing(base) != before:
        return f"touched {sorted(set(listing(base).items()) ^ set(before.items()))[:5]}"
    return None


def test_a_sigint_that_cpythons_start_drops_still_stops_every_program(tmp_path):
    programs = {**DAEMONS, **JOBS}
    with ThreadPoolExecutor(len(programs)) as pool:
        futures = {name: pool.submit(dropped_interrupt_case, tmp_path / name, command)
                   for name, command in programs.items()}
        problems = {name: problem for name, future in futures.items() if (problem := future.result()) is not None}
    assert problems == {}, "\n".join(f"{name}: {problem}" for name, problem in problems.items())
