"""TCP Reno / NewReno window growth: RFC 5681, exactly as Linux ``tcp_reno_*`` (tcp_cong.c).

* slow start (RFC 5681 §3.1): cwnd += acked while cwnd < ssthresh (``tcp_slow_start``);
* congestion avoidance (§3.1): cwnd += 1 per cwnd segments acked (``tcp_cong_avoid_ai``);
* on loss (§3.1 eq. 4, in segments as Linux): ssthresh = max(cwnd / 2, 2);
* undo of a spurious reduction: cwnd = max(cwnd, prior_cwnd).
"""

from __future__ import annotations

from pystack.cc.base import (
    CcState,
    CongestionOps,
    tcp_cong_avoid_ai,
    tcp_in_slow_start,
    tcp_slow_start,
)

__all__ = ["Reno"]


class Reno(CongestionOps):
    """Linux ``tcp_reno`` congestion control."""

    name = "reno"
    shared = True  # no per-connection state at all

    def ssthresh(self, tp: CcState) -> int:
        """Linux ``tcp_reno_ssthresh``."""
        return max(tp.snd_cwnd >> 1, 2)

    def cong_avoid(self, tp: CcState, ack: int, acked: int) -> None:
        """Linux ``tcp_reno_cong_avoid``."""
        if not tp.is_cwnd_limited:
            return
        # In "safe" area, increase.
        if tcp_in_slow_start(tp):
            acked = tcp_slow_start(tp, acked)
            if not acked:
                return
        # In dangerous area, increase slowly.
        tcp_cong_avoid_ai(tp, tp.snd_cwnd, acked)

    def undo_cwnd(self, tp: CcState) -> int:
        """Linux ``tcp_reno_undo_cwnd``."""
        return max(tp.snd_cwnd, tp.prior_cwnd)
