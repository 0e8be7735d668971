"""A mailbox for the error-mail tests: an aiosmtpd handler that keeps every mail it is given (the ``smtp`` fixture
of ``tests/conftest.py`` serves one on a free port of 127.0.0.1)."""

from __future__ import annotations

import contextlib
import threading
from email import message_from_bytes, policy

from tests.support.waiting import WaitTimeout, wait_until


class Inbox:
    """Each mail as (sender, recipients, message); ``port`` is where its server listens."""

    def __init__(self) -> None:
        self.mails: list = []
        self.port = 0
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's name)
        with self.lock:
            message = message_from_bytes(envelope.content, policy=policy.default)
            self.mails.append((envelope.mail_from, list(envelope.rcpt_tos), message))
        return "250 OK"

    def received(self) -> list:
        with self.lock:
            return list(self.mails)

    def wait_for(self, count: int, timeout: float) -> list:
        """The mails once ``count`` have come, else those that came within ``timeout`` seconds (so a check that no
        more came waits the whole ``timeout``)."""
        with contextlib.suppress(WaitTimeout):
            wait_until(lambda: len(self.received()) >= count, timeout)
        return self.received()
