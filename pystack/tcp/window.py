"""MSS, buffer sizes and the receive window (RFC 9293 §3.8.6, RFC 7323 §2; Linux
``tcp_select_initial_window``, ``tcp_init_buffer_space``, ``__tcp_select_window``,
``tcp_sndbuf_expand`` and the ``tcp_mem`` checks of ``sk_{r,w}mem_schedule``).

Buffer sizes count payload bytes, not skb truesize: ``tcp_win_from_space`` with
``tcp_adv_win_scale`` splits a buffer into the part offered as window and the part kept as
"application buffer", as Linux did before 6.6.
"""

from __future__ import annotations

from pystack.tcp import seq as sq
from pystack.tcp.buffers import MemAccount, SendBuffer
from pystack.tcp.constants import (
    F_RCVBUF_LOCK,
    F_SNDBUF_LOCK,
    F_TS,
    F_WSCALE,
    SOCK_MIN_SNDBUF,
    TCP_INIT_CWND,
    TCP_MAX_WSCALE,
    TCP_MSS_DEFAULT,
    TS_OPT_LEN,
)
from pystack.tcp.mtu import MtuMixin
from pystack.tcp.state import (
    TCP_MAXSEG,
    TCP_WINDOW_CLAMP,
)

MAX_TCP_WINDOW = 32767  # Linux: the largest window a signed-16-bit peer can take


class RcvSpace:
    """Receive-buffer autotuning state: Linux ``tcp_sock.rcvq_space`` (bytes the
    application read in the last receiver RTT, from when and which offset) and
    ``rcv_rtt_est`` (the receiver's RTT estimate, from the time a window's worth of data
    takes to arrive, or from timestamps).

    A connection gets one when bulk data first arrives (a segment of at least rcv_mss, or
    ten segments' worth in all): autotuning has nothing to act on before, and connections
    exchanging small messages stay small.
    """

    __slots__ = ("space", "seq", "time", "rtt", "rtt_seq", "rtt_time", "tsecr")

    def __init__(self, space: int, seq: int, now: float) -> None:
        self.space = space  # bytes read per receiver RTT last measured
        self.seq = seq  # read offset when the current measurement began
        self.time = now  # and when
        self.rtt = 0.0  # receiver RTT estimate (s), 0: no sample yet
        self.rtt_seq = 0  # window-based sample: ends when RCV.NXT passes this
        self.rtt_time: float | None = None  # window-based sample: started then
        self.tsecr = 0  # last TSecr a timestamp sample was taken for


