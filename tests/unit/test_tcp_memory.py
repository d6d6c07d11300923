"""An idle established connection stays small (``__slots__``, lazy buffers and timers)."""

import enum
import sys
import types

from pystack.cc.base import CcState, CongestionOps
from pystack.sim import SimNetwork
from pystack.tcp.buffers import RecvBuffer, SendBuffer
from pystack.tcp.connection import Connection
from pystack.tcp.engine import Listener, TcpEngine
from pystack.tcp.settings import Settings

A = 0xC6120001
B = 0xC6120002


def _deep_size(o: object, seen: set[int], skip: tuple[type, ...]) -> int:
    if id(o) in seen or isinstance(o, skip):
        return 0
    seen.add(id(o))
    n = sys.getsizeof(o)
    if isinstance(o, dict):
        n += sum(_deep_size(k, seen, skip) + _deep_size(v, seen, skip) for k, v in o.items())
    elif isinstance(o, list | tuple | set | frozenset):
        n += sum(_deep_size(v, seen, skip) for v in o)
    for cls in type(o).__mro__:
        for name in getattr(cls, "__slots__", ()):
            if name != "__weakref__" and hasattr(o, name):
                n += _deep_size(getattr(o, name), seen, skip)
    if hasattr(o, "__dict__"):
        n += _deep_size(vars(o), seen, skip)
    return n


def test_idle_established_connection_is_small() -> None:
    net = SimNetwork(seed=1)
    a, b = TcpEngine(), TcpEngine()
    net.add_host(A, a)
    net.add_host(B, b)
    lst = b.listen(0, 80)
    c = a.connect(A, B, 80)
    net.run(until=1, stop=lambda: lst.pending == 1)
    s = lst.accept()
    c.send(b"x" * 100)
    net.run_for(1)
    s.recv(1000)
    assert not hasattr(c, "__dict__")
    shared = (TcpEngine, Listener, Settings, type, types.FunctionType, enum.Enum,
              SendBuffer, RecvBuffer)
    for conn in (c, s):
        assert conn._txtimes is None and conn._t_rtx is None and conn._t_delack is None
        # The engine's own objects (the congestion-control algorithm's state belongs to
        # pystack.cc and is measured separately).
        own = _deep_size(conn, set(), (*shared, CcState, CongestionOps))
        assert own <= 2048, own
        total = _deep_size(conn, set(), shared)
        assert total <= 3072, total


def test_connection_has_no_instance_dict() -> None:
    assert "__dict__" not in dir(Connection) or not hasattr(
        Connection.__new__(Connection), "__dict__")
