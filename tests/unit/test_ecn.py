"""ECN (RFC 3168): negotiation by tcp_ecn 0/1/2 with tcp_ecn_fallback, ECT(0) on new data
only, the receiver's ECE echo until CWR, and the sender's one reduction per window."""

from __future__ import annotations

import random

import pytest

from pystack.sim import LinkConfig, SimNetwork, StreamApp, accept_into
from pystack.tcp.connection import Connection
from pystack.tcp.engine import TcpEngine
from pystack.tcp.settings import Settings
from pystack.tcp.testing import LOCAL_ISN, REMOTE_ISN, Harness, check, flags_str
from pystack.wire.segment import ACK, CWR, ECE, PSH, SYN, TcpOptions, TcpSegment

L = LOCAL_ISN + 1
R = REMOTE_ISN + 1
M = 1460
ECT0, CE = 2, 3
INF = 0x7FFFFFFF


def client(ecn: int, synack_flags: int, **sysctls: object) -> tuple[Harness, Connection]:
    sysctls.setdefault("tcp_congestion_control", "reno")
    h = Harness(tcp_ecn=ecn, **sysctls)
    c = h.connect()
    syn = h.recv_one()
    assert syn.ecn == 0  # RFC 3168 §6.1.1: never ECT on a SYN
    h.send(SYN | ACK | synack_flags, REMOTE_ISN, L, options=TcpOptions(mss=M))
    h.expect(flags="A", seq=L, ack=R)
    h.syn_flags = flags_str(syn.flags)  # type: ignore[attr-defined]
    return h, c


@pytest.mark.parametrize(
    ("ecn", "synack", "syn_flags", "ok"),
    [
        (1, ECE, "SEC", True),  # requested and accepted
        (1, 0, "SEC", False),  # the server does not do ECN
        (1, ECE | CWR, "SEC", False),  # a broken reflector echoes both: not ECN-setup
        (2, ECE, "S", False),  # tcp_ecn 2 (default): only accept, never request
        (0, ECE, "S", False),
    ],
)
def test_active_open_negotiation(ecn: int, synack: int, syn_flags: str, ok: bool) -> None:
    h, c = client(ecn, synack)
    assert h.syn_flags == syn_flags  # type: ignore[attr-defined]
    assert ("ecn" in c.tcp_info()["options"]) == ok
    c.send(b"x" * 100)
    seg = h.recv_one()
    assert seg.ecn == (ECT0 if ok else 0)


@pytest.mark.parametrize(
    ("ecn", "syn", "ip_ecn", "ok"),
    [
        (2, ECE | CWR, 0, True),
        (1, ECE | CWR, 0, True),
        (0, ECE | CWR, 0, False),
        (2, ECE, 0, False),  # not an ECN-setup SYN
        (2, ECE | CWR, ECT0, False),  # an ECT SYN is suspicious (Linux)
    ],
)
def test_passive_open_negotiation(ecn: int, syn: int, ip_ecn: int, ok: bool) -> None:
    h = Harness(tcp_ecn=ecn)
    lst = h.listen()
    seg = h.seg(SYN | syn, REMOTE_ISN, options=TcpOptions(mss=M))
    seg.ecn = ip_ecn
    h.engine.input(seg, h.now)
    synack = h.recv_one()
    check(synack, flags="SAE" if ok else "SA")
    assert synack.ecn == 0
    h.send(ACK, R, L)
    c = lst.accept()
    assert c is not None
    assert ("ecn" in c.tcp_info()["options"]) == ok


def test_fallback_resends_the_syn_without_ecn() -> None:
    """RFC 3168 §6.1.1.1 / tcp_ecn_fallback: a lost ECN-setup SYN is retried plainly."""
    h = Harness(tcp_ecn=1)
    h.connect()
    h.expect(flags="SEC")
    h.advance(1.0)
    h.expect(flags="S")
    h2 = Harness(tcp_ecn=1, tcp_ecn_fallback=0)
    h2.connect()
    h2.expect(flags="SEC")
    h2.advance(1.0)
    h2.expect(flags="SEC")


def test_ect_only_on_new_data() -> None:
    h, c = client(1, ECE)
    c.send(bytes(M * 3))
    segs = h.recv()
    assert [s.ecn for s in segs] == [ECT0] * 3
    h.advance(c.rtt.rto)
    rtx = h.recv()
    assert rtx and rtx[0].seq == L and rtx[0].ecn == 0  # RFC 3168 §6.1.5
    # Pure ACKs are not ECT either.
    h.send(ACK | PSH, R, L + 3 * M, payload=b"data")
    ack = h.recv_one()
    assert not ack.payload and ack.ecn == 0


