"""pystackctl's output: ss -ti lines, counters, sysctls, status (pure formatting)."""

from __future__ import annotations

import re

from ctl.format import (
    format_ss,
    format_stats,
    format_status,
    format_sysctl,
    format_uptime,
    select_sockets,
    tcp_info_fields,
)

INFO = {
    "state": "ESTAB", "ca_state": "OPEN", "retransmits": 0, "probes": 0, "backoff": 0,
    "options": ["ts", "sack", "wscale"], "wscale": [7, 10], "rto": 204.0, "ato": 40.0,
    "rtt": 0.245, "rttvar": 0.128, "mss": 1448, "pmtu": 1500, "rcvmss": 536, "advmss": 1460,
    "cwnd": 10, "ssthresh": 0x7FFFFFFF, "bytes_sent": 265, "bytes_acked": 265,
    "bytes_received": 36, "segs_in": 4, "segs_out": 2, "data_segs_in": 1, "data_segs_out": 1,
    "unacked": 0, "retrans": 0, "lost": 0, "snd_wnd": 64512, "rcv_wnd": 65535,
    "rcv_space": 65536, "rcv_ssthresh": 65160, "notsent": 0, "cc": "cubic",
}

ROWS = [
    {"state": "LISTEN", "recv_q": 0, "send_q": 128, "local": ["0.0.0.0", 80],
     "peer": ["0.0.0.0", 0]},
    {"state": "ESTAB", "recv_q": 12, "send_q": 3000, "local": ["198.18.0.1", 80],
     "peer": ["198.18.0.2", 40684], "info": INFO},
    {"state": "TIME-WAIT", "recv_q": 0, "send_q": 0, "local": ["198.18.0.1", 80],
     "peer": ["198.18.0.2", 40690], "info": dict(INFO, state="TIME-WAIT")},
]


def test_tcp_info_fields_follow_ss_order_and_rules() -> None:
    f = tcp_info_fields(INFO)
    assert f[:4] == ["ts", "sack", "cubic", "wscale:7,10"]
    assert f[4:7] == ["rto:204", "rtt:0.245/0.128", "ato:40"]
    order = [x.split(":")[0].split(" ")[0] for x in f]
    expected = ["mss", "pmtu", "rcvmss", "advmss", "cwnd", "bytes_sent", "bytes_acked",
                "bytes_received", "segs_out", "segs_in", "data_segs_out", "data_segs_in",
                "send", "rcv_space", "rcv_ssthresh", "snd_wnd"]
    assert [o for o in order if o in expected] == expected
    # "infinite" ssthresh, zero retransmissions and zero unacked are not printed (as ss)
    assert not any(x.startswith(("ssthresh", "retrans", "unacked", "lost", "notsent",
                                 "backoff")) for x in f)
    assert "send 473Mbps" in f  # cwnd * mss * 8 / srtt, ss's sprint_bw


def test_tcp_info_fields_after_loss() -> None:
    f = tcp_info_fields(dict(INFO, ssthresh=7, retransmits=1, retrans=5, unacked=3, lost=1,
                             backoff=2, notsent=100))
    assert "ssthresh:7" in f and "retrans:1/5" in f and "unacked:3" in f and "lost:1" in f
    assert "backoff:2" in f and "notsent:100" in f
    assert f.index("backoff:2") == f.index("rto:204") + 1


def test_tcp_info_fields_of_a_real_connection() -> None:
    from pystack.tcp.connection import Connection
    from pystack.tcp.engine import TcpEngine
    from pystack.wire.segment import FourTuple

    c = Connection(TcpEngine(), FourTuple(1, 80, 2, 4000))
    f = tcp_info_fields(c.tcp_info())
    assert f[0] == "cubic" and any(x.startswith("rto:") for x in f)


def test_format_ss_columns_and_info_lines() -> None:
    out = format_ss(select_sockets(ROWS), info=True).splitlines()
    assert re.match(r"State\s+Recv-Q\s+Send-Q\s+Local Address:Port\s+Peer Address:Port\s+"
                    r"Process$", out[0])
    assert out[1].split() == ["ESTAB", "12", "3000", "198.18.0.1:80", "198.18.0.2:40684"]
    assert out[2].startswith("\t ts sack cubic wscale:7,10 rto:204")
    assert out[3].split()[0] == "TIME-WAIT"
    assert len(out) == 5
    # the address column is right-aligned on the colon, as ss prints it
    assert out[1].index(":80") == out[3].index(":80")


def test_select_sockets_default_listening_all() -> None:
    assert [r["state"] for r in select_sockets(ROWS)] == ["ESTAB", "TIME-WAIT"]
    assert [r["state"] for r in select_sockets(ROWS, listening=True)] == ["LISTEN"]
    assert len(select_sockets(ROWS, all_states=True)) == 3
    listen = format_ss(select_sockets(ROWS, listening=True)).splitlines()[1]
    assert listen.split() == ["LISTEN", "0", "128", "0.0.0.0:80", "0.0.0.0:*"]


def test_format_ss_empty_is_just_the_header() -> None:
    assert format_ss([]).startswith("State") and "\n" not in format_ss([])


def test_format_stats_and_sysctl() -> None:
    text = format_stats({"TcpActiveOpens": 1, "TcpExtTCPFastOpenPassive": 22})
    assert [ln.split() for ln in text.splitlines()] == [["TcpActiveOpens", "1"],
                                                         ["TcpExtTCPFastOpenPassive", "22"]]
    assert format_sysctl([["net.ipv4.tcp_sack", "1"], ["net.ipv4.tcp_rmem", "1\t2\t3"]]) == (
        "net.ipv4.tcp_sack = 1\nnet.ipv4.tcp_rmem = 1\t2\t3")


def test_format_status() -> None:
    st = {"pid": 42, "iface": "eth1", "ifindex": 3, "prog_id": 57, "mode": "native",
          "attachment": "bpf_link", "addresses": ["198.18.0.1"], "ports": [80, 443],
          "app": "http:/srv", "uptime": 3725.0, "metrics": "127.0.0.1:9464",
          "connections": 3, "states": {"ESTABLISHED": 2, "TIME_WAIT": 1, "LISTEN": 2}}
    text = format_status(st)
    assert text.splitlines()[0] == "eth1: pystack pid 42, up 01:02:05"
    assert "program id 57, native mode" in text and "80,443 (app http:/srv)" in text
    assert "3 (ESTABLISHED 2, TIME_WAIT 1)" in text
    assert "http://127.0.0.1:9464/metrics" in text
    assert format_uptime(12.34) == "12.3s" and format_uptime(90061) == "1d 01:01:01"
