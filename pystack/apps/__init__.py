"""Server applications run on the engine's event hooks (`pystackctl attach --app ...`).

    echo               returns every byte; FIN after the peer's FIN and the last echo
    discard            reads and drops everything; closes after the peer's FIN
    http:DIR           static files from DIR over HTTP/1.1 (pystack.apps.http)
    proxy:HOST:PORT    relays each connection to a kernel TCP connection (pystack.apps.proxy)
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from pystack.tcp.connection import Connection
from pystack.tcp.engine import Listener

from .discard import Discard
from .echo import Echo

AppFactory = Callable[[Connection], object]

APPS: dict[str, AppFactory] = {"echo": Echo, "discard": Discard}
APP_SPECS = ("echo", "discard", "http:DIR", "proxy:HOST:PORT")

log = logging.getLogger("pystack.apps")


def app_factory(spec: str, loop: object = None) -> AppFactory:
    """The factory for an `--app` spec; ValueError (one line) for a bad spec. `proxy`
    needs the stack's loop (a pystack.stack.Stack) to service its upstream sockets."""
    kind, _, arg = spec.partition(":")
    if spec in APPS:
        return APPS[spec]
    if kind == "http" and arg:
        from .http import http_app

        return http_app(arg)
    if kind == "proxy" and arg:
        from .proxy import proxy_app

        if loop is None:
            raise ValueError("the proxy app needs the stack's loop")
        return proxy_app(arg, loop)  # type: ignore[arg-type]
    raise ValueError(f"--app {spec}: expected one of {', '.join(APP_SPECS)}")


def serve(listener: Listener, factory: AppFactory) -> None:
    """Run factory(conn) for every connection the listener accepts. A factory that fails
    (out of file descriptors, a bug) resets that connection, never the stack."""

    def on_accept(lst: object, kind: str) -> None:
        while (conn := listener.accept()) is not None:
            try:
                factory(conn)
            except Exception:
                log.exception("cannot start the app for a connection on port %d; resetting",
                              listener.port)
                conn.abort()

    listener.on_event = on_accept
    on_accept(listener, "accept")
