"""TcpEngine.input_batch: a received batch is processed segment by segment, but the
level-triggered events ("readable", "writable", "drained") of one connection fire once, after
the whole batch; the other events are all delivered in order."""

from pystack.tcp.engine import TcpEngine
from pystack.tcp.state import TcpState
from pystack.tcp.testing import LOCAL_ISN, REMOTE_ISN, Harness
from pystack.wire.segment import ACK, FIN, PSH, SYN

L = LOCAL_ISN + 1
R = REMOTE_ISN + 1


def test_three_data_segments_fire_one_readable_after_the_batch() -> None:
    h = Harness()
    c = h.established_server()
    h.events.clear()
    seen: list[bytes] = []

    def on_event(conn: object, kind: str) -> None:
        h.events.append((conn, kind))
        if kind == "readable":
            seen.append(c.recv(4096))

    c.on_event = on_event
    segs = [h.seg(ACK | PSH, R + 100 * i, L, payload=bytes([65 + i]) * 100) for i in range(3)]
    h.engine.input_batch(segs, h.now)
    assert h.events == [(c, "readable")]
    assert seen == [b"A" * 100 + b"B" * 100 + b"C" * 100]  # read once, everything there
    assert h.engine.mib["InSegs"] == 2 + 3  # each segment still counted (handshake: 2)
    ack = h.recv()[-1]
    assert ack.ack == R + 300


def test_per_segment_input_fires_one_readable_per_segment() -> None:
    h = Harness()
    c = h.established_server()
    h.events.clear()
    for i in range(3):
        h.send(ACK | PSH, R + 100 * i, L, payload=b"x" * 100)
    assert h.events == [(c, "readable")] * 3


def test_batch_keeps_every_edge_event_in_order() -> None:
    h = Harness()
    c = h.established_server()
    h.events.clear()
    # Data, more data, then the FIN: "readable" once (where it was first queued); the FIN
    # moves the connection to CLOSE-WAIT and is readable as EOF.
    segs = [
        h.seg(ACK | PSH, R, L, payload=b"a" * 10),
        h.seg(ACK | PSH, R + 10, L, payload=b"b" * 10),
        h.seg(ACK | FIN, R + 20, L),
    ]
    h.engine.input_batch(segs, h.now)
    assert [k for _, k in h.events] == ["readable"]
    assert c.state == TcpState.CLOSE_WAIT
    assert c.recv(100) == b"a" * 10 + b"b" * 10
    assert c.recv(100) == b""


def test_batch_of_two_handshakes_accepts_both() -> None:
    h = Harness()
    lst = h.listen()
    h.engine.input_batch([h.seg(SYN, REMOTE_ISN, src_port=40001),
                          h.seg(SYN, REMOTE_ISN, src_port=40002)], h.now)
    assert len(h.recv()) == 2
    h.engine.input_batch([h.seg(ACK, R, L, src_port=40001),
                          h.seg(ACK, R, L, src_port=40002)], h.now)
    assert h.events == [(lst, "accept"), (lst, "accept")]  # edge events are not merged
    assert lst.accept() is not None and lst.accept() is not None


def test_batch_equals_per_segment_on_the_wire() -> None:
    def run(batch: bool) -> list[tuple[int, int, int, bytes]]:
        h = Harness()
        h.established_server()
        segs = [h.seg(ACK | PSH, R + 50 * i, L, payload=b"z" * 50) for i in range(4)]
        eng: TcpEngine = h.engine
        if batch:
            eng.input_batch(segs, h.now)
        else:
            for s in segs:
                eng.input(s, h.now)
        h.advance(1.0)
        return [(s.seq, s.ack, s.flags, bytes(s.payload)) for s in h.recv()]

    assert run(True) == run(False)


def test_data_in_the_handshakes_batch_reaches_the_app_the_accept_attached() -> None:
    """The handshake's ACK and the first data in one batch: the accept callback attaches
    the application (sets on_event) while the batch's events are delivered; the data's
    "readable", queued before there was any callback, must still reach it (found by
    tests/integration/test_tcp_interop.py: the app never saw the request)."""
    h = Harness()
    lst = h.listen()
    got: list[bytes] = []

    def on_conn(conn: object, kind: str) -> None:
        if kind == "readable":
            got.append(conn.recv(100))  # type: ignore[attr-defined]

    def on_listener(listener: object, kind: str) -> None:
        if kind == "accept":
            conn = lst.accept()
            assert conn is not None
            conn.on_event = on_conn

    lst.on_event = on_listener
    h.send(SYN, REMOTE_ISN)
    h.expect(flags="SA", ack=R)
    h.engine.input_batch([h.seg(ACK, R, L), h.seg(ACK | PSH, R, L, payload=b"hello")], h.now)
    assert got == [b"hello"]
