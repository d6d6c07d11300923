"""SYN-ACKs sent by the XDP program with the request kept (pystack.xdp_synack), the control
plane's half.

With tcp_syncookies=1 and no pressure, the XDP program answers a SYN to a listener in its
``synack_listen`` map itself (XDP_TX: the cookie SYN-ACK, so the returning ACK is checked
as a cookie) and records the request in ``synack_req`` (bpf/pystack_xdp.h). Python never
sees the SYN: one segment, one output and one AF_XDP kick less per passive open. The
request in the map is Linux's SYN-queue entry, and this module keeps the rest of Linux's
request-socket behaviour, once per host tick:

- which listeners XDP may answer for (:meth:`XdpSynAcks.wanted`): those whose SYN-ACK the
  program can build exactly (no per-socket option, so the window, MSS and shift are the
  engine's defaults that ``SynCookies.configure`` computed) and whose accept queue has room
  (a full one drops SYNs, Linux ``tcp_conn_request``; the engine does that);
- the SYN-ACK retransmission (Linux ``reqsk_timer_handler``): TCP_TIMEOUT_INIT (1 s),
  doubled each time, ``tcp_synack_retries`` times, then the request is dropped, silently;
- the SYN-queue length each listener has in XDP (``Listener._xdp_reqs``): over the backlog
  the pressure flag goes up (``cookies.conn_request``'s rule), and XDP answers with plain
  cookies until it drains.

Differences from Linux, by design: only SYNs with timestamps (the ACK's cookie check needs
the options in the TSval; others reach the engine as before); a RST for a pending request
does not remove it (the SYN-ACK is retransmitted until it expires); an ACK that the engine
refuses (accept queue full) is not kept: the client's next segment is judged as a cookie.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from pystack.tcp.constants import F_RCVBUF_LOCK
from pystack.wire.segment import CWR, ECE, SYN, TcpOptions, TcpSegment
from pystack.xdp import abi

if TYPE_CHECKING:
    from pystack.tcp.cookies import SynCookies
    from pystack.tcp.engine import Listener, TcpEngine

__all__ = ["TIMEOUT_INIT", "XdpSynAcks"]

TIMEOUT_INIT = 1.0  # Linux TCP_TIMEOUT_INIT: the first SYN-ACK retransmission, seconds
TIMEOUT_MAX = 120.0  # TCP_RTO_MAX


def _timeout(retransmits: int) -> float:
    """Seconds until the next SYN-ACK retransmission, after ``retransmits`` of them."""
    return min(TIMEOUT_INIT * (1 << retransmits), TIMEOUT_MAX)


class XdpSynAcks:
    """The engine's view of the requests XDP holds (one per host)."""

    def __init__(self, engine: TcpEngine, cookies: SynCookies,
                 learn: Callable[[int, bytes], None] | None = None) -> None:
        self.engine = engine
        self.cookies = cookies
        self.learn = learn  # the data path's neighbour table: address -> the SYN's MAC
        # 4-tuple -> [sent_ns as read, retransmissions so far, next due (s)]
        self._timers: dict[bytes, list[float]] = {}

    @property
    def tracking(self) -> bool:
        """Requests were in the map at the last tick (their timers run)."""
        return bool(self._timers)

    def wanted(self) -> set[Listener]:
        """The listeners XDP may answer SYNs for now."""
        eng = self.engine
        if not eng.settings.xdp_synack or eng.settings.tcp_syncookies != 1:
            return set()
        return {lst for lst in eng.listeners.values()
                if not lst.closed and lst._opts is None and not lst._f & F_RCVBUF_LOCK
                and not lst.acceptq_full}

    def tick(self, now: float, reqs: Iterable[tuple[bytes, bytes]]) -> list[bytes]:
        """Read the requests (flow key, value bytes from synack_req): queue the SYN-ACKs
        that are due on the engine, count each listener's requests, and return the keys to
        take out of the map (expired, or their listener gone)."""
        eng = self.engine
        retries = eng.settings.tcp_synack_retries
        timers = self._timers
        seen: dict[bytes, list[float]] = {}
        counts: dict[Listener, int] = {}
        drop: list[bytes] = []
        for key, val in reqs:
            raddr, laddr, rport, lport = abi.FLOW_KEY.unpack(key)
            sent_ns, isn, peer_isn, peer_tsval, mss, ws, fl, mac, _ = abi.SYNACK_REQ.unpack(val)
            lst = eng.listeners.get((laddr, lport)) or eng.listeners.get((0, lport))
            if lst is None or lst.closed:
                drop.append(key)  # Linux: closing a listener drops its requests
                continue
            t = timers.get(key)
            if t is None or t[0] != sent_ns:  # new, or XDP answered a retransmitted SYN
                n = t[1] if t is not None else 0
                t = [sent_ns, n, sent_ns / 1e9 + _timeout(int(n))]
            seen[key] = t
            if now >= t[2]:
                if t[1] >= retries:
                    drop.append(key)
                    del seen[key]
                    continue
                syn = TcpSegment(raddr, laddr, rport, lport, peer_isn, 0,
                                 SYN | (ECE | CWR if fl & abi.REQ_ECN else 0), 0,
                                 options=TcpOptions(
                                     mss=mss or None,
                                     wscale=None if ws == abi.SC_WSCALE_NONE else ws,
                                     sack_permitted=bool(fl & abi.REQ_SACK),
                                     timestamp=(peer_tsval, 0)))
                synack = self.cookies.synack(syn, now)
                synack.seq = isn  # the SYN-ACK XDP sent: the cookie of its time
                if self.learn is not None:
                    self.learn(raddr, mac)  # the data path never saw the SYN's frame
                eng._tx.append(synack)
                eng.mib["TCPSynRetrans"] += 1
                eng.mib["RetransSegs"] += 1
                t[1] += 1
                t[2] = now + _timeout(int(t[1]))
            counts[lst] = counts.get(lst, 0) + 1
        self._timers = seen  # requests no longer in the map were answered (or dropped)
        for lst in eng.listeners.values():
            n = counts.get(lst, 0)
            lst._xdp_reqs = n
            if n > lst.backlog and eng.settings.tcp_syncookies:
                self.cookies.raise_pressure(lst)
        return drop

