"""Asking supervisord how its programs are: XML-RPC over its unix socket, ``$VIIRS_BASE/run/supervisor.sock``.

Logs in with the credentials ``avoviirscollector supervise`` keeps beside the socket (``run/supervisor.auth``, see
supervisor_auth.py), when they are there. Read-only: it asks ``supervisor.getAllProcessInfo`` and nothing else.
avo_status and the monitor ask through :func:`ask_programs`.
"""

from __future__ import annotations

import http.client
import socket
import xmlrpc.client
from pathlib import Path
from urllib.parse import quote

from avoviirscollector.supervisor_auth import credentials_path, read_credentials

#: supervisord's control socket under ``$VIIRS_BASE`` (supervisord.conf's ``[unix_http_server]``)
SOCKET = Path("run") / "supervisor.sock"
#: what a failed question raises: no socket, refused login, a broken answer
ERRORS = (OSError, xmlrpc.client.Error, http.client.HTTPException)


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.unix_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class _UnixTransport(xmlrpc.client.Transport):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__()
        self.unix_path = path
        self.timeout = timeout

    def make_connection(self, host):
        _, self._extra_headers, _ = self.get_host_info(host)  # the Authorization header, when the URL has a user
        return _UnixHTTPConnection(self.unix_path, self.timeout)


def socket_path(viirs_base: Path) -> Path:
    """supervisord's socket of the suite at ``viirs_base``."""
    return viirs_base / SOCKET


def supervisor_programs(sock_path: Path, timeout: float = 3.0) -> list[dict]:
    """Every process supervisord manages, as {name, group, state, description, pid, start}; raises :data:`ERRORS`.

    ``name`` is ``group:name`` for a process of a group of another name."""
    creds = read_credentials(credentials_path(sock_path.parent))
    login = f"{quote(creds.username, safe='')}:{quote(creds.password, safe='')}@" if creds else ""
    proxy = xmlrpc.client.ServerProxy(f"http://{login}localhost/RPC2", transport=_UnixTransport(str(sock_path),
                                                                                                  timeout))
    infos = proxy.supervisor.getAllProcessInfo()
    programs = []
    for info in infos:
        name = info["name"] if info["group"] == info["name"] else f"{info['group']}:{info['name']}"
        programs.append({"name": name, "group": info["group"], "state": info["statename"],
                         "description": info.get("description", ""), "pid": info.get("pid", 0),
                         "start": info.get("start", 0)})
    return programs


def ask_programs(viirs_base: Path) -> tuple[list[dict], str | None]:
    """supervisord's processes (:func:`supervisor_programs`), or none and why it did not answer (``Type: text``)."""
    try:
        return supervisor_programs(socket_path(viirs_base)), None
    except ERRORS as err:
        return [], f"{type(err).__name__}: {err}"
