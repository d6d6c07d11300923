"""MSS and receive-window sizing (RFC 9293 §3.8.6, RFC 7323 §2; Linux tcp_select_window)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pystack.tcp import seq as sq
from pystack.tcp.state import (
    TCP_MAXSEG,
    TCP_WINDOW_CLAMP,
)

if TYPE_CHECKING:
    pass

from pystack.tcp.constants import (
    F_SNDBUF_LOCK,
    F_TS,
    F_WSCALE,
    TCP_MAX_WSCALE,
    TCP_MSS_DEFAULT,
    TS_OPT_LEN,
)


class WindowMixin:
    """MSS choice and the window advertised to the peer."""

    __slots__ = ()

    def _win_from_space(self, space: int) -> int:
        """Linux ``tcp_win_from_space`` with tcp_adv_win_scale."""
        scale = self.engine.settings.tcp_adv_win_scale
        if scale <= 0:
            return space >> -scale
        return space - (space >> scale)

    def _full_space(self) -> int:
        return min(self._wnd_clamp or (65535 << 14), self._win_from_space(self.rcvbuf_size))

    def _sndbuf_limit(self) -> int:
        """Send buffer capacity; grows with cwnd unless SO_SNDBUF fixed it (tcp_sndbuf_expand)."""
        lim = self.sndbuf_size
        if not self._f & F_SNDBUF_LOCK and self.ccs is not None:
            want = 2 * self.ccs.snd_cwnd * self.snd_mss
            lim = max(lim, min(want, self.engine.settings.tcp_wmem[2]))
        return lim

    def _advmss(self) -> int:
        """The MSS we announce: MTU - 40, clamped by TCP_MAXSEG (RFC 9293 §3.7.1)."""
        m = self.engine.mtu - 40
        user = self._opt(TCP_MAXSEG, 0)
        if user:
            m = min(m, user)
        return m


    def _compute_snd_mss(self) -> None:
        """Linux ``tcp_sync_mss``: effective send MSS from the peer's MSS, MTU, TCP_MAXSEG."""
        m = min(self._peer_mss, self.engine.mtu - 40)
        user = self._opt(TCP_MAXSEG, 0)
        if user:
            m = min(m, user)
        if self._f & F_TS:
            m -= TS_OPT_LEN
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

    def _init_rcv_window(self, mss: int) -> None:
        """Linux ``tcp_select_initial_window``: first window, window scale, clamp."""
        s = self.engine.settings
        space = self._win_from_space(self.rcvbuf_size)
        clamp = int(self._opt(TCP_WINDOW_CLAMP, 0)) or (65535 << TCP_MAX_WSCALE)
        space = min(clamp, space)
        if space > mss:
            space = (space // mss) * mss
        self.rcv_wnd = min(space, 65535)
        ws = 0
        if self._f & F_WSCALE:
            sp = max(space, s.tcp_rmem[2], s.rmem_max)
            sp = min(sp, clamp)
            ws = max(0, min(sp.bit_length() - 1 - 15, TCP_MAX_WSCALE))
        self.rcv_wscale = ws
        self._wnd_clamp = min(65535 << ws, clamp)
        self._rcv_ssthresh = self.rcv_wnd
        self.rcv_wup = self.rcv_nxt

    def _rcv_window_now(self) -> int:
        """Linux ``tcp_receive_window``: what is left of the last advertised window."""
        return max(0, sq.sub(sq.add(self.rcv_wup, self.rcv_wnd), self.rcv_nxt))

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
        new = min(new, 65535 << ws)
        self.rcv_wnd = new
        self.rcv_wup = self.rcv_nxt
        return new
