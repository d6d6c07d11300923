"""getsockopt(IPPROTO_TCP, TCP_INFO) at the engine level: the 248 bytes of Linux 6.x's
struct tcp_info (include/uapi/linux/tcp.h), read here at tcp.h's byte offsets without the
packer's own field list."""

from __future__ import annotations

import struct

import pytest

import pystack.api.tcpinfo as api_tcpinfo
from pystack.tcp import tcpinfo
from pystack.tcp.connection import Connection
from pystack.tcp.state import IPPROTO_TCP, TCP_INFO, TcpState
from pystack.tcp.testing import LOCAL_ISN, REMOTE_ISN, Harness
from pystack.wire.segment import ACK, SYN, TcpOptions

L = LOCAL_ISN + 1
R = REMOTE_ISN + 1

# Offsets of struct tcp_info (Linux 6.x include/uapi/linux/tcp.h), counted by hand.
TCP_H = {
    "state": (0, "B"), "ca_state": (1, "B"), "retransmits": (2, "B"), "probes": (3, "B"),
    "backoff": (4, "B"), "options": (5, "B"), "wscale": (6, "B"),
    "rto": (8, "I"), "ato": (12, "I"), "snd_mss": (16, "I"), "rcv_mss": (20, "I"),
    "unacked": (24, "I"), "sacked": (28, "I"), "lost": (32, "I"), "retrans": (36, "I"),
    "fackets": (40, "I"), "last_data_sent": (44, "I"), "last_ack_sent": (48, "I"),
    "last_data_recv": (52, "I"), "last_ack_recv": (56, "I"), "pmtu": (60, "I"),
    "rcv_ssthresh": (64, "I"), "rtt": (68, "I"), "rttvar": (72, "I"),
    "snd_ssthresh": (76, "I"), "snd_cwnd": (80, "I"), "advmss": (84, "I"),
    "reordering": (88, "I"), "rcv_rtt": (92, "I"), "rcv_space": (96, "I"),
    "total_retrans": (100, "I"), "pacing_rate": (104, "Q"), "max_pacing_rate": (112, "Q"),
    "bytes_acked": (120, "Q"), "bytes_received": (128, "Q"), "segs_out": (136, "I"),
    "segs_in": (140, "I"), "notsent_bytes": (144, "I"), "min_rtt": (148, "I"),
    "data_segs_in": (152, "I"), "data_segs_out": (156, "I"), "delivery_rate": (160, "Q"),
    "busy_time": (168, "Q"), "rwnd_limited": (176, "Q"), "sndbuf_limited": (184, "Q"),
    "delivered": (192, "I"), "delivered_ce": (196, "I"), "bytes_sent": (200, "Q"),
    "bytes_retrans": (208, "Q"), "dsack_dups": (216, "I"), "reord_seen": (220, "I"),
    "rcv_ooopack": (224, "I"), "snd_wnd": (228, "I"), "rcv_wnd": (232, "I"),
    "rehash": (236, "I"), "total_rto": (240, "H"), "total_rto_recoveries": (242, "H"),
    "total_rto_time": (244, "I"),
}

# tcp_info() key -> (struct field, scale): times in ms become us (rto, rtt ...) or stay ms.
MAPPED = {
    "retransmits": ("retransmits", 1), "probes": ("probes", 1), "backoff": ("backoff", 1),
    "rto": ("rto", 1000), "ato": ("ato", 1000), "mss": ("snd_mss", 1),
    "rcvmss": ("rcv_mss", 1), "unacked": ("unacked", 1), "sacked": ("sacked", 1),
    "lost": ("lost", 1), "retrans": ("retrans", 1), "lastsnd": ("last_data_sent", 1),
    "lastrcv": ("last_data_recv", 1), "lastack": ("last_ack_recv", 1),
    "pmtu": ("pmtu", 1), "rcv_ssthresh": ("rcv_ssthresh", 1), "rtt": ("rtt", 1000),
    "rttvar": ("rttvar", 1000), "ssthresh": ("snd_ssthresh", 1), "cwnd": ("snd_cwnd", 1),
    "advmss": ("advmss", 1), "reordering": ("reordering", 1), "rcv_rtt": ("rcv_rtt", 1000),
    "rcv_space": ("rcv_space", 1), "total_retrans": ("total_retrans", 1),
    "bytes_acked": ("bytes_acked", 1), "bytes_received": ("bytes_received", 1),
    "segs_out": ("segs_out", 1), "segs_in": ("segs_in", 1),
    "notsent": ("notsent_bytes", 1), "minrtt": ("min_rtt", 1000),
    "data_segs_in": ("data_segs_in", 1), "data_segs_out": ("data_segs_out", 1),
    "delivered": ("delivered", 1), "bytes_sent": ("bytes_sent", 1),
    "dsack_dups": ("dsack_dups", 1), "reord_seen": ("reord_seen", 1),
    "snd_wnd": ("snd_wnd", 1), "rcv_wnd": ("rcv_wnd", 1),
}


def field(raw: bytes, name: str) -> int:
    off, code = TCP_H[name]
    return struct.unpack_from("<" + code, raw, off)[0]


def raw_info(c: Connection) -> bytes:
    raw = c.getsockopt(IPPROTO_TCP, TCP_INFO)
    assert isinstance(raw, bytes) and len(raw) == 248
    return raw


