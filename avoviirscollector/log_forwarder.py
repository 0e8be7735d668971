"""avo_log_forwarder: a supervisord event listener that copies every program's output to supervisord's stdout.

supervisord writes each program's output to ``$VIIRS_BASE/log/<program>.log``; it can send the same lines as
PROCESS_LOG events, and this listener writes them, prefixed with the program name, to its stderr, which
supervisord.conf points at its own stdout (``/dev/stdout``). So ``docker logs`` and the terminal of ``make run``
show every program, and the files in ``log/`` keep the same lines. Speaks supervisor's event listener protocol
on stdin/stdout (READY, header, payload, RESULT); never exits on a malformed event.
"""

from __future__ import annotations

import sys


def parse_header(line: str) -> dict[str, str]:
    return dict(token.split(":", 1) for token in line.split() if ":" in token)


def forward(payload: str, out) -> None:
    """Write the log lines of one PROCESS_LOG event as ``<program> | <line>``."""
    head, _, data = payload.partition("\n")
    name = parse_header(head).get("processname", "?")
    for line in data.splitlines():
        out.write(f"{name} | {line}\n")
    out.flush()


def main(argv: list[str] | None = None) -> int:
    stdin, stdout, stderr = sys.stdin.buffer, sys.stdout, sys.stderr
    while True:
        stdout.write("READY\n")
        stdout.flush()
        line = stdin.readline()
        if not line:
            return 0
        header = parse_header(line.decode("utf-8", "replace"))
        payload = stdin.read(int(header.get("len", "0") or 0)).decode("utf-8", "replace")
        if header.get("eventname", "").startswith("PROCESS_LOG"):
            forward(payload, stderr)
        stdout.write("RESULT 2\nOK")
        stdout.flush()


if __name__ == "__main__":
    raise SystemExit(main())
