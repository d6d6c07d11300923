"""``struct tcp_info`` as Linux lays it out (``include/uapi/linux/tcp.h``, 248 bytes in
6.x), so ``getsockopt(IPPROTO_TCP, TCP_INFO, n)`` returns the bytes code written for the
kernel expects.  Fields pystack does not track are zero.  Units as Linux: rto, ato, rtt,
rttvar, rcv_rtt and min_rtt in microseconds; the last_* times in milliseconds.

Offsets (bytes, as tcp.h): state 0, options 5, wscale 6, rto 8, unacked 24, sacked 28,
lost 32, retrans 36, last_data_sent 44, last_data_recv 52, last_ack_recv 56, rtt 68,
snd_cwnd 80, reordering 88, rcv_rtt 92, rcv_space 96, total_retrans 100, pacing_rate 104,
notsent_bytes 144, min_rtt 148, delivered 192, bytes_sent 200, dsack_dups 216,
reord_seen 220, snd_wnd 228, rcv_wnd 232, total_rto 240 (``OFFSETS``).
"""

from __future__ import annotations

import struct
from typing import Any

from pystack.cc.base import CaState

__all__ = [
    "OFFSETS",
    "SIZE",
    "TCPI_OPT_ECN",
    "TCPI_OPT_ECN_SEEN",
    "TCPI_OPT_SACK",
    "TCPI_OPT_SYN_DATA",
    "TCPI_OPT_TIMESTAMPS",
    "TCPI_OPT_WSCALE",
    "TCP_INFO_FIELDS",
    "pack_tcp_info",
    "unpack_tcp_info",
]

# (name, struct code) in kernel order; the two bitfield bytes are split by unpack.
TCP_INFO_FIELDS: tuple[tuple[str, str], ...] = (
    ("state", "B"), ("ca_state", "B"), ("retransmits", "B"), ("probes", "B"),
    ("backoff", "B"), ("options", "B"), ("wscale", "B"), ("app_limited_fo_fail", "B"),
    ("rto", "I"), ("ato", "I"), ("snd_mss", "I"), ("rcv_mss", "I"),
    ("unacked", "I"), ("sacked", "I"), ("lost", "I"), ("retrans", "I"), ("fackets", "I"),
    ("last_data_sent", "I"), ("last_ack_sent", "I"), ("last_data_recv", "I"),
    ("last_ack_recv", "I"),
    ("pmtu", "I"), ("rcv_ssthresh", "I"), ("rtt", "I"), ("rttvar", "I"),
    ("snd_ssthresh", "I"), ("snd_cwnd", "I"), ("advmss", "I"), ("reordering", "I"),
    ("rcv_rtt", "I"), ("rcv_space", "I"), ("total_retrans", "I"),
    ("pacing_rate", "Q"), ("max_pacing_rate", "Q"), ("bytes_acked", "Q"),
    ("bytes_received", "Q"), ("segs_out", "I"), ("segs_in", "I"),
    ("notsent_bytes", "I"), ("min_rtt", "I"), ("data_segs_in", "I"), ("data_segs_out", "I"),
    ("delivery_rate", "Q"), ("busy_time", "Q"), ("rwnd_limited", "Q"),
    ("sndbuf_limited", "Q"), ("delivered", "I"), ("delivered_ce", "I"),
    ("bytes_sent", "Q"), ("bytes_retrans", "Q"), ("dsack_dups", "I"), ("reord_seen", "I"),
    ("rcv_ooopack", "I"), ("snd_wnd", "I"), ("rcv_wnd", "I"), ("rehash", "I"),
    ("total_rto", "H"), ("total_rto_recoveries", "H"), ("total_rto_time", "I"),
)
_STRUCT = struct.Struct("<" + "".join(code for _, code in TCP_INFO_FIELDS))
SIZE = _STRUCT.size  # 248


def _offsets() -> dict[str, int]:
    out: dict[str, int] = {}
    off = 0
    for name, code in TCP_INFO_FIELDS:
        out[name] = off
        off += struct.calcsize("<" + code)
    return out


OFFSETS: dict[str, int] = _offsets()  # byte offset of each field (no padding: all aligned)

# tcpi_options bits (TCPI_OPT_*)
TCPI_OPT_TIMESTAMPS = 1
TCPI_OPT_SACK = 2
TCPI_OPT_WSCALE = 4
TCPI_OPT_ECN = 8
TCPI_OPT_ECN_SEEN = 16
TCPI_OPT_SYN_DATA = 32

