"""Pluggable congestion control: a name registry like Linux ``tcp_register_congestion_control``.

Each algorithm is a :class:`~pystack.cc.base.CongestionOps` subclass keyed by its ``name``
(the ``TCP_CONGESTION`` socket option / ``net.ipv4.tcp_congestion_control`` string).
Importing this package registers ``reno`` and ``cubic``; :data:`DEFAULT` is ``"cubic"`` as
on Linux.  :func:`get` returns a fresh instance; :func:`for_connection` is what a connection
uses: the one shared instance of an algorithm that keeps all its per-connection state in
``tp.priv`` (its class sets ``shared = True``: ``reno`` and ``cubic``), else a fresh one
(memory: an idle connection holds no algorithm object of its own).  An unknown name raises
:class:`UnknownAlgorithm` (a ``KeyError``), which the socket layer maps to ``ENOENT``.
:func:`available` is ``net.ipv4.tcp_available_congestion_control`` (registration order).

A connection gets ``tcp_congestion_control`` (or the TCP_CONGESTION it was given) when it
becomes established.  Setting TCP_CONGESTION on a live connection switches at once, as
Linux ``tcp_reinit_congestion_control``: the old algorithm's ``release``, its private state
cleared, the new one's ``init``; cwnd and ssthresh carry over.

Registering your own algorithm from Python -- here a Scalable-TCP-like one (cwnd grows by
one segment per 50 acknowledged, a loss keeps 7/8 of it)::

    >>> from pystack import cc
    >>> from pystack.cc.base import (CcState, CongestionOps, tcp_cong_avoid_ai,
    ...                              tcp_in_slow_start, tcp_slow_start)
    >>> @cc.register
    ... class Scalable(CongestionOps):
    ...     name = "scalable"
    ...     def ssthresh(self, tp):  # on loss or ECN: keep 7/8 (Reno keeps 1/2)
    ...         return max(tp.snd_cwnd - (tp.snd_cwnd >> 3), 2)
    ...     def cong_avoid(self, tp, ack, acked):  # windows are in segments, as in Linux
    ...         if not tp.is_cwnd_limited:
    ...             return
    ...         if tcp_in_slow_start(tp):
    ...             acked = tcp_slow_start(tp, acked)
    ...         tcp_cong_avoid_ai(tp, min(tp.snd_cwnd, 50), acked)
    >>> "scalable" in cc.available()
    True
    >>> tp = CcState(mss=1448, snd_cwnd=80); ops = cc.get("scalable"); ops.init(tp)
    >>> ops.ssthresh(tp)
    70
    >>> cc.unregister("scalable")

Use it for one connection with ``conn.set_option("TCP_CONGESTION", "scalable")`` (before or
after the handshake) or for all with ``Settings(tcp_congestion_control="scalable")``.
Optional hooks (``init``, ``release``, ``undo_cwnd``, ``pkts_acked``, ``cwnd_event``,
``set_state``, ``get_info``) are listed in :mod:`pystack.cc.base`.
"""

from __future__ import annotations

import threading
from typing import TypeVar

from pystack.cc.base import CongestionOps

__all__ = [
    "DEFAULT",
    "TCP_CA_NAME_MAX",
    "UnknownAlgorithm",
    "available",
    "for_connection",
    "get",
    "register",
    "unregister",
]

DEFAULT = "cubic"
"""Linux's default ``net.ipv4.tcp_congestion_control``."""

TCP_CA_NAME_MAX = 16
"""Linux ``TCP_CA_NAME_MAX``: names are at most 15 bytes plus the NUL."""

_T = TypeVar("_T", bound=type[CongestionOps])

_lock = threading.Lock()
_registry: dict[str, type[CongestionOps]] = {}  # insertion order == registration order
_shared: dict[type[CongestionOps], CongestionOps] = {}  # one instance per shared class


class UnknownAlgorithm(KeyError):
    """No algorithm registered under that name (Linux: ``setsockopt`` fails with ENOENT)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        return f"unknown congestion control algorithm {self.name!r}"


def _check_name(name: object) -> str:
    if not isinstance(name, str):
        raise ValueError(f"congestion control name must be a str, not {type(name).__name__}")
    size = len(name.encode("utf-8"))
    if not 1 <= size < TCP_CA_NAME_MAX:
        limit = TCP_CA_NAME_MAX - 1
        raise ValueError(f"congestion control name {name!r} must be 1..{limit} bytes")
    if any(c.isspace() for c in name) or not name.isprintable():
        raise ValueError(f"congestion control name {name!r} must be printable, no whitespace")
    return name


def register(ops_cls: _T) -> _T:
    """Register an algorithm class under ``ops_cls.name``; usable as a class decorator.

    Like Linux ``tcp_validate_congestion_control`` the class must implement ``ssthresh``
    and ``cong_avoid`` (``undo_cwnd`` has a Reno default).  Raises ``ValueError`` for a
    bad or duplicate name (Linux: EEXIST) or a missing required hook.
    """
    if not (isinstance(ops_cls, type) and issubclass(ops_cls, CongestionOps)):
        raise ValueError(f"{ops_cls!r} is not a CongestionOps subclass")
    name = _check_name(getattr(ops_cls, "name", None))
    for hook in ("ssthresh", "cong_avoid"):
        if getattr(ops_cls, hook) is getattr(CongestionOps, hook):
            raise ValueError(f"congestion control {name!r} does not implement {hook}()")
    with _lock:
        if name in _registry:
            raise ValueError(f"congestion control {name!r} already registered")
        _registry[name] = ops_cls
    return ops_cls


def unregister(name: str) -> None:
    """Remove an algorithm (Linux ``tcp_unregister_congestion_control``).

    Connections already using it keep their instance.  Unknown name: UnknownAlgorithm.
    """
    with _lock:
        if name not in _registry:
            raise UnknownAlgorithm(name)
        _shared.pop(_registry.pop(name), None)


def get(name: str) -> CongestionOps:
    """A new instance of the algorithm called ``name`` (one per connection)."""
    with _lock:
        cls = _registry.get(name)
    if cls is None:
        raise UnknownAlgorithm(name)
    return cls()


def for_connection(name: str) -> CongestionOps:
    """The instance a connection uses: shared when the class itself declares ``shared =
    True`` (stateless: all per-connection state in ``tp.priv``), else a fresh one.  A
    subclass does not inherit the promise: it may keep state on its instance."""
    with _lock:
        cls = _registry.get(name)
        if cls is None:
            raise UnknownAlgorithm(name)
        if not cls.__dict__.get("shared", False):
            return cls()
        ops = _shared.get(cls)
        if ops is None:
            ops = _shared[cls] = cls()
        return ops


def available() -> list[str]:
    """``net.ipv4.tcp_available_congestion_control``: names in registration order."""
    with _lock:
        return list(_registry)


from pystack.cc.reno import Reno  # noqa: E402  (registered below, after the registry exists)

register(Reno)

from pystack.cc.cubic import Cubic  # noqa: E402

register(Cubic)
