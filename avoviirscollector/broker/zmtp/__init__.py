"""task_broker's own ZMTP listener for TASK_PORT (the server side of a ROUTER for the workers' REQ sockets, with
ZMTP 3.1 heartbeats and the "no task" push to silent peers): ``codec.py`` is the wire format, pure;
``listener.py`` the non-blocking server (:class:`ZmtpListener`). See listener.py's docstring for what it does and
why (notes/ha.md)."""

from avoviirscollector.broker.zmtp.listener import ConnectionInfo, Request, ZmtpListener

__all__ = ["ConnectionInfo", "Request", "ZmtpListener"]
