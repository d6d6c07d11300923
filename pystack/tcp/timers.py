"""Timers: retransmission (RFC 6298) and tail loss probe (RFC 8985 §7), persist, keepalive
(RFC 1122 §4.2.3.6), delayed ACK, TIME-WAIT and FIN-WAIT-2.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from pystack.tcp import seq as sq
from pystack.tcp.constants import F_LOSS_PROBE
from pystack.tcp.state import (
    TCP_DEFER_ACCEPT,
    TCP_SYNCNT,
    TcpState,
)
from pystack.wire.segment import ACK

if TYPE_CHECKING:
    pass

from pystack.tcp.constants import (
    _SYNC_NOT_TW,
    F_ACK_NOW,
    F_DEFER_ACKED,
    F_KEEPALIVE,
    F_ORPHAN,
    F_PASSIVE,
    F_PERSIST,
    F_PINGPONG,
    F_PUSH_ONCE,
    F_SEND_SYN,
    TCP_ATO_MIN,
    TCP_RTO_MAX,
    TCP_RTO_MIN,
    TCP_TIMEWAIT_LEN,
    model_timeout,
)


class TimerMixin:
    """Deadlines and what happens when they pass."""

    __slots__ = ()

    def next_deadline(self) -> float | None:
        """The earliest armed timer of this connection."""
        best: float | None = None
        for t in (self._t_rtx, self._t_delack, self._t_keep, self._t_wait, self._t_cork):
            if t is not None and (best is None or t < best):
                best = t
        return best

    def _on_timer(self, now: float) -> None:
        t = self._t_wait
        if t is not None and now >= t:
            self._t_wait = None
            # TIME-WAIT over (2 MSL), or an orphan's FIN-WAIT-2 lifetime is over.
            self._set_state(TcpState.CLOSED)
            self._release()
            return
        t = self._t_rtx
        if t is not None and now >= t:
            self._t_rtx = None
            if self._f & F_PERSIST:
                self._f &= ~F_PERSIST
                self._persist_timeout(now)
            elif self._f & F_LOSS_PROBE:
                self._loss_probe_timeout(now)  # RFC 8985 §7.3 TLP (recovery.py)
            else:
                self._rto_timeout(now)
            if self.state == TcpState.CLOSED:
                return
        t = self._t_delack
        if t is not None and now >= t:
            self._t_delack = None
            if not self._f & F_PINGPONG:
                self._ato = min(self._ato * 2, self.rtt.rto) if self._ato else TCP_ATO_MIN
            else:
                self._f &= ~F_PINGPONG
                self._ato = TCP_ATO_MIN
            self.engine.mib["DelayedACKs"] += 1
            self._f |= F_ACK_NOW
        t = self._t_keep
        if t is not None and now >= t:
            self._t_keep = None
            self._keepalive_timeout(now)
            if self.state == TcpState.CLOSED:
                return
        t = self._t_cork
        if t is not None and now >= t:
            self._t_cork = None
            self._f |= F_PUSH_ONCE
        self.engine._touch(self)

    def _rto_timeout(self, now: float) -> None:
        """Linux ``tcp_retransmit_timer`` / RFC 6298 §5.4-5.6."""
        st = self.state
        eng = self.engine
        s = eng.settings
        if st == TcpState.SYN_SENT or (st == TcpState.SYN_RECEIVED and not self._f & F_PASSIVE):
            limit = int(self._opt(TCP_SYNCNT, s.tcp_syn_retries))
            if self._retransmits >= limit:
                self._fail(errno.ETIMEDOUT)
                return
            eng.mib["TCPTimeouts"] += 1
            self._retransmits += 1
            self.rtt.on_timeout()
            self._f |= F_SEND_SYN
            self._t_rtx = now + self.rtt.rto
            return
        if st == TcpState.SYN_RECEIVED:
            # Linux reqsk_timer_handler with syn_ack_recalc (TCP_DEFER_ACCEPT aware).
            max_retries = s.tcp_synack_retries
            defer = int(self.listener._opt(TCP_DEFER_ACCEPT, 0)) if self.listener else 0
            acked = bool(self._f & F_DEFER_ACKED)
            n = self._retransmits
            if not defer:
                expire = n >= max_retries
                resend = True
            else:
                expire = n >= max_retries and (not acked or n >= defer)
                resend = not acked or n >= defer - 1
            if expire:
                self._set_state(TcpState.CLOSED)
                self._release()
                return
            self._retransmits += 1
            self.rtt.on_timeout()
            if resend:
                eng.mib["TCPSynRetrans"] += 1
                self._f |= F_SEND_SYN
            self._t_rtx = now + self.rtt.rto
            return
        if self.snd_una == self.snd_nxt:
            return
        # Linux tcp_write_timeout for the synchronized states.
        elapsed = self._retrans_elapsed(now)
        if elapsed is not None and elapsed >= model_timeout(s.tcp_retries1, TCP_RTO_MIN) - 1e-9:
            # Past tcp_retries1: Linux gives the route/neighbour "negative advice" (and
            # probes the MTU); pystack counts it and tells the data path.
            self._mtu_probing()  # tcp_mtu_probing=1: suspect a black hole (mtu.py)
            eng.mib["NegativeAdvice"] += 1
            if eng.on_retries1 is not None:
                eng.on_retries1(self.four_tuple)
        if self._f & F_ORPHAN:
            alive = self.rtt.rto < TCP_RTO_MAX
            retry_until = self._orphan_retries(alive)
            do_reset = alive or not (
                elapsed is not None
                and elapsed >= model_timeout(retry_until, TCP_RTO_MIN) - 1e-9
            )
            if self._out_of_resources(now, do_reset):
                return
        if self._write_timeout(now):
            self._fail(errno.ETIMEDOUT)
            return
        eng.mib["TCPTimeouts"] += 1
        if self.ccs is not None:
            self.ccs.now_us = int(now * 1e6)
        # RFC 6298 §5.4: retransmit the earliest unacknowledged segment; RFC 5681 §3.1
        # cwnd = 1 (LW); Linux tcp_enter_loss with F-RTO (pystack/tcp/recovery.py).
        self._enter_loss()
        self._txtimes = None  # Karn: nothing outstanding can be timed any more
        if self._retrans_stamp is None:
            self._retrans_stamp = now - self.rtt.rto  # when the head was (about) sent
        self._retransmits += 1
        self.rtt.on_timeout()
        self._t_rtx = now + self._rto_clamped(now)

    def _retrans_elapsed(self, now: float) -> float | None:
        """Time since the head was first sent, once it has been retransmitted (Linux
        ``retransmits_timed_out`` measures from ``retrans_stamp``)."""
        if not self._retransmits or self._retrans_stamp is None:
            return None
        return now - self._retrans_stamp

    def _write_timeout(self, now: float) -> bool:
        """Linux ``tcp_write_timeout``/``retransmits_timed_out`` for synchronized states."""
        elapsed = self._retrans_elapsed(now)
        if elapsed is None:
            return False
        ut = self._user_timeout()
        if ut:
            return elapsed >= ut - 1e-9
        boundary = self.engine.settings.tcp_retries2
        if self._f & F_ORPHAN:
            boundary = self._orphan_retries(self.rtt.rto < TCP_RTO_MAX)
        return elapsed >= model_timeout(boundary, TCP_RTO_MIN) - 1e-9

    def _orphan_retries(self, alive: bool) -> int:
        """Linux ``tcp_orphan_retries``: 0 means 8 while the RTO is below its maximum."""
        retries = self.engine.settings.tcp_orphan_retries
        if retries == 0 and alive:
            retries = 8
        return retries

    def _out_of_resources(self, now: float, do_reset: bool) -> bool:
        """Linux ``tcp_out_of_resources`` for an orphan's retransmission or probe timer:
        over tcp_max_orphans (twice as strict for a long-silent or expired connection) the
        orphan is dropped, with a RST if it sent recently or the peer's window is closed."""
        eng = self.engine
        idle = now - self._last_send
        shift = 1 if idle > 2 * TCP_RTO_MAX or not do_reset else 0
        # Linux tcp_check_oom: too many orphans, or this one over tcp_mem (window.py).
        if eng.orphan_count << shift <= eng.settings.tcp_max_orphans and not (
            self._out_of_memory()
        ):
            return False
        if idle <= TCP_TIMEWAIT_LEN or (not self.snd_wnd and not self._packets_out()):
            do_reset = True
        if do_reset:
            self._send_rst_now(self.snd_nxt, self.rcv_nxt)
        eng.mib["TCPAbortOnMemory"] += 1
        self._set_state(TcpState.CLOSED)
        self._release()
        return True

    def _persist_timeout(self, now: float) -> None:
        """Linux ``tcp_probe_timer``: zero-window probe (RFC 9293 §3.8.6.1, RFC 1122 4.2.2.17)."""
        if self.state not in _SYNC_NOT_TW or sq.sub(self._write_seq, self.snd_nxt) <= 0:
            return
        if self.snd_una != self.snd_nxt:
            return
        s = self.engine.settings
        ut = self._user_timeout()
        if not self._probes_stamp:
            self._probes_stamp = now
        elif ut and now - self._probes_stamp >= ut:
            self._fail(errno.ETIMEDOUT)
            return
        max_probes = s.tcp_retries2
        if self._f & F_ORPHAN:
            max_probes = s.tcp_orphan_retries or 8
            if self._out_of_resources(now, True):
                return
        if self._probes >= max_probes:
            self._fail(errno.ETIMEDOUT)
            return
        self._write_wakeup(now)
        if self._probe_backoff < s.tcp_retries2:
            self._probe_backoff += 1
        self._probes += 1
        self._f |= F_PERSIST
        self._t_rtx = now + self._probe_interval()

    def _write_wakeup(self, now: float) -> None:
        """Linux ``tcp_write_wakeup``: send what the window allows, else a probe at SND.UNA-1."""
        usable = sq.sub(sq.add(self.snd_una, self.snd_wnd), self.snd_nxt)
        unsent = sq.sub(self._write_seq, self.snd_nxt)
        out = self.engine._tx
        if unsent > 0 and usable > 0:
            self._xmit(now, out, self.snd_nxt, min(usable, self._eff_mss()), retrans=False)
        else:
            self._emit(out, now, ACK, sq.sub(self.snd_una, 1) & sq.MASK)

    def _arm_keepalive(self, now: float) -> None:
        if self._f & F_KEEPALIVE and self.state in _SYNC_NOT_TW:
            self._t_keep = max(self._last_rcv, now - 1e9) + self._keep_idle()
        else:
            self._t_keep = None

    def _keepalive_timeout(self, now: float) -> None:
        """Linux ``tcp_keepalive_timer`` (RFC 1122 §4.2.3.6)."""
        if not self._f & F_KEEPALIVE or self.state not in _SYNC_NOT_TW:
            return
        if self.snd_una != self.snd_nxt or sq.sub(self._write_seq, self.snd_nxt) > 0:
            self._t_keep = now + self._keep_idle()
            return
        elapsed = now - max(self._last_rcv, self._lrcvtime)
        idle = self._keep_idle()
        if elapsed >= idle - 1e-9:
            ut = self._user_timeout()
            if (ut and elapsed >= ut and self._probes > 0) or (
                not ut and self._probes >= self._keep_cnt()
            ):
                self._send_rst_now(self.snd_nxt, self.rcv_nxt)
                self._fail(errno.ETIMEDOUT)
                return
            self._write_wakeup(now)
            self._probes += 1
            self.engine.mib["TCPKeepAlive"] += 1
            self._t_keep = now + self._keep_intvl()
        else:
            self._t_keep = now + (idle - elapsed)
