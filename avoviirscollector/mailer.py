"""Error mail: ERROR records of a program, batched, mailed through ``MAILHOST`` without ever blocking the program.

Used by mirror_gina and task_broker: ``logs.setup_logging(program, settings=settings)`` installs it on the root
logger (``install_mail_handler``). Does nothing unless ``MAILHOST``, ``LOG_SENDER`` and ``LOG_RECIPIENT`` are all
set.

How the batching works
    ``emit()`` only appends the formatted record to a bounded in-memory list (never a socket, never a file).
    A background thread, once a second, moves those records into the program's spool file
    ``$VIIRS_BASE/state/mail-<program>.json`` (under an flock, so that the every-minute runs of mirror_gina share
    one batch) and, when the previous mail of that program went out at least ``interval`` seconds ago (default
    600), sends one mail with the spooled records: the first ``MAX_LINES`` in full and a count of the ones
    suppressed. So the first error of a quiet period is mailed within a second or two, and an outage gives at
    most one mail per program per interval, whatever the number of records or of processes.
    At exit (``logging.shutdown`` closes the handler) the records still in memory are spooled, and mailed if the
    interval allows, with a short SMTP timeout; otherwise the next run of the program mails them.

When the mail host is down, or refuses
    A failed send is logged as one ERROR line of the logger ``avoviirscollector.mailer`` (at most one line of a kind
    per interval), which this handler never mails (no loop); it counts as an attempt for the interval and keeps the
    batch for the next attempt. The program that logs never waits on SMTP: only the
    background thread and the final flush at exit talk to the mail host, each with a timeout (exit waits at most
    about 2 x ``EXIT_TIMEOUT`` for mail).

``MAILHOST`` is ``host`` or ``host:port`` (default port 25). Without ``MAIL_USER``: plain SMTP, no login, as a site
relay expects. With ``MAIL_USER`` (SPEC section 8), TLS is required before the password leaves the host: SMTPS
(TLS from the first byte) when the port is 465, otherwise STARTTLS, and a relay that does not offer STARTTLS gets
no password (one ERROR line, the batch is kept). The relay's certificate is verified against the system's CA
store (``SSL_CERT_FILE`` points OpenSSL at another bundle, e.g. a site CA). The password is the first line of
``MAIL_PASSWORD_FILE``, read at each login (so it can be rotated), never logged.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import smtplib
import socket
import ssl
import threading
import time
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path

from avoviirscollector.config import Settings
from avoviirscollector.log_format import line_formatter

DEFAULT_INTERVAL = 600.0
MAX_LINES = 50  # records shown in one mail; the rest are counted as suppressed
MAX_MEMORY = 1000  # records kept in memory between two spool passes; more are counted only
SEND_TIMEOUT = 10.0
EXIT_TIMEOUT = 3.0
SMTPS_PORT = 465
LOG = logging.getLogger("avoviirscollector.mailer")  # the mailer's own errors: logged, never mailed


class MailSecurityError(smtplib.SMTPException):
    """The relay cannot be logged in to safely (no STARTTLS): the password was not sent."""


class _NotOwnErrors(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.name.startswith(LOG.name)


def _text(value: object) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def parse_mailhost(mailhost: str) -> tuple[str, int]:
    host, sep, port = mailhost.rpartition(":")
    if sep and port.isdigit() and host and not host.endswith(":"):
        return host.strip("[]"), int(port)
    return mailhost, 25


class Spool:
    """The batch of one program on disk: ``{"last_sent": epoch, "lines": [...], "suppressed": n}``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock_path = path.with_suffix(".lock")

    def update(self, lines: list[str], suppressed: int, send, interval: float, now: float,
               lock_timeout: float) -> None:
        """Add records to the batch; if the interval allows, call ``send(lines, suppressed)`` and clear it.

        ``send`` raises on failure; the batch is then kept and the attempt still counts for the interval.
        Raises :class:`TimeoutError` (batch untouched) when another process holds the spool longer than
        ``lock_timeout``.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "a") as lock:
            deadline = time.monotonic() + lock_timeout
            while True:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{self.path} is busy") from None
                    time.sleep(0.05)
            state = self._read()
            kept = state["lines"]
            room = max(0, MAX_LINES - len(kept))
            kept.extend(lines[:room])
            state["suppressed"] += suppressed + max(0, len(lines) - room)
            try:
                if (kept or state["suppressed"]) and now - state["last_sent"] >= interval:
                    state["last_sent"] = now
                    self._write(state)  # the attempt counts even if the send fails or we are killed during it
                    send(kept, state["suppressed"])
                    state["lines"], state["suppressed"] = [], 0
            finally:
                self._write(state)

    def _read(self) -> dict:
        try:
            with open(self.path, encoding="utf-8") as handle:
                state = json.load(handle)
            return {"last_sent": float(state.get("last_sent", 0.0)), "lines": list(state.get("lines", [])),
                    "suppressed": int(state.get("suppressed", 0))}
        except (OSError, ValueError, TypeError, AttributeError):
            return {"last_sent": 0.0, "lines": [], "suppressed": 0}

    def _write(self, state: dict) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(state, handle)
        os.replace(tmp, self.path)


class BatchingMailHandler(logging.Handler):
    """A logging handler that never blocks: records are batched and mailed by a background thread."""

    def __init__(self, program: str, mailhost: str, sender: str, recipient: str, spool_dir: Path,
                 interval: float = DEFAULT_INTERVAL, level: int = logging.ERROR, user: str | None = None,
                 password_file: Path | None = None) -> None:
        super().__init__(level)
        self.addFilter(_NotOwnErrors())
        self.program = program
        self.host, self.port = parse_mailhost(mailhost)
        self.user = user
        self.password_file = password_file
        self.sender = sender
        self.recipients = [r.strip() for r in recipient.split(",") if r.strip()]
        self.interval = interval
        self.spool = Spool(spool_dir / f"mail-{program}.json")
        self.hostname = socket.gethostname()
        self._pending: list[str] = []
        self._dropped = 0
        self._pending_lock = threading.Lock()
        self._last_report = (float("-inf"), "")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"mail-{program}", daemon=True)
        self._thread.start()

    # called by logging, in whatever thread logs: must never block on I/O
    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # noqa: BLE001 (a broken record must not break the program)
            line = f"{record.levelname} {record.name}: (unformattable record) {record.msg!r}"
        with self._pending_lock:
            if len(self._pending) < MAX_MEMORY:
                self._pending.append(line)
            else:
                self._dropped += 1

    def _take(self) -> tuple[list[str], int]:
        with self._pending_lock:
            lines, dropped = self._pending, self._dropped
            self._pending, self._dropped = [], 0
        return lines, dropped

    def _pass(self, timeout: float, final: bool = False) -> None:
        lines, dropped = self._take()
        try:
            self.spool.update(lines, dropped, lambda kept, n: self._send(kept, n, timeout), self.interval,
                              time.time(), lock_timeout=timeout)
        except TimeoutError as err:
            if final:
                self._report(f"{len(lines) + dropped} error record(s) not mailed: {err}")
            else:
                with self._pending_lock:  # put them back for the next pass
                    self._pending[:0] = lines
                    self._dropped += dropped
        except smtplib.SMTPAuthenticationError as err:
            self._report(f"error mail via {self.host}:{self.port} failed: the relay refused the login of "
                         f"MAIL_USER={self.user!r} ({err.smtp_code} {_text(err.smtp_error)}): check MAIL_USER and "
                         f"MAIL_PASSWORD_FILE; next attempt in {self.interval:g} s")
        except Exception as err:  # noqa: BLE001 (SMTP, TLS, DNS, disk: report and keep going)
            self._report(f"error mail via {self.host}:{self.port} failed: {type(err).__name__}: {err}; "
                         f"next attempt in {self.interval:g} s")

    def _report(self, line: str) -> None:
        """One ERROR line of the mailer's own logger (which this handler never mails), at most one of a kind per
        interval."""
        now = time.monotonic()
        kind = line.split(":")[:2]
        if kind != self._last_report[1].split(":")[:2] or now - self._last_report[0] >= self.interval:
            self._last_report = (now, line)
            try:
                LOG.error("%s", line)
            except Exception:  # noqa: BLE001 (logging torn down at exit: nothing else to tell)
                pass

    def _loop(self) -> None:
        while not self._stop.wait(1.0):
            self._pass(SEND_TIMEOUT)

    def _send(self, lines: list[str], suppressed: int, timeout: float) -> None:
        count = len(lines) + suppressed
        msg = EmailMessage()
        msg["Subject"] = f"[avoviirscollector] {self.program} on {self.hostname}: {count} error" + (
            "s" if count != 1 else "")
        msg["From"] = self.sender
        msg["To"] = ", ".join(self.recipients)
        msg["Date"] = formatdate(localtime=False)
        msg["Message-ID"] = make_msgid(domain=self.hostname or None)
        body = [f"{self.program} on {self.hostname} logged {count} error record(s) since the last mail:", ""]
        body += lines
        if suppressed:
            body += ["", f"... and {suppressed} more suppressed (at most {MAX_LINES} shown per mail, one mail per "
                         f"{self.interval:g} s). See $VIIRS_BASE/log/{self.program}.log."]
        msg.set_content("\n".join(body) + "\n")
        with self._connect(timeout) as smtp:
            smtp.send_message(msg)

    def _password(self) -> str:
        if self.password_file is None:
            raise MailSecurityError("MAIL_USER is set but MAIL_PASSWORD_FILE is not")
        with open(self.password_file, encoding="utf-8") as handle:
            return handle.readline().rstrip("\r\n")

    def _connect(self, timeout: float) -> smtplib.SMTP:
        """A connection ready to send: plain without MAIL_USER; with it, TLS (SMTPS on 465, else STARTTLS) and the
        login. Never sends the password over a connection that is not encrypted."""
        if self.user is None:
            return smtplib.SMTP(self.host, self.port, timeout=timeout)
        context = ssl.create_default_context()
        if self.port == SMTPS_PORT:
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(self.host, self.port, timeout=timeout, context=context)
        else:
            smtp = smtplib.SMTP(self.host, self.port, timeout=timeout)
        try:
            if self.port != SMTPS_PORT:
                smtp.ehlo()
                if not smtp.has_extn("starttls"):
                    raise MailSecurityError("the relay does not offer STARTTLS, so the password was not sent "
                                            "(MAIL_USER requires TLS: STARTTLS, or SMTPS on port 465)")
                smtp.starttls(context=context)
                smtp.ehlo()
            smtp.login(self.user, self._password())
        except BaseException:
            smtp.close()
            raise
        return smtp

    def close(self) -> None:
        """Stop the thread, then spool (and mail, if the interval allows) what is left, with a short timeout."""
        if not self._stop.is_set():
            self._stop.set()
            self._thread.join(timeout=EXIT_TIMEOUT)
            if self._thread.is_alive():  # stuck talking to a mail host that does not answer: do not wait more
                lines, dropped = self._take()
                if lines or dropped:
                    self._report(f"{len(lines) + dropped} error record(s) not mailed: {self.host} does not answer")
            else:
                self._pass(EXIT_TIMEOUT, final=True)
        super().close()


def attach_mail_handler(logger: logging.Logger, settings: Settings, program: str,
                        interval: float = DEFAULT_INTERVAL) -> BatchingMailHandler | None:
    """Mail ``logger``'s ERROR records (batched) when mail is configured; return the handler, or None."""
    if not settings.mail_enabled:
        return None
    handler = BatchingMailHandler(program, settings.mailhost, settings.log_sender, settings.log_recipient,
                                  settings.state_dir, interval=interval, user=settings.mail_user,
                                  password_file=settings.mail_password_file)
    handler.setFormatter(line_formatter())
    logger.addHandler(handler)
    return handler


MAILED_PROGRAMS = ("mirror_gina", "task_broker")  # SPEC section 3: whose ERROR records are mailed


def install_mail_handler(settings: Settings, program: str) -> BatchingMailHandler | None:
    """For ``logs.setup_logging``: batched error mail on the root logger, for the programs of SPEC section 3 only."""
    if program not in MAILED_PROGRAMS:
        return None
    return attach_mail_handler(logging.getLogger(), settings, program)
