"""Path MTU black-hole detection: ``tcp_mtu_probing`` and ``tcp_base_mss`` (Linux
``tcp_mtup_init`` / ``tcp_mtu_probing``, the lower half of RFC 4821).

Linux keeps a search range [search_low, search_high] of path MTUs.  pystack keeps only
``search_low`` (``Connection._mtup_low``, 0 while MTU probing is off for the connection):

* ``tcp_mtu_probing = 2``: probing is on from the start and the first MSS is
  ``tcp_base_mss`` (tcp(7): "Always enabled, use initial MSS of tcp_base_mss").
* ``tcp_mtu_probing = 1``: off until a black hole is suspected, i.e. until a
  retransmission timeout finds the connection retransmitting for longer than
  ``tcp_retries1`` allows (Linux ``tcp_write_timeout``).  The first such timeout turns
  probing on, which caps the MSS at ``tcp_base_mss``; every further one halves it, not
  below ``tcp_mtu_probe_floor`` and ``tcp_min_snd_mss``.
* ``0``: nothing.

What pystack does not do is the upper half of RFC 4821: sending larger probe segments to
raise the MSS again (``tcp_mtu_probe``).  A lowered MSS therefore stays lowered for the
rest of the connection, and with ``tcp_mtu_probing = 2`` the MSS stays at
``tcp_base_mss``.
"""

from __future__ import annotations

from pystack.tcp.constants import F_TS, TS_OPT_LEN

_HEADERS = 40  # IPv4 + TCP headers without options


class MtuMixin:
    """Search-low of the path MTU and the MSS cap it implies."""

    __slots__ = ()

    def _mtup_hdr(self) -> int:
        return _HEADERS + (TS_OPT_LEN if self._f & F_TS else 0)

    def _mtup_init(self) -> None:
        """Linux ``tcp_mtup_init``: with tcp_mtu_probing=2 start at tcp_base_mss."""
        s = self.engine.settings
        self._mtup_low = s.tcp_base_mss + self._mtup_hdr() if s.tcp_mtu_probing > 1 else 0

    def _mtup_mss_cap(self) -> int:
        """The MSS search_low allows (0: no cap), Linux ``tcp_sync_mss``."""
        low = self._mtup_low
        return low - self._mtup_hdr() if low else 0

    def _mtu_probing(self) -> None:
        """Linux ``tcp_mtu_probing``: black-hole detection at an RTO past tcp_retries1.

        To be called by the retransmission timer where Linux calls it (it is harmless to
        call when tcp_mtu_probing is 0).
        """
        s = self.engine.settings
        if not s.tcp_mtu_probing:
            return
        if not self._mtup_low:
            self._mtup_low = s.tcp_base_mss + self._mtup_hdr()
        else:
            mss = self._mtup_mss_cap() >> 1
            mss = min(s.tcp_base_mss, mss)
            mss = max(mss, s.tcp_mtu_probe_floor, s.tcp_min_snd_mss)
            self._mtup_low = mss + self._mtup_hdr()
        self._compute_snd_mss()
