"""Undoing spurious congestion responses: Eifel detection with timestamps (RFC 3522;
Linux TCPFullUndo / TCPPartialUndo / TCPLossUndo) and F-RTO after a retransmission
timeout (RFC 5682, tcp_frto; TCPSpuriousRTOs).  D-SACK undo is in test_recovery_sack."""

from __future__ import annotations

from pystack.tcp.connection import Connection
from pystack.tcp.testing import LOCAL_ISN, REMOTE_ISN, Harness
from pystack.wire.segment import ACK, TcpOptions

L = LOCAL_ISN + 1
R = REMOTE_ISN + 1
INF = 0x7FFFFFFF


class Peer:
    """The receiver played by the test, with or without timestamps and SACK."""

    def __init__(self, ts: bool = False, sack: bool = False, **sysctls: object) -> None:
        sysctls.setdefault("tcp_congestion_control", "reno")
        self.h = Harness(tcp_timestamps=int(ts), tcp_sack=int(sack), **sysctls)
        self.ts = ts
        self.m = 1448 if ts else 1460
        opts = TcpOptions(mss=1460, sack_permitted=sack,
                          timestamp=(77, 0) if ts else None)
        self.c: Connection = self.h.established_client(options=opts)
        self.c.set_option("SO_SNDBUF", 1 << 20)
        assert self.c.send(bytes(self.m * 100)) == self.m * 100
        self.tsval: dict[int, int] = {}  # segment number -> TSval of its first copy
        self.take()

    def seq(self, i: int) -> int:
        return L + i * self.m

    def take(self) -> list[int]:
        out = []
        for s in self.h.recv():
            if s.payload:
                i = (s.seq - L) // self.m
                out.append(i)
                if s.options.timestamp is not None:
                    self.tsval.setdefault(i, s.options.timestamp[0])
                    self.last_tsval = s.options.timestamp[0]
        return out

    def ack(self, n: int, echo: int | None = None, *blocks: tuple[int, int]) -> list[int]:
        """ACK below segment n; ``echo``: the segment whose first TSval is echoed."""
        ts = None
        if self.ts:
            e = self.tsval[echo if echo is not None else n - 1]
            ts = (1000, e)
        opts = TcpOptions(timestamp=ts,
                          sack_blocks=[(self.seq(a), self.seq(b)) for a, b in blocks])
        self.h.send(ACK, R, self.seq(n), options=opts)
        return self.take()

    def state(self) -> tuple[str, int, int]:
        tp = self.c.ccs
        return tp.ca_state.name, tp.snd_cwnd, tp.snd_ssthresh


def test_eifel_full_undo_of_a_spurious_fast_retransmit() -> None:
    """Segment 2 reordered behind three others: fast retransmit; the ACK that completes
    recovery echoes the original's timestamp, older than the retransmission's."""
    p = Peer(ts=True)
    p.h.advance(0.05)
    assert p.ack(2) == [10, 11, 12, 13]  # cwnd 12
    assert p.ack(2, 3) == [14]
    assert p.ack(2, 3) == [15]
    p.h.advance(0.01)  # the retransmission gets a later TSval
    assert p.ack(2, 3) == [2]
    assert p.state() == ("RECOVERY", 9, 6)
    assert p.last_tsval > p.tsval[2]
    assert p.c._recover == p.seq(16)
    p.ack(16, 2)  # the original 2 arrived: everything acknowledged, echoing its TSval
    assert p.state() == ("OPEN", 12, INF)
    assert p.h.engine.mib["TCPFullUndo"] == 1


def test_eifel_partial_undo() -> None:
    p = Peer(ts=True)
    p.h.advance(0.05)
    p.ack(2)
    for _ in range(2):
        p.ack(2, 3)
    p.h.advance(0.01)
    assert p.ack(2, 3) == [2]
    # A partial ACK caused by the original segment 2: undo and learn the reordering.
    p.ack(5, 2)
    assert p.state()[0] in ("OPEN", "DISORDER")
    assert p.state()[1:] == (12, INF)
    assert p.h.engine.mib["TCPPartialUndo"] == 1
    assert p.h.engine.mib["TCPTSReorder"] == 1


