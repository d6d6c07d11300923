"""CUBIC congestion control: RFC 9438, computed the way Linux ``net/ipv4/tcp_cubic.c`` does.

Window growth (RFC 9438 §4.2, eq. 1)::

    W_cubic(t) = C * (t - K)^3 + W_max,      K = cbrt((W_max - cwnd_epoch) / C)

with C = ``bic_scale`` * 10 / 1024 ~= 0.4 and beta_cubic = ``beta`` / 1024 = 717/1024 ~= 0.7
(§4.6, ``ssthresh``).  As in Linux everything is integer arithmetic: time is scaled to
2^-10 s (``BICTCP_HZ``), ``K`` is a fixed-point cube root of ``cube_factor * (W_max - cwnd)``
and the per-ACK increase is expressed as ``cnt``: "add one segment per ``cnt`` acked",
applied by :func:`~pystack.cc.base.tcp_cong_avoid_ai`.  The cube root is exact
(integer Newton iteration) where Linux uses a table plus one Newton step (~0.2% error).

* Fast convergence (§4.7): on a loss below the previous W_max, W_max is lowered to
  ``cwnd * (1 + beta) / 2``.
* TCP-friendly (Reno-friendly) region (§4.3): an estimate of what Reno would have
  (``tcp_cwnd``, one segment per ``cwnd * beta_scale / 8`` acked, i.e. the RFC's
  alpha_cubic = 3(1-beta)/(1+beta) per RTT) caps ``cnt`` whenever Reno would be faster.
* Slow start exit: **Linux's HyStart** (Ha & Rhee 2011), not RFC 9406 HyStart++ — both
  heuristics of ``tcp_cubic.c``: the ACK-train length (ACKs closer than
  ``hystart_ack_delta_us`` spanning more than delay_min/2 of a round) and the delay
  increase (minimum RTT of the first ``HYSTART_MIN_SAMPLES`` of a round above
  delay_min + clamp(delay_min/8, 4 ms, 16 ms)).  On detection ssthresh := cwnd, which
  ends slow start; unlike HyStart++ there is no Conservative Slow Start phase.

Deviations from the kernel, forced by :class:`~pystack.cc.base.CcState`'s fields:

* HyStart rounds are counted with ``tp.delivered``: a round ends once a segment sent
  after the round began is delivered, i.e. ``delivered > delivered_at_start +
  packets_out_at_start`` (Linux: ``after(snd_una, end_seq)`` with end_seq = snd_nxt).  The
  engine must update ``delivered``/``packets_out`` before calling ``pkts_acked``.
* ``CA_EVENT_TX_START`` shifts the epoch by the idle time measured from the last ACK
  this algorithm saw (Linux: from ``lsndtime``, the last transmission).
* Jiffies are emulated from ``tp.now_us`` with ``HZ`` = 1000 for the epoch clock (the
  ``HZ / 32`` rate limit and the one-second HyStart hold-off after recovery).

Module-level tunables mirror the module parameters of ``tcp_cubic.ko`` (set them before
connections are created; derived constants are recomputed on use).
"""

from __future__ import annotations

from dataclasses import dataclass

from pystack.cc.base import (
    AckSample,
    CaEvent,
    CaState,
    CcState,
    CongestionOps,
    tcp_cong_avoid_ai,
    tcp_in_slow_start,
    tcp_slow_start,
)

__all__ = ["Cubic", "cubic_root", "k_fixed"]

