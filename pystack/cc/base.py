"""The pluggable congestion-control interface, shaped like Linux ``struct tcp_congestion_ops``.

An algorithm is a :class:`CongestionOps` subclass with a ``name`` (the
``TCP_CONGESTION`` / ``net.ipv4.tcp_congestion_control`` string).  The engine owns one
:class:`CcState` per connection, keeps its bookkeeping fields current (``packets_out``,
``srtt_us``, ``now_us``, ``is_cwnd_limited`` ...) and calls the hooks at the same points
Linux does:

* ``init`` when the algorithm is attached (through ``init_deferred``), ``release`` when it
  is detached;
* ``ssthresh`` on entering loss recovery / RTO / ECN CWR (the result becomes
  ``snd_ssthresh``; the engine saves ``prior_cwnd``/``prior_ssthresh`` first for undo);
* ``cong_avoid(ack, acked)`` on every ACK that advances ``snd_una`` while in ``OPEN``
  (``acked`` = segments newly acknowledged, cumulatively or by SACK);
* ``undo_cwnd`` when a recovery turns out to be spurious (the result becomes ``snd_cwnd``);
* ``pkts_acked`` with an RTT sample on every ACK that acknowledges data;
* ``cwnd_event`` for :class:`CaEvent` s, ``set_state`` on every ``ca_state`` change.

All units are as in Linux: windows in segments, times in integer microseconds, and the
clock is ``CcState.now_us`` which the engine sets before each call (no wall clock).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar

__all__ = [
    "TCP_INFINITE_SSTHRESH",
    "AckSample",
    "CaEvent",
    "CaState",
    "CcState",
    "CongestionOps",
    "tcp_cong_avoid_ai",
    "tcp_in_slow_start",
    "tcp_slow_start",
]

TCP_INFINITE_SSTHRESH = 0x7FFFFFFF
"""Linux ``TCP_INFINITE_SSTHRESH``: ssthresh before the first congestion event."""

TCP_INIT_CWND = 10
"""RFC 6928 initial window (Linux ``TCP_INIT_CWND``)."""


class CaState(enum.IntEnum):
    """Linux ``enum tcp_ca_state`` (``TCP_CA_*``)."""

    OPEN = 0
    DISORDER = 1
    CWR = 2
    RECOVERY = 3
    LOSS = 4


class CaEvent(enum.IntEnum):
    """Linux ``enum tcp_ca_event`` (``CA_EVENT_*``)."""

    TX_START = 0  # first transmit when no packets in flight
    CWND_RESTART = 1  # congestion window restart after idle
    COMPLETE_CWR = 2  # end of congestion recovery
    LOSS = 3  # loss timeout (RTO)
    ECN_NO_CE = 4  # ECT set, but not CE marked
    ECN_IS_CE = 5  # received CE marked IP packet


@dataclass(slots=True)
class CcState:
    """Per-connection fields an algorithm reads and writes (Linux ``struct tcp_sock`` subset).

    ``snd_cwnd``/``snd_ssthresh`` are in segments of ``mss`` bytes, as in Linux.
    """

    mss: int
    snd_cwnd: int = TCP_INIT_CWND
    snd_ssthresh: int = TCP_INFINITE_SSTHRESH
    snd_cwnd_cnt: int = 0  # fractional cwnd growth counter (linear increase credits)
    snd_cwnd_clamp: int = 0xFFFFFFFF
    prior_cwnd: int = 0  # cwnd before the last reduction, for undo
    prior_ssthresh: int = 0
    packets_out: int = 0  # segments in flight (engine keeps it current)
    srtt_us: int = 0
    min_rtt_us: int = 0
    delivered: int = 0
    now_us: int = 0  # engine sets before each call (deterministic clock)
    is_cwnd_limited: bool = True  # cong_avoid must not grow cwnd when False (RFC 7661 spirit)
    ca_state: CaState = CaState.OPEN
    priv: object = None  # algorithm-private state (like inet_csk_ca)


@dataclass(slots=True)
class AckSample:
    """Linux ``struct ack_sample``: what one ACK told us."""

    pkts_acked: int
    rtt_us: int  # -1 if this ACK gave no valid RTT sample (Karn)
    in_flight: int


def tcp_in_slow_start(tp: CcState) -> bool:
    """Linux ``tcp_in_slow_start``: cwnd below ssthresh."""
    return tp.snd_cwnd < tp.snd_ssthresh


def tcp_slow_start(tp: CcState, acked: int) -> int:
    """Linux ``tcp_slow_start`` (RFC 5681 §3.1 with RFC 3465 L=infinity as Linux).

    Grows cwnd by ``acked`` segments but not beyond ``snd_ssthresh``; returns the
    ``acked`` left over once ssthresh is reached, to be used for congestion avoidance.
    """
    cwnd = min(tp.snd_cwnd + acked, tp.snd_ssthresh)
    acked -= cwnd - tp.snd_cwnd
    tp.snd_cwnd = min(cwnd, tp.snd_cwnd_clamp)
    return max(acked, 0)


def tcp_cong_avoid_ai(tp: CcState, w: int, acked: int) -> None:
    """Linux ``tcp_cong_avoid_ai``: add one segment to cwnd per ``w`` segments acked.

    ``snd_cwnd_cnt`` accumulates acked segments; each time it reaches ``w`` cwnd grows by
    one and ``w`` is subtracted (several at once if ``acked`` is large).
    """
    w = max(w, 1)
    # If credits accumulated at a higher w, apply them gently now.
    if tp.snd_cwnd_cnt >= w:
        tp.snd_cwnd_cnt = 0
        tp.snd_cwnd += 1
    tp.snd_cwnd_cnt += acked
    if tp.snd_cwnd_cnt >= w:
        delta = tp.snd_cwnd_cnt // w
        tp.snd_cwnd_cnt -= delta * w
        tp.snd_cwnd += delta
    tp.snd_cwnd = min(tp.snd_cwnd, tp.snd_cwnd_clamp)


class CongestionOps:
    """Base class of a congestion-control algorithm (Linux ``struct tcp_congestion_ops``).

    Subclass it, set ``name`` and override at least :meth:`ssthresh` and
    :meth:`cong_avoid`; register it with :func:`pystack.cc.register`.  One instance is
    created per connection (``pystack.cc.get``), per-connection state may live on the
    instance or in ``tp.priv``; a class that keeps it all in ``tp.priv`` may set ``shared =
    True`` so that connections share one instance.
    """

    name: ClassVar[str] = ""
    shared: ClassVar[bool] = False
    """True (set on the class itself, not inherited): the instance holds no per-connection
    state, so one instance serves every connection (:func:`pystack.cc.for_connection`)."""

    def init(self, tp: CcState) -> None:  # noqa: B027 - optional hook
        """Called when the algorithm is attached to a connection."""

    def init_deferred(self, tp: CcState) -> None:
        """What a connection calls when it attaches the algorithm: :meth:`init`.  An
        algorithm may override it to defer making its private state until a hook first
        needs it (an idle connection then holds none), provided every hook then behaves
        exactly as after :meth:`init`."""
        self.init(tp)

    def release(self, tp: CcState) -> None:  # noqa: B027 - optional hook
        """Called when the algorithm is detached (socket close or algorithm change)."""

    def ssthresh(self, tp: CcState) -> int:
        """Required: the new slow-start threshold (segments) after loss or ECN."""
        raise NotImplementedError

    def cong_avoid(self, tp: CcState, ack: int, acked: int) -> None:
        """Required: grow ``tp.snd_cwnd`` for an ACK of ``ack`` acking ``acked`` segments."""
        raise NotImplementedError

    def undo_cwnd(self, tp: CcState) -> int:
        """The cwnd to restore after a spurious reduction (Linux ``tcp_reno_undo_cwnd``)."""
        return max(tp.snd_cwnd, tp.prior_cwnd)

    def pkts_acked(self, tp: CcState, sample: AckSample) -> None:  # noqa: B027 - optional hook
        """Optional: called with an RTT/delivery sample on each ACK acknowledging data."""

    def cwnd_event(self, tp: CcState, ev: CaEvent) -> None:  # noqa: B027 - optional hook
        """Optional: notification of a :class:`CaEvent`."""

    def set_state(self, tp: CcState, new_state: CaState) -> None:  # noqa: B027 - optional hook
        """Optional: called before ``tp.ca_state`` changes to ``new_state``."""

    def get_info(self, tp: CcState) -> dict[str, int]:
        """Optional: algorithm diagnostics for ``ss -ti`` / ``TCP_CC_INFO``."""
        return {}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"
