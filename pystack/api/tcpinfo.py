"""``struct tcp_info`` (Linux 6.x, 248 bytes): the packer lives in
:mod:`pystack.tcp.tcpinfo` (the engine answers ``getsockopt(IPPROTO_TCP, TCP_INFO)``
itself); this module keeps the API's names."""

from __future__ import annotations

from pystack.tcp.tcpinfo import *  # noqa: F403  (the names listed in its __all__)
from pystack.tcp.tcpinfo import __all__  # noqa: F401
