"""NewReno loss recovery without SACK, segment by segment against RFC 5681 §3.2, RFC 6582
and RFC 3042 (the test plays the receiver; Reno congestion control for exact windows)."""

from __future__ import annotations

from pystack.tcp.connection import Connection
from pystack.tcp.engine import MIB_COUNTERS
from pystack.tcp.testing import LOCAL_ISN, REMOTE_ISN, Harness
from pystack.wire.segment import ACK, TcpOptions, TcpSegment

L = LOCAL_ISN + 1
R = REMOTE_ISN + 1
M = 1460


def seq(i: int) -> int:
    return L + i * M


def idx(segs: list[TcpSegment]) -> list[int]:
    """Segment numbers of the data segments sent."""
    return [(s.seq - L) // M for s in segs if s.payload]


def setup(**sysctls: object) -> tuple[Harness, Connection]:
    sysctls.setdefault("tcp_congestion_control", "reno")
    h = Harness(**sysctls)
    c = h.established_client(options=TcpOptions(mss=M))
    c.set_option("SO_SNDBUF", 1 << 20)
    assert c.send(bytes(M * 100)) == M * 100
    assert idx(h.recv()) == list(range(10))  # RFC 6928 initial window
    h.advance(0.05)
    return h, c


def ack(h: Harness, n: int) -> list[int]:
    """The peer acknowledges everything below segment n; what goes out in response."""
    h.send(ACK, R, seq(n))
    return idx(h.recv())


def state(c: Connection) -> tuple[str, int, int]:
    tp = c.ccs
    return tp.ca_state.name, tp.snd_cwnd, tp.snd_ssthresh


INF = 0x7FFFFFFF


def test_one_loss_fast_retransmit_and_recovery_trace() -> None:
    """Segment 2 lost: limited transmit, fast retransmit on the 3rd duplicate ACK, window
    inflation, exit on the full ACK with cwnd = min(ssthresh, FlightSize + 1)."""
    h, c = setup()
    assert ack(h, 1) == [10, 11]  # slow start: cwnd 11
    assert ack(h, 2) == [12, 13]  # cwnd 12, 12 in flight
    # Segments 3.. arrive, 2 does not: duplicate ACKs.
    assert ack(h, 2) == [14]  # RFC 3042: first dupack sends one new segment
    assert state(c) == ("DISORDER", 12, INF)
    assert ack(h, 2) == [15]  # second dupack: another one, cwnd unchanged
    assert ack(h, 2) == [2]  # third: fast retransmit of the first unacknowledged
    # RFC 5681 §3.2: ssthresh = cwnd/2 (Linux reno on cwnd), cwnd = ssthresh + 3.
    assert state(c) == ("RECOVERY", 9, 6)
    assert h.engine.mib["TCPRenoRecovery"] == 1
    assert h.engine.mib["TCPFastRetrans"] == 1 and h.engine.mib["RetransSegs"] == 1
    sent = []
    for _ in range(10):  # dupacks for 4..13: inflate by one each (14 segments in flight)
        sent += ack(h, 2)
    assert c.ccs.snd_cwnd == 19
    assert sent == [16, 17, 18, 19, 20]  # new data once cwnd exceeds the 14 in flight
    # The retransmission fills the hole: segments 0..15 acknowledged = recover: full ACK,
    # cwnd = min(ssthresh, FlightSize + 1) = min(6, 5 + 1) (RFC 6582 §3.2 step 3).
    assert ack(h, 16) == [21]
    assert state(c) == ("OPEN", 6, 6)
    assert c.tcp_info()["ca_state"] == "OPEN"
    assert h.engine.mib["RetransSegs"] == 1
    assert ack(h, 17) == [22]  # congestion avoidance: 6 in flight


def test_partial_acks_retransmit_each_hole_of_a_burst() -> None:
    """Segments 2, 3, 4 lost: one hole repaired per partial ACK (RFC 6582 §3.2 step 4)."""
    h, c = setup()
    ack(h, 1)
    ack(h, 2)
    for _ in range(2):
        ack(h, 2)
    assert ack(h, 2) == [2]
    assert state(c) == ("RECOVERY", 9, 6)
    for _ in range(8):
        ack(h, 2)  # 5..13 and limited-transmit segments
    assert state(c) == ("RECOVERY", 17, 6)
    assert c.snd_nxt == seq(19)  # 2..18 in flight: 17
    t_rtx = c._t_rtx
    h.advance(0.05)
    # Partial ACK: 2 arrived, 3 is the next hole: retransmit it, deflate by the one
    # segment acknowledged and add one SMSS back; 16 in flight, so one new segment.
    assert ack(h, 3) == [3, 19]
    assert state(c) == ("RECOVERY", 17, 6)
    assert c._t_rtx != t_rtx  # the first partial ACK restarts the timer (step 4)
    t_rtx = c._t_rtx
    h.advance(0.05)
    assert ack(h, 4) == [4, 20]
    assert c._t_rtx == t_rtx  # Impatient variant: later partial ACKs do not
    assert ack(h, 5) == [5, 21]
    assert state(c)[0] == "RECOVERY"
    # Full ACK (recover = 19): cwnd = min(ssthresh, FlightSize + 1) = min(6, 3 + 1).
    assert ack(h, 19) == [22]
    assert state(c) == ("OPEN", 4, 6)
    assert h.engine.mib["TCPRenoRecovery"] == 1
    assert h.engine.mib["RetransSegs"] == 4


def test_no_new_recovery_for_dupacks_below_recover() -> None:
    """RFC 6582 §3.2 step 2: duplicate ACKs that do not cover more than "recover" do not
    start a second fast retransmit in the same window."""
    h, c = setup()
    for _ in range(3):
        ack(h, 0)
    assert state(c)[0] == "RECOVERY"
    rec = c._recover
    assert rec == seq(10) + 2 * M  # HighData: 0..9 plus two limited-transmit segments
    ack(h, 5)  # partial ACK
    ack(h, 12)  # full ACK (= recover): recovery over
    assert state(c)[0] == "OPEN"
    ssthresh = c.ccs.snd_ssthresh
    # Three dupacks at exactly "recover" after a big cumulative jump: not loss (§4.1).
    for _ in range(3):
        ack(h, 12)
    assert state(c)[0] == "DISORDER" and c.ccs.snd_ssthresh == ssthresh
    assert h.engine.mib["TCPRenoRecovery"] == 1


def test_ack_heuristic_small_advance_allows_fast_retransmit_at_recover() -> None:
    """RFC 6582 §4.1: when the last cumulative advance was at most 4*SMSS, duplicate ACKs
    at "recover" do indicate a new loss."""
    h, c = setup()
    for _ in range(3):
        ack(h, 0)
    # Partial ACK of 9 segments: retransmit 9; cwnd 8 deflates to 1 (step 4).
    assert ack(h, 9) == [9]
    assert c.ccs.snd_cwnd == 1
    # Full ACK (recover = 12), an advance of 3 segments: cwnd = min(5, 0 + 1 + 1).
    assert ack(h, 12) == [12, 13]
    assert state(c)[0] == "OPEN"
    assert c._recover == seq(12)
    for _ in range(3):
        ack(h, 12)
    assert state(c)[0] == "RECOVERY"
    assert h.engine.mib["TCPRenoRecovery"] == 2


def test_tcp_reordering_is_the_dupthresh() -> None:
    h, c = setup(tcp_reordering=5)
    out = []
    for _ in range(4):
        out += ack(h, 0)
    assert state(c)[0] == "DISORDER"
    assert out == [10, 11, 12, 13]  # limited transmit for the first dupthresh - 1
    assert ack(h, 0) == [0]
    assert state(c)[0] == "RECOVERY"


def test_reordering_below_dupthresh_needs_no_retransmission() -> None:
    h, c = setup()
    assert ack(h, 0) == [10]
    assert ack(h, 0) == [11]
    # Segment 0 was only late: 12 segments acknowledged, slow start 10 -> 22.
    assert ack(h, 12) == list(range(12, 34))
    assert state(c) == ("OPEN", 22, INF)
    assert h.engine.mib["RetransSegs"] == 0


def test_ack_loss_cumulative_acks_cover_it() -> None:
    """Lost ACKs: the next cumulative ACK covers their data; no retransmission, slow start
    counts every segment acknowledged (RFC 5681 §3.1 with RFC 3465 as Linux)."""
    h, c = setup()
    assert ack(h, 4) == [10, 11, 12, 13, 14, 15, 16, 17]  # ACKs for 1..3 were lost
    assert c.ccs.snd_cwnd == 14
    assert h.engine.mib["RetransSegs"] == 0


def test_lost_retransmission_is_recovered_by_rto_and_go_back_n() -> None:
    h, c = setup()
    for _ in range(3):
        ack(h, 0)
    assert state(c)[0] == "RECOVERY"
    for _ in range(7):
        ack(h, 0)
    # The retransmission of 0 is lost as well: nothing more happens until the RTO.
    h.recv()
    rto = c.rtt.rto
    h.advance(rto + 0.01)
    assert [s.seq for s in h.recv() if s.payload][:1] == [seq(0)]
    assert state(c) == ("LOSS", 1, 5)  # ssthresh kept: already reduced in this window
    assert h.engine.mib["TCPTimeouts"] == 1 and h.engine.mib["TCPRenoFailures"] == 1
    # Go-back-N in slow start.
    assert ack(h, 1) == [1, 2]
    assert ack(h, 3) == [3, 4, 5, 6]
    assert h.engine.mib["TCPSlowStartRetrans"] == 6  # not the RTO's own retransmission


def test_rto_without_loss_marks_slow_start_from_one() -> None:
    h, c = setup(tcp_frto=0)
    h.advance(c.rtt.rto)
    assert idx(h.recv()) == [0]
    assert state(c) == ("LOSS", 1, 5)
    assert h.engine.mib["TCPTimeouts"] == 1


def test_counters_are_linux_names() -> None:
    for name in ("TCPSackRecovery", "TCPRenoRecovery", "TCPFastRetrans", "TCPSlowStartRetrans",
                 "TCPLostRetransmit", "TCPSACKReorder", "TCPDSACKUndo", "TCPFullUndo",
                 "TCPPartialUndo", "TCPLossUndo", "TCPSpuriousRTOs", "TCPDSACKRecv",
                 "TCPSackFailures", "TCPRenoFailures", "TCPLossFailures", "TCPSACKReneging",
                 "TCPTSReorder", "TCPDSACKOfoRecv", "TCPDSACKIgnoredNoUndo"):
        assert name in MIB_COUNTERS, name
