"""Tail Loss Probe (RFC 8985 §7; Linux tcp_schedule_loss_probe / tcp_send_loss_probe /
tcp_process_tlp_ack, tcp_early_retrans 3 or 4): segment by segment with exact times.

The test plays the receiver.  Every setup first times the handshake and one segment over
a 50 ms path, so SRTT = 50 ms and RTO = 200 ms (the minimum): the probe timeout is
2*SRTT + 2 ms = 102 ms with several segments in flight, 2*SRTT + 200 ms (capped by the
RTO) with one."""

from __future__ import annotations

import pytest

from pystack.sim import LinkConfig, SimNetwork, StreamApp, accept_into
from pystack.tcp import seq as sq
from pystack.tcp.connection import Connection
from pystack.tcp.engine import TcpEngine
from pystack.tcp.settings import Settings
from pystack.tcp.state import TcpState
from pystack.tcp.testing import LOCAL_ISN, REMOTE_ISN, Harness
from pystack.wire.segment import ACK, SYN, TcpOptions, TcpSegment

L = LOCAL_ISN + 1
R = REMOTE_ISN + 1
M = 1460
RTT = 0.05
T0 = 2 * RTT  # the burst leaves at T0 = 0.1, its first ACKs come at 0.15


def seq(i: int) -> int:
    return L + i * M


