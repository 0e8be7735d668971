"""avo_log_forwarder: a supervisord event listener that copies every program's output to supervisord's stdout.

supervisord writes each program's output to ``$VIIRS_BASE/log/<program>.log``; it can send the same lines as
PROCESS_LOG events, and this listener writes them, prefixed with the program name, to its stderr, which
supervisord.conf points at its own stdout (``/dev/stdout``). So ``docker logs`` and the terminal of ``make run``
show every program, and the files in ``log/`` keep the same lines. Speaks supervisor's event listener protocol
on stdin/stdout (READY, header, payload, RESULT); never exits on a malformed event. Settings: none.

Signals: SIGTERM or SIGINT (supervisord stops it last, with SIGTERM) while it waits for the next event: exit 0 at
once; while it forwards one: that event is finished (its lines written, its RESULT sent), then exit 0. End of
stdin: exit 0.
"""

from __future__ import annotations

import sys

from avoviirscollector.signals import stop_on_signals


class _Stopped(Exception):
    """Raised by a stop signal that comes while the forwarder waits for an event (nothing half done then)."""


def parse_header(line: str) -> dict[str, str]:
    return dict(token.split(":", 1) for token in line.split() if ":" in token)


def forward(payload: str, out) -> None:
    """Write the log lines of one PROCESS_LOG event as ``<program> | <line>``."""
    head, _, data = payload.partition("\n")
    name = parse_header(head).get("processname", "?")
    for line in data.splitlines():
        out.write(f"{name} | {line}\n")
    out.flush()


class Forwarder:
    """The event loop: READY, one event, RESULT, until stdin ends or :meth:`stop`."""

    def __init__(self, stdin, stdout, stderr) -> None:
        self.stdin, self.stdout, self.stderr = stdin, stdout, stderr
        self.waiting = False
        self.stopping = False

    def stop(self) -> None:
        """From a signal handler: leave the wait for the next event at once, or finish the event being forwarded."""
        self.stopping = True
        if self.waiting:
            raise _Stopped

    def run(self) -> int:
        try:
            while True:
                self.waiting = True
                if self.stopping:
                    return 0
                self.stdout.write("READY\n")
                self.stdout.flush()
                line = self.stdin.readline()
                self.waiting = False
                if not line:
                    return 0
                self._one(line)
        except _Stopped:
            return 0

    def _one(self, line: bytes) -> None:
        header = parse_header(line.decode("utf-8", "replace"))
        payload = self.stdin.read(int(header.get("len", "0") or 0)).decode("utf-8", "replace")
        if header.get("eventname", "").startswith("PROCESS_LOG"):
            forward(payload, self.stderr)
        self.stdout.write("RESULT 2\nOK")
        self.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    forwarder = Forwarder(sys.stdin.buffer, sys.stdout, sys.stderr)
    stop_on_signals(forwarder.stop)
    return forwarder.run()


if __name__ == "__main__":
    raise SystemExit(main())
