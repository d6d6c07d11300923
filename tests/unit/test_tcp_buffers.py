"""Send buffer (single copy, memoryview slices) and receive reassembly."""

from hypothesis import given, settings
from hypothesis import strategies as st

from pystack.tcp.buffers import RecvBuffer, SendBuffer


def test_send_buffer_slices_without_copy() -> None:
    sb = SendBuffer()
    big = bytes(range(256)) * 100
    sb.append(big)
    v = sb.view(100, 50)
    assert isinstance(v, memoryview) and v.obj is big
    assert bytes(v) == big[100:150]
    assert sb.view(0, len(big)) is big


def test_send_buffer_spanning_chunks_and_ack() -> None:
    sb = SendBuffer()
    sb.append(b"a" * 5000)
    sb.append(b"b" * 5000)
    assert bytes(sb.view(4990, 20)) == b"a" * 10 + b"b" * 10
    sb.ack(4995)
    assert len(sb) == 5005
    assert bytes(sb.view(0, 10)) == b"aaaaabbbbb"
    sb.ack(10_000)
    assert len(sb) == 0 and sb.view(0, 10) == b""


def test_small_writes_coalesce() -> None:
    sb = SendBuffer()
    for _ in range(100):
        sb.append(b"xy")
    assert len(sb._chunks) == 1 and bytes(sb.view(0, 200)) == b"xy" * 100


def test_recv_in_order_and_reassembly() -> None:
    rb = RecvBuffer()
    assert rb.insert(5, b"fghij") == (0, None)
    assert rb.insert(15, b"pq") == (0, None)
    assert rb.sack_ranges() == [(15, 17), (5, 10)]
    assert rb.insert(0, b"abcde") == (10, None)
    assert rb.read(100) == b"abcdefghij"
    assert rb.insert(10, b"klmnopq") == (7, (15, 17))
    assert rb.read(100) == b"klmnopq"
    assert rb.used == 0


def test_recv_out_of_order_overlaps_report_duplicates() -> None:
    rb = RecvBuffer()
    rb.insert(10, b"0123456789")
    assert rb.insert(15, b"56789ABC") == (0, (15, 20))
    assert rb.ooo_len == 13
    assert [(r.start, r.end) for r in rb.ooo] == [(10, 23)]
    rb.insert(0, b"x" * 10)
    assert rb.read(100) == b"x" * 10 + b"0123456789ABC"


@settings(max_examples=100)
@given(st.data())
def test_any_arrival_order_reassembles(data: st.DataObject) -> None:
    stream = data.draw(st.binary(min_size=1, max_size=300))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    bounds = zip([0, *cuts], [*cuts, len(stream)], strict=True)
    pieces = [(a, stream[a:b]) for a, b in bounds if b > a]
    extra = data.draw(st.lists(st.sampled_from(pieces), max_size=5)) if pieces else []
    order = data.draw(st.permutations(pieces + extra))
    rb = RecvBuffer()
    for off, chunk in order:
        if off + len(chunk) <= rb.rcv_off:
            continue
        if off < rb.rcv_off:
            chunk = chunk[rb.rcv_off - off :]
            off = rb.rcv_off
        rb.insert(off, chunk)
    assert rb.read(1000) == stream
    assert not rb.ooo and rb.ooo_len == 0
