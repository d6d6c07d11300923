"""pystack.tcp: the sans-I/O TCP engine (RFC 9293 with Linux's choices).

Public API: :class:`TcpEngine` (``listen``, ``connect``, ``input``, ``poll``,
``next_deadline``, ``on_timer``, ``mib``), :class:`Listener`, :class:`Connection`,
:class:`Settings` and :class:`TcpState`.
"""

from pystack.tcp.connection import Connection
from pystack.tcp.engine import MIB_COUNTERS, Listener, TcpEngine
from pystack.tcp.settings import Settings
from pystack.tcp.state import TcpState

__all__ = ["MIB_COUNTERS", "Connection", "Listener", "Settings", "TcpEngine", "TcpState"]
