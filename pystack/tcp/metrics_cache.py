"""The per-destination TCP metrics cache (Linux ``net/ipv4/tcp_metrics.c``).

When a connection closes in an orderly way (Linux ``tcp_time_wait`` and the LAST-ACK
completion in ``tcp_rcv_state_process`` call ``tcp_update_metrics``) what it learnt about
the path is saved under its (local address, remote address) pair: smoothed RTT, RTT
variance, ssthresh, cwnd and reordering.  A later connection between the same addresses
starts from it once established (``tcp_init_metrics``, called by ``tcp_init_transfer``):

* the first RTO comes from the cached RTT when that is above the handshake's sample
  (RTO = RTT + max(2 RTT, rto_min)); with neither, RFC 6298 §5.7's 3 s fallback;
* ssthresh from the cache (only with ``tcp_no_ssthresh_metrics_save=0``; Linux >= 5.6
  defaults to 1 and neither saves nor reads it);
* the duplicate threshold (reordering) from the cache.

``tcp_no_metrics_save=1`` stops the saving only; entries already cached are still read,
as on Linux.  The Fast Open cookies Linux also keeps in these entries live in
``pystack/tcp/fastopen.py``.

Bounds: at most :data:`TCP_METRICS_LIMIT` entries, the least recently updated one is
reused when full (Linux reclaims the oldest ``tcpm_stamp`` of a hash chain); an entry not
updated for :data:`TCP_METRICS_TIMEOUT` (1 h) is forgotten when next looked up (Linux
``tcpm_check_stamp`` resets it then).  RTT values are float seconds, windows segments.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

from pystack.cc.base import TCP_INFINITE_SSTHRESH, CaState, CcState, tcp_in_slow_start

if TYPE_CHECKING:
    from pystack.tcp.connection import Connection
    from pystack.tcp.settings import Settings

__all__ = ["TCP_METRICS_LIMIT", "TCP_METRICS_TIMEOUT", "TCP_TIMEOUT_FALLBACK", "MetricsCache",
           "TcpMetrics"]

TCP_METRICS_TIMEOUT = 3600.0  # Linux TCP_METRICS_TIMEOUT (60 * 60 * HZ)
TCP_METRICS_LIMIT = 1024  # entries kept (Linux: hash slots x TCP_METRICS_RECLAIM_DEPTH)
TCP_TIMEOUT_FALLBACK = 3.0  # Linux TCP_TIMEOUT_FALLBACK, RFC 6298 §5.7


class TcpMetrics:
    """One destination's entry (Linux ``struct tcp_metrics_block``); 0 = not known."""

    __slots__ = ("rtt", "rttvar", "ssthresh", "cwnd", "reordering", "stamp")

    def __init__(self, stamp: float) -> None:
        self.rtt = 0.0  # seconds (Linux TCP_METRIC_RTT)
        self.rttvar = 0.0  # seconds, RFC 6298 RTTVAR scale (TCP_METRIC_RTTVAR)
        self.ssthresh = 0  # segments
        self.cwnd = 0  # segments
        self.reordering = 0  # segments
        self.stamp = stamp  # last update (Linux tcpm_stamp)

    def as_dict(self) -> dict[str, float | int]:
        """The fields ``ip tcp_metrics show`` prints (rtt/rttvar in µs)."""
        return {"rtt": round(self.rtt * 1e6), "rttvar": round(self.rttvar * 1e6),
                "ssthresh": self.ssthresh, "cwnd": self.cwnd, "reordering": self.reordering}

    def __repr__(self) -> str:
        return f"TcpMetrics({self.as_dict()}, stamp={self.stamp})"


