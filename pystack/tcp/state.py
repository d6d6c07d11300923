"""Connection states of RFC 9293 §3.3.2 and the socket option numbers (Linux values)."""

from __future__ import annotations

import enum


class TcpState(enum.IntEnum):
    """The eleven states of RFC 9293 §3.3.2 (numbered like Linux's ``TCP_*`` where possible)."""

    ESTABLISHED = 1
    SYN_SENT = 2
    SYN_RECEIVED = 3
    FIN_WAIT_1 = 4
    FIN_WAIT_2 = 5
    TIME_WAIT = 6
    CLOSED = 7
    CLOSE_WAIT = 8
    LAST_ACK = 9
    LISTEN = 10
    CLOSING = 11

    @property
    def ss_name(self) -> str:
        """The name ``ss`` prints for this state."""
        return _SS_NAMES[self]


_SS_NAMES = {
    TcpState.ESTABLISHED: "ESTAB",
    TcpState.SYN_SENT: "SYN-SENT",
    TcpState.SYN_RECEIVED: "SYN-RECV",
    TcpState.FIN_WAIT_1: "FIN-WAIT-1",
    TcpState.FIN_WAIT_2: "FIN-WAIT-2",
    TcpState.TIME_WAIT: "TIME-WAIT",
    TcpState.CLOSED: "UNCONN",
    TcpState.CLOSE_WAIT: "CLOSE-WAIT",
    TcpState.LAST_ACK: "LAST-ACK",
    TcpState.LISTEN: "LISTEN",
    TcpState.CLOSING: "CLOSING",
}

# States in which the connection is synchronized (RFC 9293 §3.5.2 "synchronized states").
SYNCHRONIZED = frozenset(
    {
        TcpState.ESTABLISHED,
        TcpState.FIN_WAIT_1,
        TcpState.FIN_WAIT_2,
        TcpState.CLOSE_WAIT,
        TcpState.CLOSING,
        TcpState.LAST_ACK,
        TcpState.TIME_WAIT,
    }
)

# Socket option levels and names: Linux's numbers, as Python's ``socket`` module has them.
SOL_SOCKET = 1
IPPROTO_TCP = 6

SO_SNDBUF = 7
SO_RCVBUF = 8
SO_KEEPALIVE = 9
SO_OOBINLINE = 10

TCP_NODELAY = 1
TCP_MAXSEG = 2
TCP_CORK = 3
TCP_KEEPIDLE = 4
TCP_KEEPINTVL = 5
TCP_KEEPCNT = 6
TCP_SYNCNT = 7
TCP_LINGER2 = 8
TCP_DEFER_ACCEPT = 9
TCP_WINDOW_CLAMP = 10
TCP_INFO = 11
TCP_QUICKACK = 12
TCP_CONGESTION = 13
TCP_USER_TIMEOUT = 18
TCP_FASTOPEN = 23  # Fast Open: listener queue length (issue 5)
TCP_NOTSENT_LOWAT = 25
TCP_FASTOPEN_CONNECT = 30  # Fast Open: defer the SYN to the first write

# Option names accepted by ``set_option``/``get_option`` and ``connect(options=...)``.
OPTION_NAMES: dict[str, tuple[int, int]] = {
    "SO_SNDBUF": (SOL_SOCKET, SO_SNDBUF),
    "SO_RCVBUF": (SOL_SOCKET, SO_RCVBUF),
    "SO_KEEPALIVE": (SOL_SOCKET, SO_KEEPALIVE),
    "SO_OOBINLINE": (SOL_SOCKET, SO_OOBINLINE),
    "TCP_NODELAY": (IPPROTO_TCP, TCP_NODELAY),
    "TCP_MAXSEG": (IPPROTO_TCP, TCP_MAXSEG),
    "TCP_CORK": (IPPROTO_TCP, TCP_CORK),
    "TCP_KEEPIDLE": (IPPROTO_TCP, TCP_KEEPIDLE),
    "TCP_KEEPINTVL": (IPPROTO_TCP, TCP_KEEPINTVL),
    "TCP_KEEPCNT": (IPPROTO_TCP, TCP_KEEPCNT),
    "TCP_SYNCNT": (IPPROTO_TCP, TCP_SYNCNT),
    "TCP_LINGER2": (IPPROTO_TCP, TCP_LINGER2),
    "TCP_DEFER_ACCEPT": (IPPROTO_TCP, TCP_DEFER_ACCEPT),
    "TCP_WINDOW_CLAMP": (IPPROTO_TCP, TCP_WINDOW_CLAMP),
    "TCP_QUICKACK": (IPPROTO_TCP, TCP_QUICKACK),
    "TCP_CONGESTION": (IPPROTO_TCP, TCP_CONGESTION),
    "TCP_USER_TIMEOUT": (IPPROTO_TCP, TCP_USER_TIMEOUT),
    "TCP_NOTSENT_LOWAT": (IPPROTO_TCP, TCP_NOTSENT_LOWAT),
    # Fast Open
    "TCP_FASTOPEN": (IPPROTO_TCP, TCP_FASTOPEN),
    "TCP_FASTOPEN_CONNECT": (IPPROTO_TCP, TCP_FASTOPEN_CONNECT),
}