class WindowMixin(MtuMixin):
    """MSS choice, buffer sizes and the window advertised to the peer."""

    __slots__ = ()

    # ---------------------------------------------------------------------------------
    # Space <-> window
    # ---------------------------------------------------------------------------------
    def _win_from_space(self, space: int) -> int:
        """Linux ``tcp_win_from_space`` with tcp_adv_win_scale (tcp(7))."""
        scale = self.engine.settings.tcp_adv_win_scale
        if scale <= 0:
            return space >> -scale
        return space - (space >> scale)

    def _space_from_win(self, win: int) -> int:
        """The buffer whose window part is ``win`` (inverse of :meth:`_win_from_space`)."""
        scale = self.engine.settings.tcp_adv_win_scale
        if scale <= 0:
            return win << -scale
        return -(-(win << scale) // ((1 << scale) - 1))

    def _full_space(self) -> int:
        return min(self._wnd_clamp or (65535 << 14), self._win_from_space(self.rcvbuf_size))

    # ---------------------------------------------------------------------------------
    # tcp_mem (engine-wide memory accounting)
    # ---------------------------------------------------------------------------------
    def _tcp_mem(self) -> MemAccount:
        """The engine's memory account (``TcpEngine.tcp_memory``)."""
        return self.engine.tcp_memory

    def _mem_pages(self) -> int:
        """Pages this connection's buffers hold (Linux sk_mem_pages of rmem + wmem)."""
        n = 0
        if self._rcvbuf is not None:
            n += self._rcvbuf.pages
        if self._sndbuf is not None:
            n += self._sndbuf.pages
        return n

    def _under_memory_pressure(self) -> bool:
        """Linux ``tcp_under_memory_pressure``."""
        return self._tcp_mem().pressure

    def _out_of_memory(self) -> bool:
        """Linux ``tcp_out_of_memory``: this connection queues more than SOCK_MIN_SNDBUF
        while the engine is over tcp_mem[2] ("out of memory -- consider tuning tcp_mem").
        For Linux's ``tcp_check_oom`` (close() and an orphan's timers reset such a
        connection, TCPAbortOnMemory)."""
        return (
            self.outq > SOCK_MIN_SNDBUF
            and self._tcp_mem().pages > self.engine.settings.tcp_mem[2]
        )

    def _adjust_rcv_ssthresh(self) -> None:
        """Linux ``tcp_adjust_rcv_ssthresh``: under memory pressure offer at most 4 MSS."""
        self._rcv_ssthresh = min(self._rcv_ssthresh, 4 * self._advmss())

    # ---------------------------------------------------------------------------------
    # Send buffer
    # ---------------------------------------------------------------------------------
    def _sndbuf_limit(self) -> int:
        """Send buffer capacity (what ``writable`` measures ``outq`` against).

        Without SO_SNDBUF it grows with cwnd, 2 x cwnd x MSS up to tcp_wmem[2], and keeps
        what it grew to (Linux ``tcp_sndbuf_expand``), except under memory pressure or
        with tcp_mem[0] reached (``tcp_should_expand_sndbuf``).  When the engine cannot
        charge another page (tcp_mem[2], or an unfair share under pressure) a connection
        holding at least tcp_wmem[0] gets no room and, unless SO_SNDBUF locked it, its
        buffer shrinks to half of what it queues (``sk_stream_moderate_sndbuf``).
        """
        s = self.engine.settings
        acct = self._tcp_mem()
        lim = self.sndbuf_size
        locked = self._f & F_SNDBUF_LOCK
        if not locked and self.ccs is not None:
            want = min(2 * self.ccs.snd_cwnd * self.snd_mss, s.tcp_wmem[2])
            if want > lim and not acct.pressure and acct.pages < s.tcp_mem[0]:
                self.sndbuf_size = lim = want
        sb = self._sndbuf
        if sb is None:
            # Created here rather than at the first send() so it is charged to tcp_mem.
            sb = self._sndbuf = SendBuffer(acct)
        queued = len(sb)
        need = ((queued + 4096) >> 12) - sb.pages  # one more byte: a new page?
        if need > 0 and not acct.schedule(need, self._mem_pages(), queued < s.tcp_wmem[0],
                                          len(self.engine.connections)):
            if not locked:
                self.sndbuf_size = max(min(self.sndbuf_size, queued >> 1), SOCK_MIN_SNDBUF)
            if queued == 0:
                # Linux sk_forced_mem_schedule: with nothing queued the first skb is always
                # charged, so every connection makes progress over tcp_mem[2].
                return min(lim, self._eff_mss())
            return queued
        return lim

    # ---------------------------------------------------------------------------------
    # MSS
    # ---------------------------------------------------------------------------------
    def _advmss(self) -> int:
        """The MSS we announce: MTU - 40, clamped by TCP_MAXSEG (RFC 9293 §3.7.1)."""
        m = self.engine.mtu - 40
        user = self._opt(TCP_MAXSEG, 0)
        if user:
            m = min(m, user)
        return m

    def _compute_snd_mss(self) -> None:
        """Linux ``tcp_sync_mss``: effective send MSS from the peer's MSS, MTU, TCP_MAXSEG
        and the MTU-probing search_low (``tcp_mtu_probing``, see mtu.py)."""
        m = min(self._peer_mss, self.engine.mtu - 40)
        user = self._opt(TCP_MAXSEG, 0)
        if user:
            m = min(m, user)
        if self._f & F_TS:
            m -= TS_OPT_LEN
        cap = self._mtup_mss_cap()
        if cap:
            m = min(m, cap)
        self.snd_mss = max(m, self.engine.settings.tcp_min_snd_mss)

    def _eff_mss(self) -> int:
        """Send MSS bounded to half the largest window seen (Linux tcp_bound_to_half_wnd)."""
        m = self.snd_mss
        mw = self.max_window
        if mw:
            cutoff = mw >> 1 if mw > TCP_MSS_DEFAULT else mw
            if m > cutoff:
                m = max(cutoff, 68 - 20 - (TS_OPT_LEN if self._f & F_TS else 0))
        return max(m, 1)

    # ---------------------------------------------------------------------------------
    # Receive window
    # ---------------------------------------------------------------------------------
    def _init_rcv_window(self, mss: int) -> None:
        """Linux ``tcp_select_initial_window`` (first window, window scale, clamp), then
        the window-clamp part of ``tcp_init_buffer_space`` (tcp_app_win); also
        ``tcp_mtup_init``."""
        s = self.engine.settings
        space = self._win_from_space(self.rcvbuf_size)
        clamp = int(self._opt(TCP_WINDOW_CLAMP, 0)) or (65535 << TCP_MAX_WSCALE)
        space = min(clamp, space)
        if space > mss:
            space = (space // mss) * mss
        # tcp_workaround_signed_windows: never offer more than 32767 in the first window.
        self.rcv_wnd = min(space, MAX_TCP_WINDOW if s.tcp_workaround_signed_windows else 65535)
        ws = 0
        if self._f & F_WSCALE:
            sp = max(space, s.tcp_rmem[2], s.rmem_max)
            sp = min(sp, clamp)
            ws = max(0, min(sp.bit_length() - 1 - 15, TCP_MAX_WSCALE))
        self.rcv_wscale = ws
        self._wnd_clamp = min(65535 << ws, clamp)
        self._rcv_ssthresh = self.rcv_wnd
        self.rcv_wup = self.rcv_nxt
        self._app_win_clamp()
        self._mtup_init()

    def _app_win_clamp(self) -> None:
        """Linux ``tcp_init_buffer_space``: window_clamp leaves 1/2^tcp_app_win of the
        window (at least 4 MSS) and at least one segment to the application buffer."""
        app_win = self.engine.settings.tcp_app_win
        advmss = self._advmss()
        maxwin = self._win_from_space(self.rcvbuf_size)
        wc = self._wnd_clamp
        if wc >= maxwin:
            wc = maxwin
            if app_win and maxwin > 4 * advmss:
                wc = max(maxwin - (maxwin >> app_win), 4 * advmss)
        if app_win and wc > 2 * advmss and wc + advmss > maxwin:
            wc = max(2 * advmss, maxwin - advmss)  # "force reservation of one segment"
        self._wnd_clamp = wc
        self._rcv_ssthresh = min(self._rcv_ssthresh, wc)

    def _rcv_window_now(self) -> int:
        """Linux ``tcp_receive_window``: what is left of the last advertised window."""
        # max(0, sq.sub(rcv_wup + rcv_wnd, rcv_nxt)), inlined (called per segment)
        d = (self.rcv_wup + self.rcv_wnd - self.rcv_nxt) & sq.MASK
        return d if d < sq.HALF else 0

    def _raw_window(self) -> int:
        """Linux ``__tcp_select_window``: the window we would offer now (with RFC 1122
        §4.2.3.3 receiver-side silly window avoidance)."""
        mss = self._rcv_mss
        space = self._win_from_space(self.rcvbuf_size)
        full = min(self._wnd_clamp or (65535 << 14), space)
        rb = self._rcvbuf
        used = rb.used if rb is not None else 0
        free = max(0, space - used)
        ws = self.rcv_wscale
        if mss > full:
            mss = full
            if mss <= 0:
                return 0
        if free < (full >> 1):
            self._quick = 0
            if self._under_memory_pressure():
                self._adjust_rcv_ssthresh()
            free = (free >> ws) << ws
            if free < (full >> 4) or free < mss:
                return 0
        if free > self._rcv_ssthresh:
            free = self._rcv_ssthresh
        if ws:
            unit = 1 << ws
            return (free + unit - 1) // unit * unit
        window = self.rcv_wnd
        if window <= free - mss or window > free:
            window = (free // mss) * mss
        elif mss == full and free > window + (full >> 1):
            window = free
        return window

    def _select_window(self) -> int:
        """Linux ``tcp_select_window``: never shrink the offered window (RFC 9293 §3.8.6.2.2)."""
        cur = self._rcv_window_now()
        new = self._raw_window()
        ws = self.rcv_wscale
        if new < cur:
            unit = 1 << ws
            new = (cur + unit - 1) // unit * unit
        if not ws and self.engine.settings.tcp_workaround_signed_windows:
            new = min(new, MAX_TCP_WINDOW)  # the peer may read the field as signed
        else:
            new = min(new, 65535 << ws)
        self.rcv_wnd = new
        self.rcv_wup = self.rcv_nxt
        return new

    # ---------------------------------------------------------------------------------
    # Receive-buffer autotuning (tcp_moderate_rcvbuf)
    # ---------------------------------------------------------------------------------
    def _rcv_space_start(self, now: float) -> RcvSpace:
        """Begin autotuning (Linux ``tcp_init_buffer_space``): the first measurement
        expects at most an initial window's worth (10 MSS) per RTT."""
        rb = self._rcvbuf
        space = min(self._rcv_ssthresh, self.rcv_wnd, TCP_INIT_CWND * self._advmss())
        rt = self._rtune = RcvSpace(space, rb.read_off if rb is not None else 0, now)
        return rt

    def _rcv_space_adjust(self, now: float) -> None:
        """Linux ``tcp_rcv_space_adjust`` (Dynamic Right-Sizing): once per receiver RTT,
        compare what the application read with the last measure; if it grew, grow the
        receive buffer (up to tcp_rmem[2]) so the window can carry twice that plus the
        growth, and let the window clamp follow.  SO_RCVBUF locks the buffer."""
        rt = self._rtune
        if rt is None or not rt.rtt or now - rt.time < rt.rtt:
            return
        rb = self._rcvbuf
        read = rb.read_off if rb is not None else 0
        copied = read - rt.seq
        space = rt.space
        if copied > space:
            s = self.engine.settings
            if s.tcp_moderate_rcvbuf and not self._f & F_RCVBUF_LOCK:
                advmss = self._advmss()
                rcvwin = 2 * copied + 16 * advmss
                # Accommodate the sender's rate increase (slow start doubles per RTT).
                rcvwin += 2 * (rcvwin * (copied - space) // max(space, 1))
                rcvbuf = min(self._space_from_win(rcvwin), s.tcp_rmem[2])
                if rcvbuf > self.rcvbuf_size:
                    self.rcvbuf_size = rcvbuf
                    clamp = min(self._win_from_space(rcvbuf), 65535 << self.rcv_wscale)
                    user = int(self._opt(TCP_WINDOW_CLAMP, 0))
                    self._wnd_clamp = min(clamp, user) if user else clamp
            rt.space = copied
        rt.seq = read
        rt.time = now

    def _rcv_rtt_update(self, rt: RcvSpace, sample: float, win_dep: bool) -> None:
        """Linux ``tcp_rcv_rtt_update``: window-based samples keep the minimum, timestamp
        samples are smoothed with gain 1/8."""
        cur = rt.rtt
        if not cur:
            cur = sample
        elif win_dep:
            cur = min(cur, sample)
        else:
            cur += (sample - cur) / 8
        rt.rtt = cur

    def _rcv_rtt_measure(self, rt: RcvSpace, now: float) -> None:
        """Linux ``tcp_rcv_rtt_measure``: the time to receive one window's worth of data
        is an upper bound of the RTT (what counts without timestamps)."""
        t = rt.rtt_time
        if t is not None:
            if sq.lt(self.rcv_nxt, rt.rtt_seq):
                return
            self._rcv_rtt_update(rt, max(now - t, 1e-6), True)
        rt.rtt_seq = sq.add(self.rcv_nxt, self.rcv_wnd)
        rt.rtt_time = now