def test_receiver_echoes_ce_until_cwr() -> None:
    h, c = client(1, ECE)
    seg = h.seg(ACK | PSH, R, L, payload=b"a" * 100)
    seg.ecn = CE
    h.engine.input(seg, h.now)
    h.expect(flags="AE", ack=R + 100)  # at once, with ECE (RFC 3168 §6.1.3)
    assert "ecnseen" in c.tcp_info()["options"]
    h.send(ACK | PSH, R + 100, L, payload=b"b" * 100)  # not CE: ECE continues
    h.advance(0.2)
    assert all(s.flags & ECE for s in h.recv())
    h.send(ACK | PSH | CWR, R + 200, L, payload=b"c" * 100)  # the sender reacted
    h.advance(0.2)
    acks = h.recv()
    assert acks and not any(s.flags & ECE for s in acks)
    assert c.recv(1000) == b"a" * 100 + b"b" * 100 + b"c" * 100


def _ecn_sender() -> tuple[Harness, Connection]:
    h, c = client(1, ECE)
    c.set_option("SO_SNDBUF", 1 << 20)
    c.send(bytes(M * 100))
    assert len(h.recv()) == 10
    h.advance(0.05)
    return h, c


def ece_ack(h: Harness, n: int, ece: bool = True) -> list[TcpSegment]:
    h.send(ACK | (ECE if ece else 0), R, L + n * M)
    return [s for s in h.recv() if s.payload]


def test_sender_reduces_once_per_window_and_sends_cwr() -> None:
    h, c = _ecn_sender()
    tp = c.ccs
    out = ece_ack(h, 1)
    assert (tp.ca_state.name, tp.snd_cwnd, tp.snd_ssthresh) == ("CWR", 5, 5)
    assert out == []  # 9 in flight > cwnd 5
    assert c._high_seq == L + 10 * M
    for n in range(2, 6):
        out += ece_ack(h, n)  # more ECE in the same window: no further reduction
    assert tp.snd_cwnd == 5 and tp.snd_ssthresh == 5
    assert len(out) == 0
    out = ece_ack(h, 6, ece=False)  # 4 in flight: one new segment, carrying CWR
    assert [(s.seq, bool(s.flags & CWR), s.ecn) for s in out] == [(L + 10 * M, True, ECT0)]
    out = ece_ack(h, 10, ece=False)  # up to high_seq: still CWR, no growth
    assert [(s.seq - L) // M for s in out] == [11, 12, 13, 14]
    assert not any(s.flags & CWR for s in out)
    assert (tp.ca_state.name, tp.snd_cwnd) == ("CWR", 5)
    ece_ack(h, 11, ece=False)  # above it: the CWR reached the receiver, reduction over
    assert (tp.ca_state.name, tp.snd_cwnd, tp.snd_ssthresh) == ("OPEN", 5, 5)
    ece_ack(h, 12)  # a new window, a new reduction
    assert (tp.ca_state.name, tp.snd_cwnd, tp.snd_ssthresh) == ("CWR", 2, 2)


def test_ece_reduction_is_not_undone() -> None:
    h, c = _ecn_sender()
    ece_ack(h, 1)
    assert c.ccs.prior_ssthresh == 0 and c._undo_marker is None


def test_ecn_over_the_simulated_link_with_ce_marks() -> None:
    """Two engines negotiate ECN; a router marks CE on every 50th data segment instead of
    dropping: the stream arrives intact without a single retransmission and the sender
    reduced its window."""
    net = SimNetwork(seed=3, default=LinkConfig(delay=0.005, rate=5e6))
    s = Settings(tcp_ecn=1)
    a, b = TcpEngine(s, secret=b"a" * 16), TcpEngine(s, secret=b"b" * 16)
    net.add_host(0xC6120001, a)
    net.add_host(0xC6120002, b)
    marked = [0]

    def mark(seg: TcpSegment) -> bool:
        if seg.payload and seg.ecn == ECT0 and seg.src_ip == 0xC6120001:
            marked[0] += 1
            if marked[0] % 50 == 0:
                seg.ecn = CE
        return True

    net.filter = mark
    data = random.Random(1).randbytes(400_000)
    apps = accept_into(b.listen(0, 80), b"")
    cl = StreamApp(a.connect(0xC6120001, 0xC6120002, 80), data)
    assert net.run(until=60, stop=lambda: cl.done and bool(apps) and apps[0].done)
    assert apps[0].received == data
    assert a.mib["RetransSegs"] == 0
    assert marked[0] >= 100
    assert cl.conn.ccs.snd_ssthresh < INF
    assert "ecn" in cl.conn.tcp_info()["options"]