def test_retransmission_echo_is_not_undone() -> None:
    """The ACK echoes the retransmission's timestamp: the loss was real."""
    p = Peer(ts=True)
    p.h.advance(0.05)
    p.ack(2)
    for _ in range(2):
        p.ack(2, 3)
    p.h.advance(0.01)
    p.ack(2, 3)
    p.tsval[2] = p.last_tsval  # the receiver echoes the retransmitted copy
    p.ack(16, 2)
    assert p.state() == ("OPEN", 2, 6)  # min(ssthresh, FlightSize + 1): nothing in flight
    assert p.h.engine.mib["TCPFullUndo"] == 0


def test_eifel_undo_after_a_spurious_rto() -> None:
    """All ACKs were delayed past the RTO; the first ACK after it echoes the original."""
    p = Peer(ts=True, tcp_frto=0)
    p.h.advance(p.c.rtt.rto)
    assert p.take() == [0]
    assert p.state() == ("LOSS", 1, 5)
    # cwnd and ssthresh restored (then slow start for the segment acknowledged); without
    # SACK Linux stays in Loss until everything outstanding then is acknowledged.  Nothing
    # is retransmitted any more: new data fills the restored window.
    assert p.ack(1, 0) == [10, 11]
    assert p.state() == ("LOSS", 11, INF)
    assert p.h.engine.mib["TCPLossUndo"] == 1 and p.h.engine.mib["TCPSpuriousRTOs"] == 0
    assert p.c._rtx_nxt is None
    assert p.ack(10, 9) == list(range(12, 30))  # 9 acknowledged: cwnd 20, 2 in flight
    assert p.state() == ("OPEN", 20, INF)
    assert p.h.engine.mib["RetransSegs"] == 1


def test_frto_detects_a_spurious_rto_without_timestamps() -> None:
    """RFC 5682 §2: the first ACK after the RTO advances, two new segments go out (step
    2.b); the next ACK acknowledges data that was never retransmitted (step 3.b)."""
    p = Peer()
    p.h.advance(p.c.rtt.rto)
    assert p.take() == [0]
    assert p.c._frto
    assert p.ack(1) == [10, 11]  # step 2.b: new data, not segment 1
    assert p.state()[0] == "LOSS"
    assert p.ack(2) == [12]  # step 3.b: spurious
    assert p.state() == ("OPEN", 11, INF)  # restored 10, +1 for the ACK
    assert p.h.engine.mib["TCPSpuriousRTOs"] == 1
    assert p.h.engine.mib["TCPLossUndo"] == 1
    assert p.h.engine.mib["RetransSegs"] == 1


def test_frto_real_loss_falls_back_to_go_back_n() -> None:
    """The whole window was lost: after step 2.b's new data only duplicate ACKs come
    (step 3.a) and the conventional recovery retransmits."""
    p = Peer()
    p.h.advance(p.c.rtt.rto)
    assert p.take() == [0]
    assert p.ack(1) == [10, 11]
    assert p.ack(1) == [1]  # 10 arrived: a duplicate ACK, the loss is real
    assert not p.c._frto
    assert p.ack(1) == [2]
    assert p.ack(3) == [3, 4]  # cwnd 4; 10 and 11 count in flight again
    assert p.state()[0] == "LOSS"
    assert p.h.engine.mib["TCPSpuriousRTOs"] == 0


def test_frto_sack_enhanced_real_loss() -> None:
    # tcp_early_retrans 0: no tail loss probe before the RTO (test_recovery_tlp has that).
    p = Peer(sack=True, tcp_early_retrans=0)
    p.h.advance(p.c.rtt.rto)
    assert p.take() == [0]
    assert p.ack(1) == [10, 11]
    assert p.ack(1, None, (10, 11)) == [1]  # 10 SACKed: step 3.a
    assert p.ack(1, None, (10, 12)) == [2]
    assert p.h.engine.mib["TCPSpuriousRTOs"] == 0


def test_frto_not_when_the_retransmission_completes_everything() -> None:
    """RFC 5682 step 2.a: an ACK covering all that was outstanding ends the recovery; the
    timeout is not declared spurious (only the head was lost)."""
    p = Peer()
    p.h.advance(p.c.rtt.rto)
    p.take()
    p.ack(10)
    assert p.state()[:1] == ("OPEN",) and p.state()[2] == 5
    assert p.h.engine.mib["TCPSpuriousRTOs"] == 0
    assert p.h.engine.mib["TCPLossUndo"] == 0


def test_frto_disabled() -> None:
    p = Peer(tcp_frto=0)
    p.h.advance(p.c.rtt.rto)
    assert p.take() == [0]
    assert not p.c._frto
    assert p.ack(1) == [1, 2]  # slow start retransmissions at once
