"""``struct tcp_info`` (Linux 6.x, 248 bytes): the packer lives in
:mod:`pystack.tcp.tcpinfo` (the engine answers ``getsockopt(IPPROTO_TCP, TCP_INFO)``
itself); this module keeps the API's names."""

from __future__ import annotations

from pystack.tcp.tcpinfo import (
    OFFSETS,
    SIZE,
    TCP_INFO_FIELDS,
    TCPI_OPT_ECN,
    TCPI_OPT_ECN_SEEN,
    TCPI_OPT_SACK,
    TCPI_OPT_SYN_DATA,
    TCPI_OPT_TIMESTAMPS,
    TCPI_OPT_WSCALE,
    pack_tcp_info,
    unpack_tcp_info,
)

__all__ = [
    "OFFSETS",
    "SIZE",
    "TCPI_OPT_ECN",
    "TCPI_OPT_ECN_SEEN",
    "TCPI_OPT_SACK",
    "TCPI_OPT_SYN_DATA",
    "TCPI_OPT_TIMESTAMPS",
    "TCPI_OPT_WSCALE",
    "TCP_INFO_FIELDS",
    "pack_tcp_info",
    "unpack_tcp_info",
]
