"""Retransmission timer computation: RFC 6298 with Linux's bounds.

:class:`RttEstimator` keeps SRTT/RTTVAR and the current RTO (in float seconds):

* §2.1 before any sample RTO = ``initial_rto`` (1 s, Linux ``TCP_TIMEOUT_INIT``);
* §2.2 first sample R: SRTT = R, RTTVAR = R/2;
* §2.3 later samples R': RTTVAR = 3/4 RTTVAR + 1/4 |SRTT - R'| (with the *old* SRTT),
  then SRTT = 7/8 SRTT + 1/8 R';
* §2.2-2.4 RTO = SRTT + max(G, 4 * RTTVAR) with clock granularity G = 1 ms, clamped to
  [``min_rto``, ``max_rto``].  RFC 6298 says min 1 s / max >= 60 s; Linux uses 200 ms
  (``TCP_RTO_MIN``) and 120 s (``TCP_RTO_MAX``), which are the defaults here.  (Linux's own
  estimator differs in detail: it floors the variance term at rto_min instead of clamping
  the sum; this class implements the RFC formula.)
* §5.5 on a retransmission timeout the RTO is doubled ("backed off"), capped at
  ``max_rto``; §5.7 a new RTT sample recomputes the RTO and so clears the backoff.

Karn's algorithm (RFC 6298 §3) is the **caller's** job: never call :meth:`sample` with an
RTT measured on a retransmitted segment (unless the TCP timestamp option disambiguates
it, RFC 7323 §4), and keep the backed-off RTO until an ACK for new, never-retransmitted
data provides a valid sample.
"""

from __future__ import annotations

import math

__all__ = ["CLOCK_GRANULARITY", "RttEstimator"]

CLOCK_GRANULARITY = 0.001
"""G of RFC 6298 §2: 1 ms (the deterministic clock has microsecond resolution)."""

_ALPHA = 1 / 8
_BETA = 1 / 4
_K = 4


class RttEstimator:
    """SRTT/RTTVAR/RTO state of one connection (RFC 6298).  Times are float seconds."""

    __slots__ = ("min_rto", "max_rto", "initial_rto", "srtt", "rttvar", "rto", "backoff")

    def __init__(
        self, min_rto: float = 0.2, max_rto: float = 120.0, initial_rto: float = 1.0
    ) -> None:
        if not 0 < min_rto <= max_rto:
            raise ValueError(f"need 0 < min_rto <= max_rto, got {min_rto}, {max_rto}")
        if not initial_rto > 0:
            raise ValueError(f"initial_rto must be positive, got {initial_rto}")
        self.min_rto = min_rto
        self.max_rto = max_rto
        self.initial_rto = initial_rto
        self.srtt: float | None = None
        self.rttvar: float | None = None
        self.rto: float = initial_rto
        self.backoff: int = 0
        self.reset()

    def reset(self) -> None:
        """Forget all samples: back to the RFC 6298 §2.1 state (RTO = initial_rto)."""
        self.srtt = None
        self.rttvar = None
        self.rto = min(self.initial_rto, self.max_rto)
        self.backoff = 0

    def _base_rto(self) -> float:
        assert self.srtt is not None and self.rttvar is not None
        rto = self.srtt + max(CLOCK_GRANULARITY, _K * self.rttvar)  # §2.2 / §2.3
        return min(max(rto, self.min_rto), self.max_rto)  # §2.4 / §2.5

    def sample(self, rtt: float) -> None:
        """Feed one valid RTT measurement (seconds).  Karn's rule is the caller's job."""
        if not (rtt >= 0 and math.isfinite(rtt)):
            raise ValueError(f"RTT sample must be a finite non-negative number, got {rtt!r}")
        if self.srtt is None or self.rttvar is None:
            # §2.2: first measurement.
            self.srtt = rtt
            self.rttvar = rtt / 2
        else:
            # §2.3: RTTVAR first, using the SRTT from before this sample.
            self.rttvar = (1 - _BETA) * self.rttvar + _BETA * abs(self.srtt - rtt)
            self.srtt = (1 - _ALPHA) * self.srtt + _ALPHA * rtt
        self.backoff = 0
        self.rto = self._base_rto()

    def on_timeout(self) -> None:
        """The retransmission timer expired: §5.5 back off the timer (double, capped)."""
        self.backoff += 1
        self.rto = min(self.rto * 2, self.max_rto)

    def tcp_info_fields(self) -> dict[str, int]:
        """``struct tcp_info`` style fields in microseconds: rtt, rttvar, rto, backoff.

        ``ss -ti`` prints them (in ms) as ``rto:`` ``rtt:<rtt>/<rttvar>`` ``backoff:``.
        Before the first sample rtt is 0 and rttvar is initial_rto/4, as Linux reports
        (its mdev starts at TCP_TIMEOUT_INIT).
        """
        if self.srtt is None or self.rttvar is None:
            rtt_us, rttvar_us = 0, round(self.initial_rto * 1e6) // 4
        else:
            rtt_us, rttvar_us = round(self.srtt * 1e6), round(self.rttvar * 1e6)
        return {
            "rtt": rtt_us,
            "rttvar": rttvar_us,
            "rto": round(self.rto * 1e6),
            "backoff": self.backoff,
        }

    def __repr__(self) -> str:
        return (
            f"RttEstimator(srtt={self.srtt}, rttvar={self.rttvar}, rto={self.rto}, "
            f"backoff={self.backoff})"
        )
