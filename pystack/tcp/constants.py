"""Linux TCP constants, per-connection flag bits and Linux's timeout arithmetic."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from pystack.tcp.state import SYNCHRONIZED, TcpState

EventCallback = Callable[[Any, str], None]

# Linux constants (include/net/tcp.h).
TCP_TIMEWAIT_LEN = 60.0  # 2*MSL as Linux uses it (RFC 9293 §3.4.2 suggests MSL = 2 min)
TCP_FIN_TIMEOUT_MAX = 120
TCP_RTO_MIN = 0.2
TCP_RTO_MAX = 120.0
TCP_TIMEOUT_INIT = 1.0
TCP_ATO_MIN = 0.04
TCP_DELACK_MAX = 0.2
TCP_MAX_QUICKACKS = 16
TCP_MSS_DEFAULT = 536  # RFC 9293 §3.7.1: assumed when the peer sends no MSS option
TCP_MIN_MSS = 88
TCP_MAX_WSCALE = 14  # RFC 7323 §2.3
TCP_INIT_CWND = 10  # RFC 6928
MAX_TCP_KEEPIDLE = 32767
MAX_TCP_KEEPINTVL = 32767
MAX_TCP_KEEPCNT = 127
MAX_TCP_SYNCNT = 127
MAX_TCP_WINDOW = 32767
SOCK_MIN_SNDBUF = 4608
SOCK_MIN_RCVBUF = 2304
CORK_CEILING = 0.2  # tcp(7) TCP_CORK: "a 200 millisecond ceiling"
PAWS_IDLE = 24 * 86400.0  # RFC 7323 §5.5: TS.Recent is invalid after 24 days idle
TS_OPT_LEN = 12  # aligned timestamp option (RFC 7323 Appendix A)

# Connection flags (one int per connection instead of many attributes).
F_NODELAY = 1 << 0
F_CORK = 1 << 1
F_KEEPALIVE = 1 << 2
F_OOBINLINE = 1 << 3
F_TS = 1 << 4  # timestamps offered (SYN-SENT) / negotiated (later)
F_SACK = 1 << 5
F_WSCALE = 1 << 6
F_PASSIVE = 1 << 7  # created by a listener
F_ORPHAN = 1 << 8  # close() was called: no user any more
F_WR_SHUT = 1 << 9  # FIN queued (shutdown_write / close)
F_FIN_SENT = 1 << 10
F_RD_EOF = 1 << 11  # peer's FIN received in order
F_ACK_NOW = 1 << 12
F_SEND_SYN = 1 << 13
F_RTX_ONE = 1 << 14  # retransmit the segment at SND.UNA (fast retransmit / partial ACK)
F_SNDBUF_LOCK = 1 << 15
F_RCVBUF_LOCK = 1 << 16
F_WANT_WRITE = 1 << 17
F_PINGPONG = 1 << 18  # delayed-ACK "interactive" mode (TCP_QUICKACK 0)
F_ERR_REPORTED = 1 << 19
F_DEFER_ACKED = 1 << 20  # TCP_DEFER_ACCEPT: bare ACK of our SYN-ACK seen
F_PERSIST = 1 << 21  # the retransmission timer is the persist timer
F_PUSH_ONCE = 1 << 22  # send partial segments once despite Nagle/cork
F_CLOSED_EVT = 1 << 23
F_SYN_RETRANS = 1 << 24  # SYN or SYN-ACK was retransmitted (Karn)
F_URG_INLINE_SEEN = 1 << 25
F_IN_ORPHANS = 1 << 26  # counted in engine.orphan_count
F_IN_TW = 1 << 27  # counted in engine.tw_count
# Tail Loss Probe (recovery.py): the retransmission timer slot doubles as the probe timer,
# as Linux's ICSK_TIME_LOSS_PROBE shares icsk_retransmit_timer.
F_LOSS_PROBE = 1 << 30  # _t_rtx is the probe timeout (PTO), not the RTO
F_TLP_ARM = 1 << 31  # an ACK advanced SND.UNA: reschedule the probe (FLAG_SET_XMIT_TIMER)
TCP_TIMEOUT_MIN = 0.002  # Linux TCP_TIMEOUT_MIN (2 jiffies at HZ=1000)

# Urgent data state (Linux tp->urg_data).
URG_NONE = 0
URG_NOTYET = 1
URG_VALID = 2
URG_READ = 3

_SYNC_NOT_TW = frozenset(SYNCHRONIZED - {TcpState.TIME_WAIT})
_SEND_STATES = frozenset(
    {TcpState.SYN_SENT, TcpState.SYN_RECEIVED, TcpState.ESTABLISHED, TcpState.CLOSE_WAIT}
)


def model_timeout(boundary: int, rto_base: float) -> float:
    """Linux ``tcp_model_timeout``: seconds ``boundary`` backed-off RTOs take from ``rto_base``.

    Used to turn ``tcp_retries2`` into a time limit (15 -> 924.6 s with a 200 ms base).
    """
    thresh = int(math.log2(TCP_RTO_MAX / rto_base))
    if boundary <= thresh:
        return ((2 << boundary) - 1) * rto_base
    return ((2 << thresh) - 1) * rto_base + (boundary - thresh) * TCP_RTO_MAX


def secs_to_retrans(seconds: int, timeout: int = 1, rto_max: int = 120) -> int:
    """Linux ``secs_to_retrans`` (TCP_DEFER_ACCEPT seconds -> SYN-ACK retransmissions)."""
    res = 0
    if seconds > 0:
        period = timeout
        res = 1
        while seconds > period and res < 255:
            res += 1
            timeout = min(timeout << 1, rto_max)
            period += timeout
    return res


def retrans_to_secs(retrans: int, timeout: int = 1, rto_max: int = 120) -> int:
    """Linux ``retrans_to_secs``: the inverse of :func:`secs_to_retrans`."""
    period = 0
    if retrans > 0:
        period = timeout
        while retrans > 1:
            retrans -= 1
            timeout = min(timeout << 1, rto_max)
            period += timeout
    return period
