"""Error mail through a real local SMTP server (aiosmtpd): batching, sharing across runs, mail host down."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from avoviirscollector.config import Settings
from avoviirscollector.mailer import MAX_LINES, attach_mail_handler, install_mail_handler, parse_mailhost
from tests.support import free_port, settings_for

#: the sender and recipients of the tests' error mail (with MAILHOST, all three settings mail needs)
MAIL_TO = {"LOG_SENDER": "viirs@example.org", "LOG_RECIPIENT": "ops@example.org, duty@example.org"}


def body(mail) -> str:
    return mail[2].get_content()


def test_a_burst_of_errors_is_one_mail_with_a_count_of_the_suppressed(tmp_path, smtp):
    logger = logging.getLogger("task_broker.test-burst")
    logger.propagate = False
    settings = settings_for(tmp_path, MAILHOST=f"127.0.0.1:{smtp.port}", **MAIL_TO)
    handler = attach_mail_handler(logger, settings, "task_broker", interval=3.0)
    try:
        logger.info("not mailed")
        logger.error("queue file unreadable")
        first = smtp.wait_for(1, 5)
        assert len(first) == 1
        sender, recipients, message = first[0]
        assert sender == "viirs@example.org" and recipients == ["ops@example.org", "duty@example.org"]
        assert message["Subject"].startswith("[avoviirscollector] task_broker on ")
        assert message["Subject"].endswith(": 1 error")
        assert "queue file unreadable" in body(first[0]) and "not mailed" not in body(first[0])
        sent_at = time.monotonic()
        started = time.perf_counter()
        for i in range(120):
            logger.error("worker request %d failed", i)
        assert time.perf_counter() - started < 0.5  # logging never waits on mail
        assert len(smtp.wait_for(2, 1.5)) == 1  # inside the interval: nothing sent
        mails = smtp.wait_for(2, 6)
        assert len(mails) == 2
        assert time.monotonic() - sent_at >= 2.5
        text = body(mails[1])
        assert mails[1][2]["Subject"].endswith(": 120 errors")
        assert "worker request 0 failed" in text and f"worker request {MAX_LINES - 1} failed" in text
        assert f"worker request {MAX_LINES} failed" not in text
        assert f"and {120 - MAX_LINES} more suppressed" in text
        assert len(smtp.wait_for(3, 1.5)) == 2  # nothing more to say: no third mail
    finally:
        logger.removeHandler(handler)
        handler.close()


CHILD = """
import logging, sys, time
from avoviirscollector.config import settings_or_exit
from avoviirscollector.logs import setup_logging
from avoviirscollector.mailer import attach_mail_handler
log = setup_logging("mirror_gina")
attach_mail_handler(logging.getLogger(), settings_or_exit("mirror_gina"), "mirror_gina", interval=float(sys.argv[1]))
errors, seconds = int(sys.argv[2]), float(sys.argv[3])
worst, ticks, end = 0.0, 0, time.monotonic() + seconds
for i in range(errors):
    started = time.perf_counter()
    log.error("run %s: SVM%02d download failed", sys.argv[4], i)
    worst = max(worst, time.perf_counter() - started)
while time.monotonic() < end:
    started = time.perf_counter()
    log.error("run %s: tick %d failed", sys.argv[4], ticks)
    worst = max(worst, time.perf_counter() - started)
    ticks += 1
    time.sleep(0.05)  # a tick every 50 ms: the program goes on working for its seconds
print(f"done ticks={ticks} worst={worst:.4f}", flush=True)
"""


def run_child(base: Path, mailhost: str, interval: float, errors: int, seconds: float, tag: str):
    env = dict(os.environ, VIIRS_BASE=str(base), MAILHOST=mailhost, LOG_SENDER="viirs@example.org",
               LOG_RECIPIENT="ops@example.org")
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", CHILD, str(interval), str(errors), str(seconds), tag], env=env,
                            capture_output=True, text=True, timeout=60)
    return result, time.monotonic() - started


def test_runs_of_a_cron_job_share_one_batch(tmp_path, smtp):
    mailhost = f"127.0.0.1:{smtp.port}"
    first, _ = run_child(tmp_path, mailhost, 30, 3, 0, "A")
    assert first.returncode == 0, first.stderr
    assert len(smtp.wait_for(1, 5)) == 1
    second, _ = run_child(tmp_path, mailhost, 30, 4, 0, "B")  # a minute later in real life: inside the interval
    assert second.returncode == 0, second.stderr
    mails = smtp.wait_for(2, 1.0)
    assert len(mails) == 1
    assert "run A: SVM02 download failed" in body(mails[0]) and "run B" not in body(mails[0])
    # the next run once the interval has passed mails what the previous runs left, even with no error of its own
    third, _ = run_child(tmp_path, mailhost, 0, 0, 0, "C")
    assert third.returncode == 0, third.stderr
    mails = smtp.wait_for(2, 5)
    assert len(mails) == 2
    assert mails[1][2]["Subject"].endswith(": 4 errors")
    assert "run B: SVM03 download failed" in body(mails[1])


@pytest.mark.parametrize("kind", ["refused", "silent"])
def test_mail_host_down_never_breaks_or_stalls_the_program(tmp_path, kind):
    silent = socket.socket()
    try:
        if kind == "silent":  # accepts connections (kernel backlog) but never says hello
            silent.bind(("127.0.0.1", 0))
            silent.listen(8)
            port = silent.getsockname()[1]
        else:
            port = free_port()  # nothing listens
        result, elapsed = run_child(tmp_path, f"127.0.0.1:{port}", 600, 20, 2.0, "D")
    finally:
        silent.close()
    assert result.returncode == 0, result.stderr
    done = next(line for line in result.stdout.splitlines() if line.startswith("done "))
    ticks, worst = (float(part.split("=")[1]) for part in done.split()[1:])
    assert ticks >= 25  # it kept working for its two seconds
    assert worst < 0.05  # no logging call waited on the mail host
    assert elapsed < 2.0 + 8.0  # and exit waits a few seconds at most
    own = [line for line in result.stdout.splitlines() if "avoviirscollector.mailer" in line]
    assert all(" avoviirscollector.mailer ERROR " in line for line in own), own  # the mailer's own errors: logged
    if kind == "refused":
        assert len(own) == 1 and "error mail via 127.0.0.1" in own[0] and "ConnectionRefusedError" in own[0], own
    else:
        assert "not mailed" in result.stdout


def test_nothing_happens_unless_all_three_settings_are_given(tmp_path):
    logger = logging.getLogger("mirror_gina.test-off")
    for settings in (settings_for(tmp_path, **MAIL_TO),
                     Settings(viirs_base=tmp_path, mailhost="localhost", log_sender="a@b.c"),
                     Settings(viirs_base=tmp_path, mailhost="localhost", log_recipient="a@b.c")):
        assert attach_mail_handler(logger, settings, "mirror_gina") is None
    assert logger.handlers == []
    assert not (tmp_path / "state").exists()


def test_only_mirror_gina_and_task_broker_mail(tmp_path):
    settings = settings_for(tmp_path, MAILHOST="127.0.0.1:9", **MAIL_TO)
    assert install_mail_handler(settings, "cleanup") is None
    handler = install_mail_handler(settings, "task_broker")
    try:
        assert handler in logging.getLogger().handlers and handler.level == logging.ERROR
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()


def test_parse_mailhost():
    assert parse_mailhost("smtp.example.org") == ("smtp.example.org", 25)
    assert parse_mailhost("smtp.example.org:2525") == ("smtp.example.org", 2525)
    assert parse_mailhost("[::1]:26") == ("::1", 26)