def check_all(c: Connection, raw: bytes) -> dict:
    info = c.tcp_info()
    for key, (name, scale) in MAPPED.items():
        want = max(0, int(round(info[key] * scale)))
        assert field(raw, name) == want, (key, name, field(raw, name), want)
    return info


def connection(window: int = 65535, **sysctls: object) -> tuple[Harness, Connection]:
    """SYN at 0, SYN-ACK at 50 ms (timestamps, SACK, window scaling), 1000 bytes sent
    then and acknowledged at 100 ms by an ACK advertising ``window`` (scaled by 2^7)."""
    h = Harness(plain=False, **sysctls)
    c = h.connect()
    h.recv()
    h.now = 0.05
    opts = TcpOptions(mss=1460, sack_permitted=True, wscale=7, timestamp=(100, 1))
    h.send(SYN | ACK, REMOTE_ISN, L, 65535, options=opts)
    h.recv()
    assert c.send(b"x" * 1000) == 1000
    h.recv()
    h.now = 0.1
    h.send(ACK, R, L + 1000, window, options=TcpOptions(timestamp=(150, 0)))
    h.recv()
    return h, c


def test_layout_matches_tcp_h() -> None:
    assert tcpinfo.SIZE == 248
    for name, (off, code) in TCP_H.items():
        assert tcpinfo.OFFSETS[name] == off, name
        assert dict(tcpinfo.TCP_INFO_FIELDS)[name] == code, name


def test_api_module_reexports_the_tcp_one() -> None:
    assert api_tcpinfo.pack_tcp_info is tcpinfo.pack_tcp_info
    assert api_tcpinfo.unpack_tcp_info is tcpinfo.unpack_tcp_info
    assert api_tcpinfo.TCP_INFO_FIELDS is tcpinfo.TCP_INFO_FIELDS
    assert api_tcpinfo.SIZE == 248


def test_engine_getsockopt_tcp_info_established() -> None:
    h, c = connection()
    h.advance_to(0.3)  # 250 ms after the last send, 200 ms after the last ACK
    h.recv()
    raw = raw_info(c)
    info = check_all(c, raw)
    assert field(raw, "state") == int(TcpState.ESTABLISHED)
    assert field(raw, "options") & 7 == 7  # TCPI_OPT_TIMESTAMPS | SACK | WSCALE
    assert field(raw, "wscale") >> 4 == c.rcv_wscale and field(raw, "wscale") & 15 == 7
    assert field(raw, "min_rtt") == 50000  # microseconds
    assert field(raw, "last_data_sent") == 250 and field(raw, "last_ack_recv") == 200
    assert field(raw, "bytes_acked") == 1001 and field(raw, "delivered") == info["delivered"]
    assert field(raw, "delivered") >= 1
    assert field(raw, "reordering") == 3 and field(raw, "rcv_space") > 0
    assert field(raw, "snd_cwnd") == 10 and field(raw, "total_retrans") == 0
    assert tcpinfo.unpack_tcp_info(raw)["min_rtt"] == 50000


def test_retransmissions_and_notsent() -> None:
    """retrans (in flight) vs total_retrans (ever) at 36 and 100; notsent_bytes at 144."""
    # 12 << 7 = 1536 bytes of send window; no tail loss probe: the RTO retransmits.
    h, c = connection(window=12, tcp_early_retrans=0)
    assert c.send(b"y" * 3000) == 3000
    assert [len(s.payload) for s in h.recv()] == [1448]  # one segment fits the window
    assert c._t_rtx is not None
    h.advance_to(c._t_rtx)  # RTO: retransmitted
    h.recv()
    raw = raw_info(c)
    check_all(c, raw)
    assert field(raw, "retrans") == 1 and field(raw, "total_retrans") == 1
    assert field(raw, "retransmits") == 1 and field(raw, "ca_state") == 4  # TCP_CA_Loss
    assert field(raw, "notsent_bytes") == 3000 - 1448
    assert field(raw, "unacked") == 1
    h.send(ACK, R, L + 1000 + 1448, 12, options=TcpOptions(timestamp=(200, 0)))
    h.recv()
    raw = raw_info(c)
    check_all(c, raw)
    assert field(raw, "retrans") == 0 and field(raw, "total_retrans") == 1


def test_listener_reports_listen() -> None:
    h = Harness()
    lst = h.listen()
    raw = lst.getsockopt(IPPROTO_TCP, TCP_INFO)
    assert isinstance(raw, bytes) and len(raw) == 248
    assert field(raw, "state") == int(TcpState.LISTEN)


def test_pack_defaults_and_truncation() -> None:
    raw = tcpinfo.pack_tcp_info({"retrans": 2}, 1, reordering=5)
    assert field(raw, "total_retrans") == 2  # an older dict without total_retrans
    assert field(raw, "reordering") == 5
    raw = tcpinfo.pack_tcp_info({"reordering": 9, "ssthresh": 1 << 40}, 1, reordering=5)
    assert field(raw, "reordering") == 9 and field(raw, "snd_ssthresh") == 0xFFFFFFFF
    with pytest.raises(KeyError):
        tcpinfo.pack_tcp_info({"ca_state": "NOPE"}, 1)
