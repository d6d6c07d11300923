"""Values shared with the XDP program; mirrors bpf/pystack_xdp.h (a unit test checks)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

MAX_QUEUES = 64

ACTIONS = ("aborted", "drop", "pass", "tx", "redirect")  # index = ACT_* value

# Drop reasons, index = DROP_* value. Label values of pystack_xdp_drops_total{reason}.
DROP_REASONS = (
    "truncated",
    "bad_version",
    "bad_ihl",
    "bad_total_length",
    "bad_doff",
    "ip_checksum",
    "tcp_checksum",
    "fragment",
    "no_xsk",
    "syncookie_failed",
)

META_MAGIC = 0x5053
META_CSUM_OK = 0x0001
META_COOKIE_OK = 0x0002
META_SIZE = 8

# SYN cookies (bpf/pystack_xdp.h describes the cookie, the maps and the rules).
# Index order. XdpSynAcks is pystack's own: SYN-ACKs XDP sent for requests it kept.
SYNCOOKIE_COUNTERS = ("SyncookiesSent", "SyncookiesRecv", "SyncookiesFailed", "XdpSynAcks")
SYNCOOKIE_PERIOD_SHIFT = 6  # time counter = CLOCK_MONOTONIC seconds >> 6
SYNCOOKIE_VALID_SEC = 128
SYNCOOKIE_MSS_BITS = 2
SYNCOOKIE_COUNT_BITS = 2
SYNCOOKIE_HASH_SHIFT = 4
MSSTAB = (536, 1300, 1440, 1460)  # the cookie's MSS index (like Linux's msstab)

SC_CFG_TIMESTAMPS = 0x1
SC_CFG_SACK = 0x2
SC_CFG_WSCALE = 0x4
SC_CFG_ECN = 0x8

# struct flow_key (owned_flows, synack_req): remote addr, local addr, remote port, local
# port, all four in network order.
FLOW_KEY = struct.Struct("!IIHH")

# SYN-ACKs from XDP with the request kept (synack_req; pystack.xdp_synack).
SYNACK_REQ_MAX = 8192
REQ_SACK = 0x1
REQ_ECN = 0x2
# struct synack_req: sent_ns, isn, peer_isn, peer_tsval, mss, wscale, flags, peer_mac, pad
SYNACK_REQ = struct.Struct("=QIIIHBB6sH")

# pystack_meta.syncookie / ps_desc.syncookie, valid with META_COOKIE_OK.
SC_INFO_MSS_MASK = 0x0000FFFF
SC_INFO_WSCALE_SHIFT = 16
SC_INFO_SACK = 0x00100000
SC_INFO_TS = 0x00200000
SC_INFO_ECN = 0x00400000
SC_INFO_OUR_WS_SHIFT = 24
SC_WSCALE_NONE = 0xF


@dataclass(frozen=True, slots=True)
class CookieInfo:
    """What an ACK with a valid SYN cookie tells the control plane (META_COOKIE_OK)."""

    mss: int  # the MSS the client may be sent (msstab entry the cookie carried)
    snd_wscale: int | None  # the client's window scale shift; None: no window scaling
    rcv_wscale: int  # our shift as configured (what the SYN-ACK offered), if scaling is on
    sack_permitted: bool
    timestamps: bool  # the ACK carried timestamps (TSecr = our SYN-ACK's TSval)
    ecn: bool

    @property
    def wscale_ok(self) -> bool:
        return self.snd_wscale is not None


def decode_cookie_info(word: int) -> CookieInfo:
    """Decode pystack_meta.syncookie (ps_desc.syncookie) of a META_COOKIE_OK frame."""
    ws = (word >> SC_INFO_WSCALE_SHIFT) & 0xF
    return CookieInfo(
        mss=word & SC_INFO_MSS_MASK,
        snd_wscale=None if ws == SC_WSCALE_NONE else ws,
        rcv_wscale=(word >> SC_INFO_OUR_WS_SHIFT) & 0xF,
        sack_permitted=bool(word & SC_INFO_SACK),
        timestamps=bool(word & SC_INFO_TS),
        ecn=bool(word & SC_INFO_ECN),
    )