def idx(segs: list[TcpSegment]) -> list[int]:
    return [(s.seq - L) // M for s in segs if s.payload]


def setup(sack: bool = True, **sysctls: object) -> tuple[Harness, Connection]:
    """SYN at t = 0, SYN-ACK at RTT; segment 0 is sent then and acknowledged at T0."""
    sysctls.setdefault("tcp_congestion_control", "reno")
    h = Harness(tcp_sack=int(sack), **sysctls)
    c = h.connect()
    h.expect(flags="S", seq=LOCAL_ISN)
    h.advance_to(RTT)
    h.send(SYN | ACK, REMOTE_ISN, L, options=TcpOptions(mss=M, sack_permitted=sack))
    h.expect(flags="A", seq=L, ack=R)
    c.set_option("SO_SNDBUF", 1 << 20)
    assert c.send(bytes(M)) == M
    assert idx(h.recv()) == [0]
    h.advance_to(T0)
    ack(h, 1)
    assert c.rtt.srtt == pytest.approx(RTT) and c.rtt.rto == pytest.approx(0.2)
    return h, c


def ack(h: Harness, n: int, *blocks: tuple[int, int]) -> list[int]:
    """ACK below segment n with SACK blocks in segment numbers [a, b)."""
    opts = TcpOptions(sack_blocks=[(seq(a), seq(b)) for a, b in blocks])
    h.send(ACK, R, seq(n), options=opts)
    return idx(h.recv())


def sent_until(h: Harness, t: float) -> list[tuple[float, int]]:
    """Run the timers up to t; (time, segment number) of what they sent."""
    first = len(h.sent_at)
    h.advance_to(t)
    out = [(round(at, 6), (s.seq - L) // M) for at, s in h.sent_at[first:] if s.payload]
    h.recv()
    return out


def burst(h: Harness, c: Connection, n: int) -> None:
    """Segments 1..n at T0 (cwnd 10: the first ACK did not find it limited)."""
    assert c.send(bytes(M * n)) == M * n
    assert idx(h.recv()) == list(range(1, min(n, 10) + 1))


def test_three_segment_tail_loss_is_repaired_by_a_probe() -> None:
    """1..10 sent, 8, 9, 10 lost.  The ACK of 1..7 at 2*RTT schedules the probe at
    +2*SRTT + 2 ms; it retransmits the last segment, whose SACK shows 8 and 9 lost (sent
    a PTO before it): SACK recovery, no RTO."""
    h, c = setup()
    burst(h, c, 10)
    assert c._t_rtx == pytest.approx(T0 + 2 * RTT + 0.002)  # PTO, capped by the RTO
    h.advance_to(T0 + RTT)
    assert ack(h, 8) == []
    # The probe at 0.15 + 0.102 (the RTO would fire at 0.15 + 0.2).
    assert sent_until(h, 0.3) == [(0.252, 10)]
    eng = h.engine
    assert eng.mib["TCPLossProbes"] == 1 and eng.mib["RetransSegs"] == 1
    assert eng.mib["TCPFastRetrans"] == 0  # (Linux does not count a TLP there)
    assert c.ccs.ca_state.name == "OPEN" and c._rs.tlp_high == seq(11)
    assert c._t_rtx == pytest.approx(0.252 + 0.2)  # the RTO restarts from the probe
    # The probe arrives: 8 and 9 are lost; recovery retransmits both (pipe 1 < cwnd 8).
    assert ack(h, 8, (10, 11)) == [8, 9]
    assert c.ccs.ca_state.name == "RECOVERY"
    assert c._rs.tlp_high is None  # the reduction ends the TLP episode
    h.advance_to(0.35)
    assert ack(h, 11) == []
    assert c.ccs.ca_state.name == "OPEN"
    assert eng.mib["TCPSackRecovery"] == 1 and eng.mib["TCPTimeouts"] == 0
    assert eng.mib["TCPLossProbeRecovery"] == 0 and eng.mib["RetransSegs"] == 3


def test_last_segment_lost_probe_repairs_it_and_cwnd_is_reduced_once() -> None:
    """Only 10 lost: one segment in flight, PTO = 2*SRTT + 200 ms capped by the RTO; the
    probe (not an RTO: cwnd is not collapsed) repairs it.  The ACK beyond tlp_high_seq
    without a D-SACK proves the loss: one cwnd reduction, TCPLossProbeRecovery."""
    h, c = setup()
    burst(h, c, 10)
    h.advance_to(T0 + RTT)
    assert ack(h, 10) == []
    assert c._t_rtx == pytest.approx(T0 + RTT + 0.2)
    assert sent_until(h, 0.4) == [(0.35, 10)]
    eng = h.engine
    assert eng.mib["TCPLossProbes"] == 1 and eng.mib["TCPTimeouts"] == 0
    cwnd = c.ccs.snd_cwnd
    assert cwnd > 2 and c.ccs.ca_state.name == "OPEN"
    h.advance_to(0.4)
    assert ack(h, 11) == []
    # ACK == tlp_high_seq: a D-SACK may still show the original arrived; the episode stays.
    assert c._rs.tlp_high == seq(11) and eng.mib["TCPLossProbeRecovery"] == 0
    assert c.send(bytes(M)) == M
    assert idx(h.recv()) == [11]
    h.advance_to(0.45)
    assert ack(h, 12) == []
    assert eng.mib["TCPLossProbeRecovery"] == 1
    tp = c.ccs
    assert tp.ca_state.name == "OPEN" and tp.snd_ssthresh == cwnd // 2
    assert tp.snd_cwnd == tp.snd_ssthresh
    assert c._rs.tlp_high is None


def test_dsack_of_the_probe_means_no_loss() -> None:
    """Original and probe both arrived (the ACK was just late): the D-SACK ends the
    episode without a cwnd reduction."""
    h, c = setup()
    burst(h, c, 10)
    h.advance_to(T0 + RTT)
    ack(h, 10)
    assert sent_until(h, 0.36) == [(0.35, 10)]
    cwnd = c.ccs.snd_cwnd
    assert ack(h, 11) == []
    assert ack(h, 11, (10, 11)) == []  # D-SACK of the probe
    assert c._rs.tlp_high is None
    assert c.send(bytes(M)) == M
    h.recv()
    ack(h, 12)
    assert h.engine.mib["TCPLossProbeRecovery"] == 0
    assert c.ccs.snd_cwnd >= cwnd and c.ccs.snd_ssthresh == 0x7FFFFFFF


def test_probe_sends_new_data_when_the_window_allows() -> None:
    """cwnd-limited with unsent data: the probe is the next new segment, sent although
    cwnd is full (the receive window allows it); its SACK starts recovery."""
    h, c = setup()
    burst(h, c, 20)  # 1..10 out, 11..20 wait for cwnd
    assert sent_until(h, 0.3) == [(0.202, 11)]  # everything lost; PTO after the burst
    eng = h.engine
    assert eng.mib["TCPLossProbes"] == 1 and eng.mib["RetransSegs"] == 0
    assert c.snd_nxt == seq(12) and c._rs.tlp_rxt is False
    assert ack(h, 1, (11, 12)) == [1, 2, 3, 4, 5]  # 1..10 lost: cwnd 5 (ssthresh 10/2)
    assert c.ccs.ca_state.name == "RECOVERY" and eng.mib["TCPTimeouts"] == 0


def test_at_most_one_probe_per_episode() -> None:
    """The probe is not answered: the next expiry is the RTO of the oldest segment."""
    h, c = setup()
    burst(h, c, 10)
    h.advance_to(T0 + RTT)
    ack(h, 8)
    assert sent_until(h, 0.45) == [(0.252, 10)]
    assert h.engine.mib["TCPTimeouts"] == 0
    # RTO 0.2 after the probe: go-back-N from 8 (cwnd 1).
    assert sent_until(h, 0.46) == [(0.452, 8)]
    assert h.engine.mib["TCPTimeouts"] == 1 and h.engine.mib["TCPLossProbes"] == 1
    assert c.ccs.ca_state.name == "LOSS"


@pytest.mark.parametrize("value", [3, 4])
def test_tcp_early_retrans_3_and_4_probe(value: int) -> None:
    h, c = setup(tcp_early_retrans=value)
    burst(h, c, 10)
    h.advance_to(T0 + RTT)
    ack(h, 8)
    assert sent_until(h, 0.3) == [(0.252, 10)]
    assert h.engine.mib["TCPLossProbes"] == 1


@pytest.mark.parametrize("value", [0, 1, 2])
def test_no_probe_unless_tcp_early_retrans_3_or_4(value: int) -> None:
    """tcp_early_retrans 0 (and the early-retransmit-only values): the RTO repairs it."""
    h, c = setup(tcp_early_retrans=value)
    burst(h, c, 10)
    assert c._t_rtx == pytest.approx(T0 + 0.2)
    h.advance_to(T0 + RTT)
    ack(h, 8)
    assert sent_until(h, 0.36) == [(0.35, 8)]
    assert h.engine.mib["TCPLossProbes"] == 0 and h.engine.mib["TCPTimeouts"] == 1


def test_no_probe_without_sack() -> None:
    h, c = setup(sack=False)
    burst(h, c, 10)
    h.advance_to(T0 + RTT)
    ack(h, 8)
    assert sent_until(h, 0.36) == [(0.35, 8)]
    assert h.engine.mib["TCPLossProbes"] == 0 and h.engine.mib["TCPTimeouts"] == 1


def test_no_probe_outside_the_open_state() -> None:
    """In Disorder (a SACK arrived) the timer stays the RTO."""
    h, c = setup()
    burst(h, c, 10)
    h.advance_to(T0 + RTT)
    assert ack(h, 5, (6, 7)) == []  # 5 missing; one SACKed segment: Disorder
    assert c.ccs.ca_state.name == "DISORDER"
    assert sent_until(h, 0.36) == [(0.35, 5)]
    assert h.engine.mib["TCPLossProbes"] == 0 and h.engine.mib["TCPTimeouts"] == 1


# --- Two engines over the simulated link ---------------------------------------------------
SIM_A = 0xC6120001
SIM_B = 0xC6120002


@pytest.mark.parametrize("early_retrans", [3, 0])
def test_sim_tail_loss_probe_instead_of_rto(early_retrans: int) -> None:
    """20 segments A -> B over a 10 ms link, the last 3 lost once: with TLP the tail is
    repaired about 2*SRTT after the last ACK by SACK recovery; without, by the RTO."""
    net = SimNetwork(seed=1, default=LinkConfig(delay=0.01))
    s = Settings(tcp_early_retrans=early_retrans)
    a = TcpEngine(s, secret=b"a" * 16)
    b = TcpEngine(s, secret=b"b" * 16)
    net.add_host(SIM_A, a)
    net.add_host(SIM_B, b)
    apps = accept_into(b.listen(0, 80))
    c = a.connect(SIM_A, SIM_B, 80)
    assert net.run(until=1, stop=lambda: c.state == TcpState.ESTABLISHED)
    net.run_for(0.1)
    mss = c.snd_mss
    data = bytes(range(256)) * (20 * mss // 256) + bytes(20 * mss % 256)
    tail = c.snd_nxt + 17 * mss
    dropped: set[int] = set()

    def lose_tail_once(seg: TcpSegment) -> bool:
        if seg.src_ip == SIM_A and seg.payload and sq.ge(seg.seq, tail):
            if seg.seq not in dropped:
                dropped.add(seg.seq)
                return False
        return True

    net.filter = lose_tail_once
    start = net.now
    client = StreamApp(c, data, shutdown=False, close=False)
    assert net.run(until=start + 5, stop=lambda: bool(apps) and len(apps[0].received) == len(data))
    took = net.now - start
    assert bytes(apps[0].received) == data and client.sent == len(data)
    assert len(dropped) == 3
    if early_retrans:
        assert a.mib["TCPLossProbes"] == 1 and a.mib["TCPTimeouts"] == 0
        assert a.mib["TCPSackRecovery"] == 1
        assert took < 0.15  # measured 0.112: data, the PTO (~2*SRTT), one recovery RTT
    else:
        assert a.mib["TCPLossProbes"] == 0 and a.mib["TCPTimeouts"] == 1
        assert took > 0.25  # measured 0.27: the RTO (200 ms minimum) after the last ACK
