"""Every state of RFC 9293 §3.3.2 is reached: three connections walked through the state
diagram (Figure 5) with explicit segments and clock, recording each transition the engine
makes. The per-state behaviour is tested in test_tcp_{closed,listen,syn_sent,
syn_received,established,fin_wait,close_wait,time_wait}.py; this module checks the
diagram's edges and that no state is left out."""

from __future__ import annotations

from pystack.tcp.engine import TcpEngine
from pystack.tcp.state import TcpState
from pystack.tcp.testing import LOCAL_ISN, REMOTE_ISN, Harness
from pystack.wire.segment import ACK, FIN, SYN, TcpOptions

L = LOCAL_ISN + 1
R = REMOTE_ISN + 1
MSS = TcpOptions(mss=1460)
S = TcpState


def _recorder(eng: TcpEngine) -> list[tuple[TcpState, TcpState]]:
    """Record every (old, new) state change the engine is told about."""
    seen: list[tuple[TcpState, TcpState]] = []
    orig = eng._state_changed

    def record(c: object, old: TcpState, new: TcpState) -> None:
        seen.append((old, new))
        orig(c, old, new)

    eng._state_changed = record  # type: ignore[method-assign]
    return seen


def passive_open_and_close() -> list[tuple[TcpState, TcpState]]:
    """LISTEN -> SYN-RECEIVED -> ESTABLISHED -> CLOSE-WAIT -> LAST-ACK -> CLOSED."""
    h = Harness()
    seen = _recorder(h.engine)
    lst = h.listen()
    assert lst.state == S.LISTEN
    seen.append((S.CLOSED, S.LISTEN))  # listen() is the CLOSED -> LISTEN edge
    h.send(SYN, REMOTE_ISN, options=MSS)
    h.expect(flags="SA", seq=LOCAL_ISN, ack=R)
    h.send(ACK, R, L)
    h.expect_none()
    c = lst.accept()
    assert c is not None and c.state == S.ESTABLISHED
    h.send(FIN | ACK, R, L)
    h.expect(flags="A", seq=L, ack=R + 1)
    assert c.state == S.CLOSE_WAIT
    c.close()
    h.expect(flags="FA", seq=L, ack=R + 1)
    assert c.state == S.LAST_ACK
    h.send(ACK, R + 1, L + 1)
    h.expect_none()
    assert c.state == S.CLOSED
    return seen


def active_open_and_close() -> list[tuple[TcpState, TcpState]]:
    """CLOSED -> SYN-SENT -> ESTABLISHED -> FIN-WAIT-1 -> FIN-WAIT-2 -> TIME-WAIT ->
    CLOSED (after 2 MSL)."""
    h = Harness()
    seen = _recorder(h.engine)
    c = h.connect()
    h.expect(flags="S", seq=LOCAL_ISN)
    assert c.state == S.SYN_SENT
    h.send(SYN | ACK, REMOTE_ISN, L, options=MSS)
    h.expect(flags="A", seq=L, ack=R)
    assert c.state == S.ESTABLISHED
    c.close()
    h.expect(flags="FA", seq=L, ack=R)
    assert c.state == S.FIN_WAIT_1
    h.send(ACK, R, L + 1)
    h.expect_none()
    assert c.state == S.FIN_WAIT_2
    h.send(FIN | ACK, R, L + 1)
    h.expect(flags="A", seq=L + 1, ack=R + 1)
    assert c.state == S.TIME_WAIT
    h.advance(59.9)
    assert c.state == S.TIME_WAIT
    h.advance(0.1)
    assert c.state == S.CLOSED
    h.expect_none()
    return seen


def simultaneous_close() -> list[tuple[TcpState, TcpState]]:
    """ESTABLISHED -> FIN-WAIT-1 -> CLOSING -> TIME-WAIT (RFC 9293 Figure 13)."""
    h = Harness()
    c = h.established_client(options=MSS)
    seen = _recorder(h.engine)
    c.close()
    h.expect(flags="FA", seq=L, ack=R)
    h.send(FIN | ACK, R, L)  # the peer's FIN crosses ours: it does not ACK our FIN
    h.expect(flags="A", seq=L + 1, ack=R + 1)
    assert c.state == S.CLOSING
    h.send(ACK, R + 1, L + 1)
    h.expect_none()
    assert c.state == S.TIME_WAIT
    return seen


def simultaneous_open() -> list[tuple[TcpState, TcpState]]:
    """SYN-SENT -> SYN-RECEIVED -> ESTABLISHED (RFC 9293 Figure 7)."""
    h = Harness()
    seen = _recorder(h.engine)
    c = h.connect()
    h.expect(flags="S", seq=LOCAL_ISN)
    h.send(SYN, REMOTE_ISN, options=MSS)
    h.expect(flags="SA", seq=LOCAL_ISN, ack=R)
    assert c.state == S.SYN_RECEIVED
    h.send(SYN | ACK, REMOTE_ISN, L, options=MSS)
    assert c.state == S.ESTABLISHED
    return seen


def test_passive_open_and_close_edges() -> None:
    assert passive_open_and_close() == [
        (S.CLOSED, S.LISTEN),
        (S.CLOSED, S.SYN_RECEIVED),  # a connection is born from the listener's SYN
        (S.SYN_RECEIVED, S.ESTABLISHED),
        (S.ESTABLISHED, S.CLOSE_WAIT),
        (S.CLOSE_WAIT, S.LAST_ACK),
        (S.LAST_ACK, S.CLOSED),
    ]


def test_active_open_and_close_edges() -> None:
    assert active_open_and_close() == [
        (S.CLOSED, S.SYN_SENT),
        (S.SYN_SENT, S.ESTABLISHED),
        (S.ESTABLISHED, S.FIN_WAIT_1),
        (S.FIN_WAIT_1, S.FIN_WAIT_2),
        (S.FIN_WAIT_2, S.TIME_WAIT),
        (S.TIME_WAIT, S.CLOSED),
    ]


def test_simultaneous_close_edges() -> None:
    assert simultaneous_close() == [
        (S.ESTABLISHED, S.FIN_WAIT_1),
        (S.FIN_WAIT_1, S.CLOSING),
        (S.CLOSING, S.TIME_WAIT),
    ]


def test_simultaneous_open_edges() -> None:
    assert simultaneous_open() == [
        (S.CLOSED, S.SYN_SENT),
        (S.SYN_SENT, S.SYN_RECEIVED),
        (S.SYN_RECEIVED, S.ESTABLISHED),
    ]


def test_every_rfc9293_state_is_reached() -> None:
    reached: set[TcpState] = set()
    for walk in (passive_open_and_close, active_open_and_close, simultaneous_close,
                 simultaneous_open):
        for old, new in walk():
            reached |= {old, new}
    assert reached == set(TcpState)
    assert len(reached) == 11