_OPT_BITS = {"ts": TCPI_OPT_TIMESTAMPS, "sack": TCPI_OPT_SACK, "wscale": TCPI_OPT_WSCALE,
             "ecn": TCPI_OPT_ECN, "ecnseen": TCPI_OPT_ECN_SEEN, "syn_data": TCPI_OPT_SYN_DATA}
_MASK = {"B": 0xFF, "H": 0xFFFF, "I": 0xFFFFFFFF, "Q": 0xFFFFFFFFFFFFFFFF}


def _us(ms: float) -> int:
    return max(0, int(round(ms * 1000)))


def _ms(ms: float) -> int:
    return max(0, int(round(ms)))


def pack_tcp_info(info: dict[str, Any], state: int, reordering: int | None = None) -> bytes:
    """Pack a :meth:`Connection.tcp_info` dict (``ss -ti`` names, times in ms) into
    Linux's struct bytes.  ``reordering`` is used when the dict has none."""
    opts = 0
    for name in info.get("options", ()):
        opts |= _OPT_BITS.get(name, 0)
    ws = info.get("wscale") or (0, 0)
    ca = info.get("ca_state", "OPEN")
    g = info.get
    values = {
        "state": state,
        "ca_state": int(CaState[ca]) if isinstance(ca, str) else int(ca),
        "retransmits": g("retransmits", 0),
        "probes": g("probes", 0),
        "backoff": g("backoff", 0),
        "options": opts,
        "wscale": (ws[0] & 0xF) | ((ws[1] & 0xF) << 4),
        "rto": _us(g("rto", 0)),
        "ato": _us(g("ato", 0)),
        "snd_mss": g("mss", 0),
        "rcv_mss": g("rcvmss", 0),
        "unacked": g("unacked", 0),
        "sacked": g("sacked", 0),
        "lost": g("lost", 0),
        "retrans": g("retrans", 0),  # tcpi_retrans: retransmitted and not yet acked
        "last_data_sent": _ms(g("lastsnd", 0)),
        "last_data_recv": _ms(g("lastrcv", 0)),
        "last_ack_recv": _ms(g("lastack", 0)),
        "pmtu": g("pmtu", 0),
        "rcv_ssthresh": g("rcv_ssthresh", 0),
        "rtt": _us(g("rtt", 0)),
        "rttvar": _us(g("rttvar", 0)),
        "snd_ssthresh": min(g("ssthresh", 0), 0xFFFFFFFF),
        "snd_cwnd": g("cwnd", 0),
        "advmss": g("advmss", 0),
        "reordering": g("reordering", 3 if reordering is None else reordering),
        "rcv_rtt": _us(g("rcv_rtt", 0)),
        "rcv_space": g("rcv_space", 0),
        "total_retrans": g("total_retrans", g("retrans", 0)),
        "bytes_acked": g("bytes_acked", 0),
        "bytes_received": g("bytes_received", 0),
        "segs_out": g("segs_out", 0),
        "segs_in": g("segs_in", 0),
        "notsent_bytes": g("notsent", 0),
        "min_rtt": _us(g("minrtt", 0)),
        "data_segs_in": g("data_segs_in", 0),
        "data_segs_out": g("data_segs_out", 0),
        "delivered": g("delivered", 0),
        "bytes_sent": g("bytes_sent", 0),
        "bytes_retrans": g("bytes_retrans", 0),
        "dsack_dups": g("dsack_dups", 0),
        "reord_seen": g("reord_seen", 0),
        "snd_wnd": g("snd_wnd", 0),
        "rcv_wnd": g("rcv_wnd", 0),
    }
    return _STRUCT.pack(*(int(values.get(name, 0)) & _MASK[code]
                          for name, code in TCP_INFO_FIELDS))


def unpack_tcp_info(data: bytes) -> dict[str, int]:
    """Decode struct tcp_info bytes (pystack's or the kernel's; shorter input is padded
    with zeros, longer input is cut).  ``wscale`` splits into snd_wscale/rcv_wscale."""
    raw = bytes(data[:SIZE]).ljust(SIZE, b"\0")
    out = dict(zip((n for n, _ in TCP_INFO_FIELDS), _STRUCT.unpack(raw), strict=True))
    ws = out.pop("wscale")
    out["snd_wscale"], out["rcv_wscale"] = ws & 0xF, ws >> 4
    out.pop("app_limited_fo_fail")
    return out
