"""``struct tcp_info`` as Linux lays it out (``include/uapi/linux/tcp.h``, 248 bytes in
6.x), so ``getsockopt(IPPROTO_TCP, TCP_INFO, n)`` returns the bytes code written for the
kernel expects. Fields pystack does not track are zero. Times are microseconds."""

from __future__ import annotations

import struct
from typing import Any

from pystack.cc.base import CaState

__all__ = ["TCP_INFO_FIELDS", "pack_tcp_info", "unpack_tcp_info"]

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

# tcpi_options bits (TCPI_OPT_*)
TCPI_OPT_TIMESTAMPS = 1
TCPI_OPT_SACK = 2
TCPI_OPT_WSCALE = 4
TCPI_OPT_SYN_DATA = 32

_OPT_BITS = {"ts": TCPI_OPT_TIMESTAMPS, "sack": TCPI_OPT_SACK, "wscale": TCPI_OPT_WSCALE,
             "syn_data": TCPI_OPT_SYN_DATA}


def _us(ms: float) -> int:
    return max(0, int(round(ms * 1000)))


def pack_tcp_info(info: dict[str, Any], state: int, reordering: int = 3) -> bytes:
    """Pack a :meth:`Connection.tcp_info` dict (ms times) into Linux's struct bytes."""
    opts = 0
    for name in info.get("options", ()):
        opts |= _OPT_BITS.get(name, 0)
    ws = info.get("wscale") or (0, 0)
    ca = info.get("ca_state", "OPEN")
    values = {
        "state": state,
        "ca_state": int(CaState[ca]) if isinstance(ca, str) else int(ca),
        "retransmits": info.get("retransmits", 0),
        "probes": info.get("probes", 0),
        "backoff": info.get("backoff", 0),
        "options": opts,
        "wscale": (ws[0] & 0xF) | ((ws[1] & 0xF) << 4),
        "rto": _us(info.get("rto", 0)),
        "ato": _us(info.get("ato", 0)),
        "snd_mss": info.get("mss", 0),
        "rcv_mss": info.get("rcvmss", 0),
        "unacked": info.get("unacked", 0),
        "lost": info.get("lost", 0),
        "retrans": info.get("retrans", 0),
        "pmtu": info.get("pmtu", 0),
        "rcv_ssthresh": info.get("rcv_ssthresh", 0),
        "rtt": _us(info.get("rtt", 0)),
        "rttvar": _us(info.get("rttvar", 0)),
        "snd_ssthresh": min(info.get("ssthresh", 0), 0xFFFFFFFF),
        "snd_cwnd": info.get("cwnd", 0),
        "advmss": info.get("advmss", 0),
        "reordering": reordering,
        "rcv_space": info.get("rcv_space", 0),
        "total_retrans": info.get("retrans", 0),
        "bytes_acked": info.get("bytes_acked", 0),
        "bytes_received": info.get("bytes_received", 0),
        "segs_out": info.get("segs_out", 0),
        "segs_in": info.get("segs_in", 0),
        "notsent_bytes": info.get("notsent", 0),
        "data_segs_in": info.get("data_segs_in", 0),
        "data_segs_out": info.get("data_segs_out", 0),
        "bytes_sent": info.get("bytes_sent", 0),
        "snd_wnd": info.get("snd_wnd", 0),
        "rcv_wnd": info.get("rcv_wnd", 0),
    }
    return _STRUCT.pack(*(int(values.get(name, 0)) & _mask(code)
                          for name, code in TCP_INFO_FIELDS))


def _mask(code: str) -> int:
    return {"B": 0xFF, "H": 0xFFFF, "I": 0xFFFFFFFF, "Q": 0xFFFFFFFFFFFFFFFF}[code]


def unpack_tcp_info(data: bytes) -> dict[str, int]:
    """Decode struct tcp_info bytes (pystack's or the kernel's; shorter input is padded
    with zeros, longer input is cut). ``wscale`` splits into snd_wscale/rcv_wscale."""
    raw = bytes(data[:SIZE]).ljust(SIZE, b"\0")
    out = dict(zip((n for n, _ in TCP_INFO_FIELDS), _STRUCT.unpack(raw), strict=True))
    ws = out.pop("wscale")
    out["snd_wscale"], out["rcv_wscale"] = ws & 0xF, ws >> 4
    out.pop("app_limited_fo_fail")
    return out
