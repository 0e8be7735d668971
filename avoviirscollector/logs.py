"""Logging set-up shared by every program of the suite.

Each program logs one line per record to stdout, UTC timestamps, ``<time> <program> <LEVEL> <message>`` (the
format of log_format.py). supervisord writes that stream to ``$VIIRS_BASE/log/<program>.log`` and forwards it to
the container's stdout, so programs never open log files themselves. Given the settings, ERROR records of
mirror_gina and task_broker are also mailed, batched, when MAILHOST, LOG_SENDER and LOG_RECIPIENT are all set (see
mailer.py, loaded only then).
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING

from avoviirscollector.log_format import line_formatter

if TYPE_CHECKING:
    from avoviirscollector.config import Settings


def setup_logging(program: str, verbose: bool = False, settings: Settings | None = None) -> logging.Logger:
    """Send every record to stdout (line-buffered), mail errors where configured, return the program's logger."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(line_formatter())
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    try:
        sys.stdout.reconfigure(line_buffering=True)
    except (AttributeError, ValueError):
        pass
    if settings is not None and settings.mail_enabled:  # smtplib and ssl are loaded only when mail is configured
        from avoviirscollector.mailer import install_mail_handler

        install_mail_handler(settings, program)
    return logging.getLogger(program)
