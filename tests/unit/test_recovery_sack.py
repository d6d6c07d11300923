"""SACK loss recovery (RFC 6675) segment by segment: when recovery starts, what NextSeg
retransmits and when (pipe against cwnd), the rescue retransmission, lost retransmissions,
reordering (tcp_reordering, adaptive up to tcp_max_reordering), D-SACK undo, reneging and
the RTO with a scoreboard.  The test plays the receiver; Reno for exact windows."""

from __future__ import annotations

from pystack.tcp.connection import Connection
from pystack.tcp.testing import LOCAL_ISN, REMOTE_ISN, Harness
from pystack.wire.segment import ACK, TcpOptions, TcpSegment

L = LOCAL_ISN + 1
R = REMOTE_ISN + 1
M = 1460
INF = 0x7FFFFFFF


def seq(i: int) -> int:
    return L + i * M


def idx(segs: list[TcpSegment]) -> list[int]:
    return [(s.seq - L) // M for s in segs if s.payload]


def setup(data_segs: int = 100, **sysctls: object) -> tuple[Harness, Connection]:
    sysctls.setdefault("tcp_congestion_control", "reno")
    h = Harness(tcp_sack=1, **sysctls)
    c = h.established_client(options=TcpOptions(mss=M, sack_permitted=True))
    c.set_option("SO_SNDBUF", 1 << 20)
    assert c.send(bytes(M * data_segs)) == M * data_segs
    assert idx(h.recv()) == list(range(min(10, data_segs)))
    h.advance(0.05)
    return h, c


def ack(h: Harness, n: int, *blocks: tuple[int, int]) -> list[int]:
    """ACK below segment n with SACK blocks given in segment numbers [a, b)."""
    opts = TcpOptions(sack_blocks=[(seq(a), seq(b)) for a, b in blocks])
    h.send(ACK, R, seq(n), options=opts)
    return idx(h.recv())


def state(c: Connection) -> tuple[str, int, int]:
    tp = c.ccs
    return tp.ca_state.name, tp.snd_cwnd, tp.snd_ssthresh


def pipe(c: Connection) -> int:
    return c._sb.pipe(c.snd_una, c.snd_nxt, M) // M


def test_one_loss() -> None:
    """Segment 2 lost: limited transmit by pipe, recovery on the third duplicate ACK with
    cwnd = ssthresh, one retransmission, new data once pipe < cwnd."""
    h, c = setup()
    assert ack(h, 1) == [10, 11]
    assert ack(h, 2) == [12, 13]  # cwnd 12, 2..13 in flight
    assert ack(h, 2, (3, 4)) == [14]  # RFC 6675 §5 (3) / RFC 3042: pipe 11 < cwnd 12
    assert state(c) == ("DISORDER", 12, INF)
    assert ack(h, 2, (3, 5)) == [15]
    # Third duplicate ACK: RFC 6675 §5 (4): ssthresh = cwnd = 12/2, retransmit HighACK+1.
    assert ack(h, 2, (3, 6)) == [2]
    assert state(c) == ("RECOVERY", 6, 6)
    assert h.engine.mib["TCPSackRecovery"] == 1 and h.engine.mib["TCPRenoRecovery"] == 0
    assert pipe(c) == 1 + 10  # the retransmission + 6..15 (not lost)
    sent = []
    for k in range(7, 17):  # 6..15 arrive: SACK grows one segment per ACK
        sent.append(ack(h, 2, (3, k)))
    # pipe = 1 + (16 - k) (+ new data) must drop below cwnd 6 before anything is sent.
    assert sent[:5] == [[], [], [], [], []]
    assert sent[5:] == [[16], [17], [18], [19], [20]]
    assert state(c) == ("RECOVERY", 6, 6)
    # The retransmission arrives: everything through 15 acknowledged (= RecoveryPoint 16);
    # cwnd stays ssthresh, pipe 3 (18..20).
    assert ack(h, 16, (16, 18)) == [21, 22, 23]
    assert state(c) == ("DISORDER", 6, 6)  # Disorder while SACKed data is outstanding
    assert h.engine.mib["RetransSegs"] == 1
    assert h.engine.mib["TCPFastRetrans"] == 1


def test_burst_of_three_is_repaired_in_one_round_trip() -> None:
    """Segments 2, 3, 4 lost: NextSeg retransmits all three holes as pipe allows, before
    any of them is acknowledged (NewReno needs one round trip per hole)."""
    h, c = setup()
    ack(h, 1)
    ack(h, 2)  # cwnd 12; 2..13 in flight
    # 2, 3, 4 are not lost yet for IsLost: pipe 11, limited transmit.
    assert ack(h, 2, (5, 6)) == [14]
    assert ack(h, 2, (5, 7)) == [15]
    assert ack(h, 2, (5, 8)) == [2]  # the third duplicate ACK
    assert state(c) == ("RECOVERY", 6, 6)
    assert pipe(c) == 1 + 8  # 2 retransmitted; 3, 4 lost; 8..15
    out = []
    for k in range(9, 16):
        out.append(ack(h, 2, (5, k)))
    # The holes first (NextSeg rule 1), then new data (rule 2), each when pipe < cwnd.
    assert out == [[], [], [], [3], [4], [16], [17]]
    assert h.engine.mib["RetransSegs"] == 3
    assert h.engine.mib["TCPSackRecovery"] == 1
    # Retransmissions of 2, 3, 4 arrive in turn (before 16 and 17).
    assert ack(h, 3, (5, 16)) == [18, 19]  # pipe: 3, 4 retransmitted + 16, 17
    assert ack(h, 4, (5, 16)) == [20]  # pipe: 4 + 16..19
    assert ack(h, 16) == [21]  # >= RecoveryPoint 16: recovery over, cwnd 6
    assert state(c) == ("OPEN", 6, 6)
    assert h.engine.mib["RetransSegs"] == 3


def test_islost_starts_recovery_before_three_dupacks() -> None:
    """RFC 6675 §5 (**) step (2): one ACK SACKing three segments (its predecessors were
    lost) makes IsLost(HighACK+1) true."""
    h, c = setup()
    assert ack(h, 0, (1, 4)) == [0]
    assert state(c) == ("RECOVERY", 5, 5)
    assert c._dupacks == 1


def test_lost_retransmission_is_detected_from_later_sacks() -> None:
    """The retransmission of 2 is lost too: once data sent after it is SACKed it is
    retransmitted again (TCPLostRetransmit) instead of waiting for the RTO."""
    h, c = setup()
    ack(h, 1)
    ack(h, 2)
    ack(h, 2, (3, 4))
    ack(h, 2, (3, 5))
    assert ack(h, 2, (3, 6)) == [2]
    new = []
    for k in range(7, 17):
        new += ack(h, 2, (3, k))
    assert new == [16, 17, 18, 19, 20]  # sent after the retransmission
    assert h.engine.mib["TCPLostRetransmit"] == 0
    # 16 SACKed but not 2: its retransmission was lost.  pipe drops to 4 (17..20): 2 is
    # retransmitted again, and new data fills cwnd 6.
    assert ack(h, 2, (3, 17)) == [2, 21]
    assert h.engine.mib["TCPLostRetransmit"] == 1
    assert h.engine.mib["TCPTimeouts"] == 0
    assert ack(h, 18) == [22, 23]  # recovery over; 18..21 in flight, cwnd 6
    assert state(c) == ("OPEN", 6, 6)
    assert h.engine.mib["RetransSegs"] == 2


def test_rescue_retransmission_for_a_tail_loss() -> None:
    """Only 10 segments, 5 and 9 lost: after 5 is repaired nothing is SACKed above 9, so
    IsLost(9) never holds; rule (4) retransmits it once instead of waiting for the RTO."""
    h, c = setup(data_segs=10)
    c.shutdown_write()
    h.recv()
    assert ack(h, 5, (6, 7)) == []
    assert ack(h, 5, (6, 8)) == []
    assert ack(h, 5, (6, 9)) == [5]
    assert state(c)[0] == "RECOVERY"
    assert c._rescue_rxt == seq(6)  # RFC 6675 §5 (4.3): RescueRxt past the retransmission
    # HighACK not beyond RescueRxt yet: no rescue.
    assert ack(h, 5, (6, 9)) == []
    # 5 acknowledged, 9 (and the FIN) still out: the rescue goes.
    segs = []
    h.send(ACK, R, seq(9))
    segs = h.recv()
    assert [(s.seq - L) // M for s in segs] == [9]
    assert c._rescue_rxt == c._recover  # one rescue per recovery
    assert h.engine.mib["TCPTimeouts"] == 0
    assert h.engine.mib["RetransSegs"] == 2


def test_reordering_below_dupthresh_is_counted_not_retransmitted() -> None:
    h, c = setup()
    ack(h, 1)
    ack(h, 2)  # cwnd 12; 2..13 in flight
    assert ack(h, 2, (3, 4)) == [14]
    assert ack(h, 2, (3, 5)) == [15]
    # Segment 2 was late, not lost: 3 acknowledged, cwnd 15, 5..15 in flight.
    assert ack(h, 5) == [16, 17, 18, 19]
    assert h.engine.mib["TCPSACKReorder"] == 1
    assert h.engine.mib["RetransSegs"] == 0
    assert c.tcp_info()["reordering"] == 3  # a distance of 3 does not exceed dupthresh 3
    assert c.tcp_info()["reord_seen"] == 1


def test_reordering_above_dupthresh_is_undone_by_dsack_and_learned() -> None:
    """Segment 2 overtaken by 3..7: a spurious fast retransmit; the D-SACK for the
    duplicate undoes the reduction (TCPDSACKUndo) and raises the reordering degree, so the
    same reordering later costs no retransmission."""
    h, c = setup()
    ack(h, 1)
    ack(h, 2)  # cwnd 12
    ack(h, 2, (3, 4))
    ack(h, 2, (3, 5))
    assert ack(h, 2, (3, 6)) == [2]
    assert state(c) == ("RECOVERY", 6, 6)
    ack(h, 2, (3, 7))
    ack(h, 2, (3, 8))
    # The original 2 arrives: ACK 8.  Then the retransmitted copy: a D-SACK for it.
    ack(h, 8)
    assert state(c)[0] == "RECOVERY"
    h.send(ACK, R, seq(8), options=TcpOptions(sack_blocks=[(seq(2), seq(3))]))
    h.recv()
    assert h.engine.mib["TCPDSACKRecv"] == 1
    assert h.engine.mib["TCPDSACKUndo"] == 1
    assert state(c) == ("OPEN", 12, INF)  # prior cwnd and ssthresh restored
    assert c.tcp_info()["reordering"] == 6  # fack 8 - hole 2
    assert c.tcp_info()["dsack_dups"] == 1
    # The same reordering again (segment 20 overtaken by five): no retransmission.
    n = c.snd_una
    first = (n - L) // M
    base = h.engine.mib["RetransSegs"]
    assert c.snd_nxt - n >= 7 * M
    for k in range(2, 7):
        ack(h, first, (first + 1, first + k))
    assert state(c)[0] == "DISORDER"
    ack(h, first + 6)
    assert h.engine.mib["RetransSegs"] == base
    assert state(c)[0] == "OPEN"


def test_dsack_after_recovery_undoes_in_open_state() -> None:
    """The hole was only reordered: recovery ends on the original's ACK; the D-SACK for
    the retransmission arriving later still undoes the reduction (RFC 3708)."""
    h, c = setup()
    ack(h, 1)
    ack(h, 2)
    ack(h, 2, (3, 4))
    ack(h, 2, (3, 5))
    assert ack(h, 2, (3, 6)) == [2]
    assert ack(h, 16) == [16, 17, 18, 19, 20, 21]  # full ACK: cwnd = ssthresh = 6
    assert state(c) == ("OPEN", 6, 6)
    h.send(ACK, R, seq(16), options=TcpOptions(sack_blocks=[(seq(2), seq(3))]))
    assert state(c) == ("OPEN", 12, INF)
    assert h.engine.mib["TCPDSACKUndo"] == 1
    assert c._dupacks == 0  # a D-SACK-only ACK is not a duplicate ACK with SACK


def test_undo_needs_a_dsack_for_every_retransmission() -> None:
    """Segments 2 and 4 reordered far enough to be retransmitted: only when both
    retransmissions are reported as duplicates is the reduction undone."""
    h, c = setup()
    ack(h, 1)
    ack(h, 2)
    assert ack(h, 2, (3, 4), (5, 6)) == [14, 15]
    assert ack(h, 2, (3, 4), (5, 7)) == [2]  # IsLost(2): three segments SACKed above
    out = [ack(h, 2, (3, 4), (5, k)) for k in range(8, 16)]
    assert out == [[], [], [], [], [4], [16], [17], [18]]
    assert c._undo_retrans == 2
    ack(h, 19)  # the originals arrive: everything acknowledged, recovery over
    assert state(c)[:2] == ("OPEN", 6)
    h.send(ACK, R, seq(19), options=TcpOptions(sack_blocks=[(seq(2), seq(3))]))
    assert h.engine.mib["TCPDSACKUndo"] == 0 and c._undo_retrans == 1
    h.send(ACK, R, seq(19), options=TcpOptions(sack_blocks=[(seq(4), seq(5))]))
    assert h.engine.mib["TCPDSACKUndo"] == 1
    assert state(c) == ("OPEN", 12, INF)
    assert h.engine.mib["TCPDSACKRecv"] == 2


def test_dsack_for_unretransmitted_data_undoes_nothing() -> None:
    h, c = setup()
    ack(h, 3)
    h.send(ACK, R, seq(3), options=TcpOptions(sack_blocks=[(seq(1), seq(2))]))
    assert h.engine.mib["TCPDSACKRecv"] == 1
    assert h.engine.mib["TCPDSACKIgnoredNoUndo"] == 1
    assert h.engine.mib["TCPDSACKUndo"] == 0


def test_rto_retransmits_only_what_was_not_sacked() -> None:
    h, c = setup(tcp_frto=0)
    ack(h, 0, (2, 4), (6, 7))
    h.recv()
    h.advance(c.rtt.rto)
    assert idx(h.recv()) == [0]  # RTO: SND.UNA
    assert state(c) == ("LOSS", 1, 5)
    assert ack(h, 1, (2, 4), (6, 7)) == [1, 4]  # slow start, 2 and 3 skipped
    assert ack(h, 2, (2, 4), (6, 7)) == [5, 7]  # 6 skipped
    assert ack(h, 5, (6, 7)) == [8, 9, 10]
    assert h.engine.mib["TCPSlowStartRetrans"] == 6


def test_reneging_forgets_sacks_at_the_rto() -> None:
    """ACK stops at data the receiver had SACKed: it dropped it (RFC 2018 §8)."""
    h, c = setup(tcp_frto=0)
    ack(h, 0, (1, 4))  # recovery: 0 retransmitted
    h.recv()
    h.send(ACK, R, seq(1))  # the receiver acknowledges 0 only: 1..3 are gone
    assert h.engine.mib["TCPSACKReneging"] == 1
    assert c._t_rtx is not None and c._t_rtx - h.now <= 0.011
    h.advance(0.011)
    assert idx(h.recv()) == [1]  # the reneged data is retransmitted
    assert not c._sb.sacked_ranges()
