"""Server applications run on the engine's event hooks (`pystackctl attach --app ...`)."""

from __future__ import annotations

from collections.abc import Callable

from pystack.tcp.connection import Connection
from pystack.tcp.engine import Listener

from .discard import Discard
from .echo import Echo

AppFactory = Callable[[Connection], object]

APPS: dict[str, AppFactory] = {"echo": Echo, "discard": Discard}


def serve(listener: Listener, factory: AppFactory) -> None:
    """Run factory(conn) for every connection the listener accepts."""

    def on_accept(lst: object, kind: str) -> None:
        while (conn := listener.accept()) is not None:
            factory(conn)

    listener.on_event = on_accept
    on_accept(listener, "accept")
