"""A locked supervisor: the control socket needs a user name and password, kept where the suite's tools find them.

``avoviirscollector supervise`` calls :func:`ensure_credentials` before it starts supervisord: it keeps the
credentials in ``$VIIRS_BASE/run/supervisor.auth`` (JSON ``{"username", "password"}``, mode 0600, owned by the
suite's user). A file that is already there, ours and 0600 is reused, so an operator may write their own; otherwise a
new random password is generated. supervisord gets the user name and the password's SHA-1 (``{SHA}...``, never the
password itself) through ``AVO_SUPERVISOR_USER`` and ``AVO_SUPERVISOR_PASSWORD_SHA`` in its environment, which
``supervisord.conf``'s ``[unix_http_server]`` reads; the socket itself is mode 0700.

Who finds them
    - ``supervisorctl -c supervisord.conf ...``: the ``[ctlplugin:avoviirscollector]`` section of supervisord.conf
      loads :func:`make_ctl_plugin`, which reads the file and logs supervisorctl in (unless ``-u``/``-p`` were given).
      Same command as before; only the suite's user (or root) can read the file.
    - ``avoviirscollector status``, the monitor and anything else speaking XML-RPC: :func:`read_credentials`
      (supervisor_client.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

CREDENTIALS_NAME = "supervisor.auth"
USERNAME = "avo"


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    def __repr__(self) -> str:  # never show the password in a traceback or a log line
        return f"Credentials(username={self.username!r}, password=...)"

    @property
    def sha(self) -> str:
        """The form supervisord.conf accepts for ``password=``: ``{SHA}`` and the hex SHA-1 of the password."""
        return "{SHA}" + hashlib.sha1(self.password.encode()).hexdigest()


def credentials_path(run_dir: Path) -> Path:
    return run_dir / CREDENTIALS_NAME


def read_credentials(path: Path) -> Credentials | None:
    """The credentials in ``path``, or None when it is missing or unreadable."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        username, password = data["username"], data["password"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not (isinstance(username, str) and isinstance(password, str) and username and password):
        return None
    return Credentials(username, password)


def _private(path: Path) -> bool:
    try:
        st = path.stat()
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o077


def ensure_credentials(run_dir: Path, log: logging.Logger) -> Credentials:
    """Reuse ``run/supervisor.auth`` if it is ours, 0600 and valid; otherwise write a new one (atomically, 0600)."""
    path = credentials_path(run_dir)
    if path.exists():
        found = read_credentials(path) if _private(path) else None
        if found is not None:
            log.info("supervisord's control socket: user %s, password from %s", found.username, path)
            return found
        log.warning("%s is not a private (0600, ours) valid credentials file: writing a new one", path)
    creds = Credentials(USERNAME, secrets.token_urlsafe(24))
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, json.dumps({"username": creds.username, "password": creds.password}).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    log.info("supervisord's control socket: user %s, new password generated into %s (mode 0600)", creds.username,
             path)
    return creds


def supervisord_environment(creds: Credentials) -> dict[str, str]:
    """What supervisord.conf's ``[unix_http_server]`` reads: the user name and the password's ``{SHA}`` form."""
    return {"AVO_SUPERVISOR_USER": creds.username, "AVO_SUPERVISOR_PASSWORD_SHA": creds.sha}


class _Plugin:
    """A supervisorctl plugin with no commands: it only logged supervisorctl in."""

    def __init__(self, controller) -> None:
        self.ctl = controller


def make_ctl_plugin(controller, credentials: str = "", **_: str) -> _Plugin:
    """supervisorctl plugin factory (``[ctlplugin:avoviirscollector]`` in supervisord.conf): set the user name and
    password from the ``credentials`` file unless given on the command line. A missing file changes nothing:
    supervisorctl then says the server requires authentication."""
    options = controller.options
    if not options.username and credentials:
        found = read_credentials(Path(credentials))
        if found is not None:
            options.username, options.password = found.username, found.password
    return _Plugin(controller)
