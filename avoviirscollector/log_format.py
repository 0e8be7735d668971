"""The suite's log line: ``<time> <program> <LEVEL> <message>``, UTC, one record a line.

One definition for every handler that writes records: stdout (logs.py) and the error mail (mailer.py).
"""

from __future__ import annotations

import logging
import time

FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"
DATEFMT = "%Y-%m-%dT%H:%M:%SZ"


class UTCFormatter(logging.Formatter):
    converter = time.gmtime


def line_formatter() -> UTCFormatter:
    """A formatter of the suite's log line."""
    return UTCFormatter(FORMAT, DATEFMT)