# --- module parameters (/sys/module/tcp_cubic/parameters/*) -------------------------------
fast_convergence: int = 1
"""Turn on/off fast convergence (RFC 9438 §4.7)."""
beta: int = 717
"""beta for multiplicative decrease, scaled by 1024 (717/1024 ~= 0.7, RFC 9438 §4.6)."""
initial_ssthresh: int = 0
"""Initial value of slow start threshold (only used when ``hystart`` is off; 0 = infinite)."""
bic_scale: int = 41
"""Scale (scaled by 1024) value for the cubic function: C = bic_scale * 10 / 1024 ~= 0.4."""
tcp_friendliness: int = 1
"""Turn on/off the TCP-friendly (Reno-friendly) region (RFC 9438 §4.3)."""
hystart: int = 1
"""Turn on/off hybrid slow start."""
hystart_detect: int = 3
"""Hybrid slow start detection mechanisms: 1 = ACK train, 2 = delay, 3 = both."""
hystart_low_window: int = 16
"""Lower bound cwnd (segments) for hybrid slow start."""
hystart_ack_delta_us: int = 2000
"""Spacing between ACKs (us) indicating a train."""

# --- constants ----------------------------------------------------------------------------
BICTCP_BETA_SCALE = 1024  # scale factor for beta
BICTCP_HZ = 10  # time is scaled to 2^-10 s
HZ = 1000  # emulated jiffies per second
HYSTART_ACK_TRAIN = 0x1
HYSTART_DELAY = 0x2
HYSTART_MIN_SAMPLES = 8  # delay samples per round before deciding curr_rtt
HYSTART_DELAY_MIN = 4000  # us
HYSTART_DELAY_MAX = 16000  # us
_U32_MAX = 0xFFFFFFFF


def _beta_scale() -> int:
    """Linux ``beta_scale``: 8 * (1 + beta) / 3 / (1 - beta), used by the Reno estimate."""
    return 8 * (BICTCP_BETA_SCALE + beta) // 3 // (BICTCP_BETA_SCALE - beta)


def _cube_rtt_scale() -> int:
    """Linux ``cube_rtt_scale`` = 1024 * C."""
    return bic_scale * 10


def _cube_factor() -> int:
    """Linux ``cube_factor`` = 2^(10 + 3*BICTCP_HZ) / (1024 * C)."""
    return (1 << (10 + 3 * BICTCP_HZ)) // (bic_scale * 10)