class MetricsCache:
    """The cache of one engine, keyed by (local_ip, remote_ip) as Linux keys it."""

    __slots__ = ("settings", "limit", "_entries")

    def __init__(self, settings: Settings, limit: int = TCP_METRICS_LIMIT) -> None:
        if limit < 1:
            raise ValueError(f"metrics cache limit must be positive, got {limit}")
        self.settings = settings
        self.limit = limit
        self._entries: OrderedDict[tuple[int, int], TcpMetrics] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, local_ip: int, remote_ip: int, now: float) -> TcpMetrics | None:
        """The live entry for a pair, or None (a stale one is dropped, tcpm_check_stamp)."""
        key = (local_ip, remote_ip)
        tm = self._entries.get(key)
        if tm is not None and now > tm.stamp + TCP_METRICS_TIMEOUT:
            del self._entries[key]
            return None
        return tm

    def flush(self, remote_ip: int | None = None) -> None:
        """``ip tcp_metrics flush [address]``: forget every entry, or one destination's."""
        if remote_ip is None:
            self._entries.clear()
            return
        for key in [k for k in self._entries if k[1] == remote_ip]:
            del self._entries[key]

    def _create(self, key: tuple[int, int], now: float) -> TcpMetrics:
        """Linux ``tcpm_new``: a fresh entry; when full, the least recently updated one
        is reused."""
        if len(self._entries) >= self.limit:
            self._entries.popitem(last=False)
        tm = self._entries[key] = TcpMetrics(now)
        return tm

    # ---------------------------------------------------------------------------------
    # Linux tcp_update_metrics: at tcp_time_wait and at the LAST-ACK completion
    # ---------------------------------------------------------------------------------
    def save(self, c: Connection, now: float) -> None:
        s = self.settings
        if s.tcp_no_metrics_save:
            return
        r = c.rtt
        key = (c.local_ip, c.remote_ip)
        if r.backoff or r.srtt is None:
            # No usable RTT estimate (timeouts): reset the cached RTT, nothing else.
            tm = self.get(key[0], key[1], now)
            if tm is not None:
                tm.rtt = 0.0
            return
        tm = self.get(key[0], key[1], now) or self._create(key, now)
        srtt = r.srtt  # a sample of 0 counts (Linux keeps srtt_us >= 1)
        # RTT: a larger estimate replaces the cached one, a smaller one is averaged in
        # (1/8 weight): overestimating the RTT is always safer than underestimating it.
        m = tm.rtt - srtt
        tm.rtt = srtt if m <= 0 else tm.rtt - m / 8
        dev = max(abs(m), r.rttvar or 0.0)
        var = tm.rttvar
        tm.rttvar = dev if dev >= var else var - (var - dev) / 4
        tp = c.ccs
        if tp is not None:
            self._save_windows(c, tp, tm)
        tm.stamp = now
        self._entries.move_to_end(key)

    def _save_windows(self, c: Connection, tp: CcState, tm: TcpMetrics) -> None:
        s = self.settings
        ssth_ok = not s.tcp_no_ssthresh_metrics_save
        cwnd = tp.snd_cwnd
        if tp.snd_ssthresh >= TCP_INFINITE_SSTHRESH:
            # Still in the initial slow start: only ever raise what is cached.
            if ssth_ok and tm.ssthresh and cwnd >> 1 > tm.ssthresh:
                tm.ssthresh = cwnd >> 1
            if cwnd > tm.cwnd:
                tm.cwnd = cwnd
        elif not tcp_in_slow_start(tp) and tp.ca_state == CaState.OPEN:
            # Congestion avoidance: cwnd is reliable.
            if ssth_ok:
                tm.ssthresh = max(cwnd >> 1, tp.snd_ssthresh)
            tm.cwnd = (tm.cwnd + cwnd) >> 1
        else:
            # Slow start after a loss or still recovering: cwnd means little.
            tm.cwnd = (tm.cwnd + tp.snd_ssthresh) >> 1
            if ssth_ok and tm.ssthresh and tp.snd_ssthresh > tm.ssthresh:
                tm.ssthresh = tp.snd_ssthresh
            reo = c._reordering
            if tm.reordering < reo and reo != s.tcp_reordering:
                tm.reordering = reo

    # ---------------------------------------------------------------------------------
    # Linux tcp_init_metrics: when the connection becomes established
    # ---------------------------------------------------------------------------------
    def init_conn(self, c: Connection, tp: CcState, now: float) -> None:
        """Seed a newly established connection's RTO, ssthresh and reordering."""
        tp.snd_ssthresh = TCP_INFINITE_SSTHRESH
        r = c.rtt
        crtt = 0.0
        tm = self.get(c.local_ip, c.remote_ip, now)
        if tm is not None:
            ssth = 0 if self.settings.tcp_no_ssthresh_metrics_save else tm.ssthresh
            if ssth:
                tp.snd_ssthresh = min(ssth, tp.snd_cwnd_clamp)
            if tm.reordering and c._reordering != tm.reordering:
                c._reordering = tm.reordering
            crtt = tm.rtt
        if crtt > (r.srtt or 0.0):
            # The handshake's sample (small segments) is a poor seed: the first RTO uses
            # the cached RTT, the estimator itself is left alone (Linux).
            r.rto = min(crtt + max(2 * crtt, r.min_rto), r.max_rto)
        elif r.srtt is None:
            # RFC 6298 §5.7: no RTT sample from the handshake (it was retransmitted or
            # came from a SYN cookie) and nothing cached: 3 s.
            r.rto = min(TCP_TIMEOUT_FALLBACK, r.max_rto)
