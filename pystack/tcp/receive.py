"""Receive side: in-order and out-of-order data, delayed ACKs, FIN and urgent data
(RFC 9293 §3.10.7.4, RFC 1122 §4.2.3.2); whether ``tcp_mem`` lets a segment be held
(Linux ``tcp_try_rmem_schedule``, pruning of the out-of-order queue); window growth and
the receiver-RTT samples behind receive-buffer autotuning (window.py does the sizing).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pystack.tcp import seq as sq
from pystack.tcp.buffers import RecvBuffer
from pystack.tcp.state import (
    TcpState,
)
from pystack.tcp.window import RcvSpace
from pystack.wire.segment import FIN, PSH, SYN, URG, TcpSegment

if TYPE_CHECKING:
    pass

from pystack.tcp.constants import (
    _SYNC_NOT_TW,
    F_ACK_NOW,
    F_OOBINLINE,
    F_ORPHAN,
    F_PINGPONG,
    F_RD_EOF,
    F_SACK,
    F_TS,
    TCP_ATO_MIN,
    TCP_DELACK_MAX,
    TCP_INIT_CWND,
    TCP_MAX_QUICKACKS,
    TCP_TIMEWAIT_LEN,
    TS_OPT_LEN,
    URG_NONE,
    URG_NOTYET,
    URG_READ,
    URG_VALID,
)


class ReceiveMixin:
    """Segment text into the receive buffer, and when to acknowledge it."""

    __slots__ = ()

    def _process_text(self, seg: TcpSegment, now: float, seq: int) -> None:
        st = self.state
        f = seg.flags
        payload = seg.payload
        fin = bool(f & FIN)
        if f & SYN:
            seq = sq.add(seq, 1)
        if st == TcpState.ESTABLISHED and self._f & F_TS and self._rtune is not None:
            ts = seg.options.timestamp
            if ts is not None:
                self._rcv_rtt_measure_ts(self._rtune, ts[1], len(payload), now)
        if st not in (TcpState.ESTABLISHED, TcpState.FIN_WAIT_1, TcpState.FIN_WAIT_2):
            # CLOSE-WAIT, CLOSING, LAST-ACK: the peer already sent FIN; ignore text.
            if fin and self._f & F_RD_EOF:
                self._f |= F_ACK_NOW
            return
        if self._f & F_RD_EOF:
            # Data after the FIN was received cannot be new.
            if payload or fin:
                self._f |= F_ACK_NOW
            return
        # Trim what lies before RCV.NXT (already received: D-SACK it, RFC 2883).
        d = sq.sub(self.rcv_nxt, seq)
        if d > 0:
            n = len(payload)
            if n:
                self._set_dsack(seq, sq.add(seq, min(d, n)))
            if d > n:
                fin = False
                payload = b""
            else:
                payload = memoryview(payload)[d:] if d else payload
            seq = self.rcv_nxt
        # Trim what lies beyond the window.
        room = self._rcv_window_now() - sq.sub(seq, self.rcv_nxt)
        if len(payload) > room:
            payload = memoryview(payload)[: max(0, room)]
            fin = False
            self._f |= F_ACK_NOW  # part of it fell outside the window: tell the peer
        if f & URG and seg.urgent:
            self._check_urg(seg, now)
        if payload:
            if self._f & F_ORPHAN:
                # Linux: data for a closed socket -> RST (TCPAbortOnData).
                self.engine.mib["TCPAbortOnData"] += 1
                self._send_rst_now(self.snd_nxt, self.rcv_nxt)
                self._set_state(TcpState.CLOSED)
                self._release()
                return
            # gso_size: the MSS of a segment the data path coalesced (GRO), else 0.
            self._data(seq, payload, now, bool(f & PSH), seg.gso_size)
        if fin:
            fin_seq = sq.add(seq, len(payload))
            if fin_seq == self.rcv_nxt:
                self._fin_received(now)
            else:
                self._fin_seq = fin_seq
                self._f |= F_ACK_NOW
        elif self._fin_seq is not None and self._fin_seq == self.rcv_nxt:
            self._fin_received(now)

    def _data(self, seq: int, payload: bytes | memoryview, now: float, psh: bool,
              gso: int = 0) -> None:
        rb = self._rcvbuf
        if rb is None:
            rb = self._rcvbuf = RecvBuffer(self._tcp_mem())
        n = len(payload)
        off = rb.rcv_off + sq.sub(seq, self.rcv_nxt)
        need = ((rb.ready_len + rb.ooo_len + n + 4095) >> 12) - rb.pages  # rb.need(n)
        if need > 0 and not self._rmem_schedule(rb, off, n, need):
            mib = self.engine.mib
            if off != rb.rcv_off:
                mib["TCPOFODrop"] += 1  # Linux tcp_data_queue_ofo: no memory, dropped
                return
            if rb.ready_len:
                # Linux tcp_data_queue: in-order data the engine cannot hold is dropped
                # (the peer retransmits it) while the application has data to read;
                # the ACK goes out at once. With nothing queued it is taken anyway
                # (sk_forced_mem_schedule) so the connection always makes progress.
                mib["TCPRcvQDrop"] += 1
                self._f |= F_ACK_NOW
                return
        data = bytes(payload)
        had_ooo = bool(rb.ooo)
        newly, dup = rb.insert(off, data)
        if dup is not None:
            self._set_dsack(self._seq_of(dup[0]), self._seq_of(dup[1]))
        # RFC 9293 §3.10.7.4 seventh: advance RCV.NXT over the in-order data.
        self._event_data_recv(now, n, gso)
        if newly:
            self.rcv_nxt = sq.add(self.rcv_nxt, newly)
            self.bytes_received += newly
            rt = self._rtune
            if rt is None:
                if n >= self._rcv_mss or self.bytes_received >= TCP_INIT_CWND * self._rcv_mss:
                    rt = self._rcv_space_start(now)  # bulk data: start autotuning
                    self._rcv_rtt_measure(rt, now)
            elif rt.rtt_time is None or ((self.rcv_nxt - rt.rtt_seq) & sq.MASK) < sq.HALF:
                self._rcv_rtt_measure(rt, now)  # RCV.NXT reached rtt_seq (not sq.lt)
            if n >= 128:
                self._grow_window(n)
            self._urg_capture()
            self._emit_event("readable")
            if self._fin_seq is not None and self._fin_seq == self.rcv_nxt:
                self._fin_received(now)
                return
            if had_ooo and not rb.ooo:
                self._f |= F_ACK_NOW  # RFC 5681 §4.2: a filled gap is ACKed at once
                return
            self._ack_snd_check(now)
        else:
            # Out of order (or duplicate): ACK immediately with SACK (RFC 5681 §4.2).
            self.engine.mib["TCPOFOQueue"] += 1
            self._f |= F_ACK_NOW
            self._quick = max(self._quick, 1)

    def _event_data_recv(self, now: float, n: int, gso: int = 0) -> None:
        """Linux ``tcp_event_data_recv``/``tcp_measure_rcv_mss``: ATO and rcv_mss estimate.

        A segment carrying several (coalesced by GRO, ``gso`` its segment size) counts
        with its segment size, as Linux's ``gso_size ?: len``; without one, a segment
        longer than our MSS is taken for the peer's full segments (MSS less timestamps).
        Its ACK follows the usual rule: at once when more than one full segment is
        unacknowledged (``_ack_snd_check``)."""
        n = gso or n
        if n >= self._rcv_mss:
            adv = self._advmss()
            if n > adv:
                n = adv - (TS_OPT_LEN if self._f & F_TS else 0)
            if n > self._rcv_mss:
                self._rcv_mss = n
        if not self._ato:
            self._incr_quickack()
            self._ato = TCP_ATO_MIN
        else:
            m = now - self._lrcvtime
            if m <= TCP_ATO_MIN / 2:
                self._ato = self._ato / 2 + TCP_ATO_MIN / 2
            elif m < self._ato:
                self._ato = min(self._ato / 2 + m, self.rtt.rto)
            elif m > self.rtt.rto:
                # "Too long gap": the sender failed to restart its window; ACK quickly.
                self._incr_quickack()
        self._lrcvtime = now

    def _incr_quickack(self) -> None:
        q = self.rcv_wnd // (2 * max(self._rcv_mss, 1))
        q = min(q or 2, TCP_MAX_QUICKACKS)
        if q > self._quick:
            self._quick = q

    def _grow_window(self, n: int) -> None:
        """Linux ``tcp_grow_window``: open rcv_ssthresh by max(2 * advmss, 2 * segment)
        per in-order segment, up to the window clamp and the free space, and ACK that
        segment at once; under memory pressure shrink it instead (tcp_mem)."""
        rb = self._rcvbuf
        used = rb.ready_len + rb.ooo_len if rb is not None else 0
        free = self._win_from_space(self.rcvbuf_size) - used
        room = min(self._wnd_clamp or (65535 << 14), free) - self._rcv_ssthresh
        if room <= 0:
            return
        if self._under_memory_pressure():
            self._adjust_rcv_ssthresh()
            return
        incr = max(2 * self._advmss(), 2 * n)
        self._rcv_ssthresh += min(room, incr)
        self._quick |= 1

    def _rcv_rtt_measure_ts(self, rt: RcvSpace, tsecr: int, seglen: int, now: float) -> None:
        """Linux ``tcp_rcv_rtt_measure_ts``: a full segment echoing a new TSecr gives a
        receiver-side RTT sample (for autotuning), once per TSecr."""
        if tsecr == rt.tsecr:
            return
        rt.tsecr = tsecr
        if seglen >= self._rcv_mss and tsecr:
            delta = (self._tsval(now) - tsecr) & sq.MASK
            if delta < 0x7FFFFFFF // 1000:
                self._rcv_rtt_update(rt, max(delta, 1) / 1000.0, False)

    def _rmem_schedule(self, rb: RecvBuffer, off: int, n: int, need: int) -> bool:
        """Linux ``tcp_try_rmem_schedule``: may ``n`` more bytes (``need`` more pages) be
        held (tcp_mem)?  If not, prune out-of-order data above ``off`` until they may.
        (The buffer itself never overflows SO_RCVBUF: the window is computed from it in
        payload bytes.)"""
        acct = rb.acct
        if acct is None:
            return True
        eng = self.engine
        low = eng.settings.tcp_mem[0]
        if acct.pages + need <= low:
            acct.pressure = False  # the common case, without further checks
            return True
        rmem0 = eng.settings.tcp_rmem[0]
        socks = len(eng.connections)
        if acct.schedule(need, self._mem_pages(), rb.used < rmem0, socks):
            return True
        eng.mib["PruneCalled"] += 1
        if acct.pressure:
            self._adjust_rcv_ssthresh()
        while True:
            if not self._prune_ofo(rb, off):
                return False
            need = rb.need(n)
            if acct.schedule(need, self._mem_pages(), rb.used < rmem0, socks):
                return True

    def _prune_ofo(self, rb: RecvBuffer, off: int) -> bool:
        """Linux ``tcp_prune_ofo_queue``: drop out-of-order data from the highest sequence
        down (receiver reneging, RFC 2018 §8), never data below the arriving segment."""
        goal = self.rcvbuf_size >> 3
        pruned = False
        while rb.ooo and off <= rb.ooo[-1].start:
            start, end = rb.drop_last_ooo()
            pruned = True
            goal -= end - start
            if not rb.ooo or goal <= 0:
                if rb.used <= self.rcvbuf_size and not self._under_memory_pressure():
                    break
                goal = self.rcvbuf_size >> 3
        if pruned:
            self.engine.mib["OfoPruned"] += 1
        return pruned

    def _ack_snd_check(self, now: float) -> None:
        """Linux ``__tcp_ack_snd_check``: ACK now or delay (RFC 1122 §4.2.3.2, RFC 5681 §4.2)."""
        # "More than one full frame received and the right edge of the window does not
        # retreat" (Linux compares window sizes; with payload-only buffer accounting the
        # right edge is the equivalent test).
        if (
            sq.sub(self.rcv_nxt, self.rcv_wup) > self._rcv_mss
            and self._raw_window() >= self._rcv_window_now()
        ) or (self._quick and not self._f & F_PINGPONG):
            self._f |= F_ACK_NOW
            return
        if self._t_delack is None:
            ato = self._ato or TCP_ATO_MIN
            if ato > TCP_ATO_MIN:
                max_ato = TCP_DELACK_MAX
                if self.rtt.srtt:
                    max_ato = min(max_ato, max(self.rtt.srtt, TCP_ATO_MIN))
                ato = min(ato, max_ato)
            self._t_delack = now + ato

    def _set_dsack(self, start: int, end: int) -> None:
        if self._f & F_SACK and self.engine.settings.tcp_dsack and self._dsack is None:
            self._dsack = (start, end)
            self.engine.mib["TCPDSACKOldSent"] += 1

    def _fin_received(self, now: float) -> None:
        """RFC 9293 §3.10.7.4 eighth: the FIN, in order."""
        self._fin_seq = None
        self.rcv_nxt = sq.add(self.rcv_nxt, 1)
        self._f |= F_RD_EOF | F_ACK_NOW
        self._t_delack = None
        self._emit_event("readable")
        st = self.state
        if st in (TcpState.SYN_RECEIVED, TcpState.ESTABLISHED):
            self._set_state(TcpState.CLOSE_WAIT)
        elif st == TcpState.FIN_WAIT_1:
            if self._fin_acked():
                self._enter_time_wait(now)
            else:
                self._set_state(TcpState.CLOSING)  # simultaneous close
        elif st == TcpState.FIN_WAIT_2:
            self._enter_time_wait(now)
        elif st == TcpState.TIME_WAIT:
            self._t_wait = now + TCP_TIMEWAIT_LEN

    def _check_urg(self, seg: TcpSegment, now: float) -> None:
        """Linux ``tcp_check_urg``: a new urgent pointer (BSD semantics unless tcp_stdurg)."""
        ptr = seg.urgent
        if ptr and not self.engine.settings.tcp_stdurg:
            ptr -= 1
        useq = sq.add(seg.seq, ptr)
        rb = self._rcvbuf
        read_off = rb.read_off if rb is not None else 0
        base = rb.rcv_off if rb is not None else 0
        off = base + sq.sub(useq, self.rcv_nxt)
        if off < read_off:
            return  # already read
        if sq.lt(useq, self.rcv_nxt):
            return  # do not replay
        if self._urg_state in (URG_NOTYET, URG_VALID) and off <= self._urg_off:
            return
        if (
            rb is not None
            and self._urg_state != URG_NONE
            and self._urg_off == read_off
            and not self._f & F_OOBINLINE
            and rb.ready_len
            and self._urg_state != URG_READ
        ):
            rb.discard(1)  # the old urgent byte at the read position is skipped
        self._urg_state = URG_NOTYET
        self._urg_off = off
        self._emit_event("urgent")

    def _urg_capture(self) -> None:
        if self._urg_state == URG_NOTYET:
            rb = self._rcvbuf
            if rb is not None and self._urg_off < rb.rcv_off:
                b = rb.peek_byte(self._urg_off)
                if b is not None:
                    self._urg_byte = b
                    self._urg_state = URG_VALID

    def _after_read(self) -> None:
        """Linux ``tcp_rcv_space_adjust`` (autotuning) then ``tcp_cleanup_rbuf``: send a
        window update if reading opened the window."""
        rt = self._rtune
        if rt is not None and rt.rtt and self.engine._now - rt.time >= rt.rtt:
            self._rcv_space_adjust(self.engine._now)
        if self._f & F_RD_EOF or self.state not in _SYNC_NOT_TW:
            return
        if self._t_delack is not None and sq.sub(self.rcv_nxt, self.rcv_wup) > self._rcv_mss:
            # The once-per-two-segments ACK was held back (window would not advance).
            self._f |= F_ACK_NOW
            self.engine._touch(self)
            return
        now_win = self._rcv_window_now()
        if 2 * now_win <= self._wnd_clamp:
            new = self._raw_window()
            if new and new >= 2 * now_win:
                self._f |= F_ACK_NOW
                self.engine._touch(self)

    # =================================================================================
    # Output
    # =================================================================================