def cubic_root(a: int) -> int:
    """floor(cbrt(a)) for a >= 0, exact integer Newton iteration."""
    if a <= 0:
        return 0
    x = 1 << -(-a.bit_length() // 3)  # >= cbrt(a)
    while True:
        y = (2 * x + a // (x * x)) // 3
        if y >= x:
            return x
        x = y


def k_fixed(w_max: int, cwnd: int) -> int:
    """K of RFC 9438 §4.2 eq. 2, cbrt((W_max - cwnd_epoch) / C), in units of 2^-10 s."""
    if w_max <= cwnd:
        return 0
    return cubic_root(_cube_factor() * (w_max - cwnd))


def _jiffies(now_us: int) -> int:
    return now_us * HZ // 1_000_000


def _usecs_to_jiffies(us: int) -> int:
    return -(-us * HZ // 1_000_000)  # rounds up, like the kernel helper


def _hystart_delay_thresh(x: int) -> int:
    return min(max(x, HYSTART_DELAY_MIN), HYSTART_DELAY_MAX)


@dataclass(slots=True)
class BicTcp:
    """Linux ``struct bictcp``, the per-connection CUBIC state kept in ``tp.priv``."""

    cnt: int = 0  # increase cwnd by 1 after this many ACKs
    last_max_cwnd: int = 0  # W_max, last maximum snd_cwnd
    last_cwnd: int = 0  # the last snd_cwnd
    last_time: int = 0  # time (jiffies) when last_cwnd was updated
    bic_origin_point: int = 0  # origin point of the cubic function
    bic_K: int = 0  # time to origin point from the epoch start, 2^-10 s
    delay_min: int = 0  # min delay (us)
    epoch_start: int | None = None  # beginning of an epoch (jiffies); None = no epoch
    ack_cnt: int = 0  # number of acks (for the Reno estimate)
    tcp_cwnd: int = 0  # estimated Reno cwnd
    # HyStart
    found: bool = False  # the exit point was found
    round_start: int = 0  # beginning of each round (us)
    end_delivered: int = 0  # tp.delivered marking the end of the round (Linux end_seq)
    last_ack: int = 0  # last time (us) the ACK spacing was close
    curr_rtt: int = _U32_MAX  # the minimum rtt of the current round
    sample_cnt: int = 0  # number of samples to decide curr_rtt
    last_active_us: int = 0  # last ACK seen (stands in for lsndtime)

    def reset(self) -> None:
        """Linux ``bictcp_reset``: forget everything but the HyStart round bookkeeping."""
        self.cnt = self.last_max_cwnd = self.last_cwnd = self.last_time = 0
        self.bic_origin_point = self.bic_K = self.delay_min = 0
        self.epoch_start = None
        self.ack_cnt = self.tcp_cwnd = 0
        self.found = False


class Cubic(CongestionOps):
    """Linux ``cubictcp``: RFC 9438 CUBIC with HyStart (ACK train + delay)."""

    name = "cubic"
    shared = True  # all per-connection state is in tp.priv: connections share one instance

    # -- helpers ---------------------------------------------------------------------------
    @staticmethod
    def _ca(tp: CcState) -> BicTcp:
        ca = tp.priv
        if not isinstance(ca, BicTcp):
            if type(ca) is int:
                # init() deferred the state (an idle connection keeps no BicTcp): it is
                # what init() would have made, with init's clock (the int) and delivered +
                # packets_out == 0 (the HyStart round's end).
                ca = BicTcp(last_active_us=ca, round_start=ca, last_ack=ca)
            else:  # engine forgot init(): behave as if it had called it
                ca = BicTcp()
                Cubic._hystart_reset(tp, ca)
            tp.priv = ca
        return ca

    @staticmethod
    def _hystart_reset(tp: CcState, ca: BicTcp) -> None:
        """Linux ``bictcp_hystart_reset``: start a new round."""
        ca.round_start = ca.last_ack = tp.now_us
        ca.end_delivered = tp.delivered + tp.packets_out
        ca.curr_rtt = _U32_MAX
        ca.sample_cnt = 0

    # -- hooks -----------------------------------------------------------------------------
    def init_deferred(self, tp: CcState) -> None:
        """:meth:`init` for a new connection.  In the usual case (HyStart on, nothing
        delivered or in flight yet) only the clock is recorded, as an int in ``tp.priv``:
        the first hook that needs the :class:`BicTcp` makes it (:meth:`_ca`) with the values
        init would have given it, so an idle connection holds none."""
        if hystart and not tp.delivered + tp.packets_out:
            tp.priv = tp.now_us
        else:
            self.init(tp)

    def init(self, tp: CcState) -> None:
        """Linux ``cubictcp_init``."""
        ca = BicTcp(last_active_us=tp.now_us)
        tp.priv = ca
        if hystart:
            self._hystart_reset(tp, ca)
        if not hystart and initial_ssthresh:
            tp.snd_ssthresh = initial_ssthresh

    def release(self, tp: CcState) -> None:
        if isinstance(tp.priv, BicTcp) or type(tp.priv) is int:
            tp.priv = None

    def cwnd_event(self, tp: CcState, ev: CaEvent) -> None:
        """Linux ``cubictcp_cwnd_event``: after an idle period keep following the curve."""
        if ev != CaEvent.TX_START:
            return
        ca = self._ca(tp)
        now = _jiffies(tp.now_us)
        delta = now - _jiffies(ca.last_active_us)
        # We were application limited (idle) for a while: shift epoch_start.
        if ca.epoch_start is not None and delta > 0:
            ca.epoch_start = min(ca.epoch_start + delta, now)
        ca.last_active_us = tp.now_us

    def _update(self, tp: CcState, ca: BicTcp, cwnd: int, acked: int) -> None:
        """Linux ``bictcp_update``: compute ``ca.cnt`` (segments acked per +1 cwnd)."""
        now = _jiffies(tp.now_us)
        ca.ack_cnt += acked  # count the number of ACKed packets

        if ca.last_cwnd == cwnd and now - ca.last_time <= HZ // 32:
            return

        # The cubic function updates ca.cnt at most once per jiffy; every cwnd reduction
        # ends the epoch (epoch_start = None), which forces a recalculation.
        if not (ca.epoch_start is not None and now == ca.last_time):
            ca.last_cwnd = cwnd
            ca.last_time = now

            if ca.epoch_start is None:
                ca.epoch_start = now  # record beginning
                ca.ack_cnt = acked  # start counting
                ca.tcp_cwnd = cwnd  # sync with cubic
                if ca.last_max_cwnd <= cwnd:
                    ca.bic_K = 0
                    ca.bic_origin_point = cwnd
                else:
                    # RFC 9438 §4.2 eq. 2: K = cbrt((W_max - cwnd_epoch) / C), 2^-10 s units
                    ca.bic_K = k_fixed(ca.last_max_cwnd, cwnd)
                    ca.bic_origin_point = ca.last_max_cwnd

            # RFC 9438 §4.2 eq. 1 evaluated one RTT ahead (t + delay_min, as Linux), with
            # time in 2^-10 s: target = origin +- C * (t - K)^3.
            t = now - ca.epoch_start + _usecs_to_jiffies(ca.delay_min)
            t = (t << BICTCP_HZ) // HZ
            offs = abs(t - ca.bic_K)
            delta = (_cube_rtt_scale() * offs * offs * offs) >> (10 + 3 * BICTCP_HZ)
            if t < ca.bic_K:  # below origin (concave region, §4.4)
                bic_target = max(ca.bic_origin_point - delta, 0)
            else:  # above origin (convex region, §4.5)
                bic_target = ca.bic_origin_point + delta

            # RFC 9438 §4.4/§4.5: grow by (target - cwnd) / cwnd per ACK.
            if bic_target > cwnd:
                ca.cnt = cwnd // (bic_target - cwnd)
            else:
                ca.cnt = 100 * cwnd  # very small increment

            # The initial growth may be too conservative when the bandwidth is unknown.
            if ca.last_max_cwnd == 0 and ca.cnt > 20:
                ca.cnt = 20  # increase cwnd 5% per RTT

        # RFC 9438 §4.3 Reno-friendly region: W_est grows by alpha_cubic per RTT.
        if tcp_friendliness:
            delta = max((cwnd * _beta_scale()) >> 3, 1)
            if ca.ack_cnt > delta:  # update the Reno estimate (Linux loops, same result)
                n = (ca.ack_cnt - 1) // delta
                ca.ack_cnt -= n * delta
                ca.tcp_cwnd += n
            if ca.tcp_cwnd > cwnd:  # cubic is slower than Reno
                max_cnt = cwnd // (ca.tcp_cwnd - cwnd)
                ca.cnt = min(ca.cnt, max_cnt)

        # At most 1 segment per 2 acked: cwnd grows at most 1.5x per RTT (§4.4 note).
        ca.cnt = max(ca.cnt, 2)

    def cong_avoid(self, tp: CcState, ack: int, acked: int) -> None:
        """Linux ``cubictcp_cong_avoid``."""
        ca = self._ca(tp)
        ca.last_active_us = tp.now_us
        if not tp.is_cwnd_limited:
            return
        if tcp_in_slow_start(tp):
            acked = tcp_slow_start(tp, acked)
            if not acked:
                return
        self._update(tp, ca, tp.snd_cwnd, acked)
        tcp_cong_avoid_ai(tp, ca.cnt, acked)

    def ssthresh(self, tp: CcState) -> int:
        """Linux ``cubictcp_recalc_ssthresh``: W_max, fast convergence, beta_cubic."""
        ca = self._ca(tp)
        ca.epoch_start = None  # end of epoch
        cwnd = tp.snd_cwnd
        # RFC 9438 §4.7 fast convergence.
        if cwnd < ca.last_max_cwnd and fast_convergence:
            ca.last_max_cwnd = cwnd * (BICTCP_BETA_SCALE + beta) // (2 * BICTCP_BETA_SCALE)
        else:
            ca.last_max_cwnd = cwnd
        # RFC 9438 §4.6 multiplicative decrease.
        return max(cwnd * beta // BICTCP_BETA_SCALE, 2)

    def undo_cwnd(self, tp: CcState) -> int:
        """Linux uses ``tcp_reno_undo_cwnd``."""
        return max(tp.snd_cwnd, tp.prior_cwnd)

    def set_state(self, tp: CcState, new_state: CaState) -> None:
        """Linux ``cubictcp_state``: an RTO forgets the curve and restarts HyStart."""
        if new_state == CaState.LOSS:
            ca = self._ca(tp)
            ca.reset()
            self._hystart_reset(tp, ca)

    def _hystart_update(self, tp: CcState, ca: BicTcp, delay: int) -> None:
        """Linux ``hystart_update``."""
        if tp.delivered > ca.end_delivered:  # Linux: after(snd_una, end_seq)
            self._hystart_reset(tp, ca)

        # HyStart triggers only when cwnd is larger than some threshold.
        if tp.snd_cwnd < hystart_low_window:
            return

        if hystart_detect & HYSTART_ACK_TRAIN:
            now = tp.now_us
            # First detection parameter: ACK-train length.
            if now - ca.last_ack <= hystart_ack_delta_us:
                ca.last_ack = now
                # No pacing here: the train triggers past delay_min / 2.
                threshold = ca.delay_min >> 1
                if now - ca.round_start > threshold:
                    ca.found = True
                    tp.snd_ssthresh = tp.snd_cwnd

        if hystart_detect & HYSTART_DELAY:
            # Obtain the minimum delay of more than HYSTART_MIN_SAMPLES packets.
            ca.curr_rtt = min(ca.curr_rtt, delay)
            if ca.sample_cnt < HYSTART_MIN_SAMPLES:
                ca.sample_cnt += 1
            elif ca.curr_rtt > ca.delay_min + _hystart_delay_thresh(ca.delay_min >> 3):
                ca.found = True
                tp.snd_ssthresh = tp.snd_cwnd

    def pkts_acked(self, tp: CcState, sample: AckSample) -> None:
        """Linux ``cubictcp_acked``: track delay_min, run HyStart in slow start."""
        ca = self._ca(tp)
        ca.last_active_us = tp.now_us
        # Some calls are for duplicates without timestamps.
        if sample.rtt_us < 0:
            return
        # Discard delay samples right after fast recovery.
        if ca.epoch_start is not None and _jiffies(tp.now_us) - ca.epoch_start < HZ:
            return
        delay = max(sample.rtt_us, 1)
        # First call or link delay decreases.
        if ca.delay_min == 0 or ca.delay_min > delay:
            ca.delay_min = delay
        if not ca.found and tcp_in_slow_start(tp) and hystart:
            self._hystart_update(tp, ca, delay)

    def get_info(self, tp: CcState) -> dict[str, int]:
        """CUBIC diagnostics (not in Linux's TCP_CC_INFO; handy for ``ss -ti`` style dumps)."""
        # A deferred state reads as a fresh one without being made (a dump of idle
        # connections does not grow them).
        ca = BicTcp() if type(tp.priv) is int else self._ca(tp)
        return {
            "cnt": ca.cnt,
            "last_max_cwnd": ca.last_max_cwnd,
            "bic_K_ms": ca.bic_K * 1000 >> BICTCP_HZ,
            "origin_point": ca.bic_origin_point,
            "delay_min_us": ca.delay_min,
            "tcp_cwnd": ca.tcp_cwnd,
            "hystart_found": int(ca.found),
        }
