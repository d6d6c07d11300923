"""TIME-WAIT reuse by ``connect()`` (``tcp_tw_reuse``; Linux ``tcp_twsk_unique`` and
``__inet_check_established``).

A four-tuple still in TIME-WAIT may be taken over by a new active open only when
timestamps protect the new connection from the old one's segments (RFC 7323 §5 PAWS,
RFC 6191's idea): the TIME-WAIT connection must have negotiated timestamps and received
one (a TS.Recent).  Then:

* ``connect()`` with an explicit local port (bind + connect) takes it over with no
  further condition (Linux calls ``tcp_twsk_unique`` with ``twp == NULL`` there);
* ephemeral port selection may pick it only if ``tcp_tw_reuse`` allows (0 never, 1
  always, 2 = default: only when either address is loopback, 127.0.0.0/8) and TS.Recent
  was last updated more than :data:`TW_REUSE_DELAY` ago (Linux ``tcp_tw_reuse_delay``).

The new connection's ISN is the old SND.NXT + 65535 + 2 (beyond anything the old one
could have had in flight, never 0) and it inherits TS.Recent; the TIME-WAIT entry goes
without the TW counter (Linux ``inet_twsk_deschedule_put``) and TWRecycled counts it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pystack.tcp import seq as sq
from pystack.tcp.constants import F_TS
from pystack.tcp.state import TcpState

if TYPE_CHECKING:
    from pystack.tcp.connection import Connection
    from pystack.tcp.engine import TcpEngine

__all__ = ["TW_REUSE_DELAY", "is_loopback", "take_over", "unique"]

TW_REUSE_DELAY = 1.0  # seconds; Linux tcp_tw_reuse_delay default (1000 ms)


def is_loopback(ip: int) -> bool:
    """Linux ``ipv4_is_loopback``: 127.0.0.0/8."""
    return ip >> 24 == 127


def unique(eng: TcpEngine, tw: Connection, bound: bool, now: float) -> bool:
    """May a new active open take over the TIME-WAIT connection ``tw``? ``bound``: the
    local port was given explicitly (Linux ``tcp_twsk_unique``)."""
    if tw.state != TcpState.TIME_WAIT or not tw._f & F_TS or tw.ts_recent_age is None:
        return False  # no timestamps: nothing tells old segments from new ones
    if bound:
        return True
    reuse = eng.settings.tcp_tw_reuse
    if reuse == 2 and not (is_loopback(tw.remote_ip) or is_loopback(tw.local_ip)):
        reuse = 0
    return bool(reuse) and now - tw.ts_recent_age > TW_REUSE_DELAY


def take_over(eng: TcpEngine, tw: Connection, c: Connection) -> None:
    """Replace ``tw`` by the new connection ``c`` (not yet in the table): its sequence
    space starts past the old one and it keeps the old TS.Recent."""
    iss = sq.add(tw.snd_nxt, 65535 + 2) or 1
    c.iss = c.snd_una = c.snd_nxt = iss
    c._write_seq = sq.add(iss, 1)
    c._snd_sml = iss
    c.ts_recent = tw.ts_recent
    c.ts_recent_age = tw.ts_recent_age
    eng._remove(tw)
    tw._t_wait = None
    tw.state = TcpState.CLOSED  # descheduled quietly: not a TIME-WAIT expiry (TW)
    eng.mib["TWRecycled"] += 1
