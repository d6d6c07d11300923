"""TCP options: MSS (RFC 9293 §3.7.1), window scale, timestamps and PAWS (RFC 7323),
SACK and D-SACK on the receive side (RFC 2018, RFC 2883), and the sysctls gating them."""

import pytest

from pystack.tcp.state import TcpState
from pystack.tcp.testing import LOCAL_ISN, REMOTE_ISN, Harness
from pystack.wire.segment import ACK, SYN, TcpOptions

L = LOCAL_ISN + 1
R = REMOTE_ISN + 1


def _full(**kw) -> Harness:
    return Harness(plain=False, tcp_timestamps=2, **kw)


def _peer_opts(ts=(500, 0), wscale=2, sack=True, mss=1460) -> TcpOptions:
    return TcpOptions(mss=mss, wscale=wscale, sack_permitted=sack, timestamp=ts)


def test_syn_offers_all_options() -> None:
    h = _full()
    h.connect()
    h.expect(flags="S", window=64240, mss=1460, wscale=7, sack_permitted=True, ts=(0, 0))


def test_sysctls_switch_options_off() -> None:
    h = Harness(plain=False, tcp_sack=0, tcp_timestamps=0, tcp_window_scaling=0)
    h.connect()
    h.expect(flags="S", mss=1460, wscale=None, sack_permitted=False, ts=None)


def test_negotiated_client() -> None:
    h = _full()
    c = h.connect()
    h.recv()
    h.now = 0.01
    h.send(SYN | ACK, REMOTE_ISN, L, 1000, options=_peer_opts(ts=(500, 0)))
    seg = h.expect(flags="A", seq=L, ack=R, ts=(10, 500))
    assert seg.window == 502  # 64240 rounded up to 128-byte units, >> 7
    assert c.snd_mss == 1448  # 1460 minus the timestamp option
    assert c.snd_wscale == 2 and c.rcv_wscale == 7
    assert c.tcp_info()["options"] == ["ts", "sack", "wscale"]
    assert c.snd_wnd == 1000  # the SYN-ACK's window is not scaled
    h.send(ACK, R, L, 1000, options=TcpOptions(timestamp=(501, 10)))
    assert c.snd_wnd == 4000  # later windows are (<< 2)


def test_passive_negotiation_and_syn_ack_window() -> None:
    h = _full()
    h.listen()
    h.send(SYN, REMOTE_ISN, options=_peer_opts(ts=(77, 0)))
    h.expect(flags="SA", window=65160, mss=1460, wscale=7, sack_permitted=True, ts=(0, 77))


def test_options_absent_in_peer_syn_are_not_used() -> None:
    h = _full()
    h.listen()
    h.send(SYN, REMOTE_ISN, options=TcpOptions(mss=1000))
    seg = h.expect(flags="SA", mss=1460, wscale=None, sack_permitted=False, ts=None)
    assert seg.window == 64240
    h.send(ACK, R, L, 65535)
    (c,) = h.engine.connections.values()
    assert c.snd_mss == 1000 and c.rcv_wscale == 0 and c.snd_wscale == 0


def test_wscale_clamped_to_14() -> None:
    h = _full()
    c = h.connect()
    h.recv()
    h.send(SYN | ACK, REMOTE_ISN, L, 1000, options=_peer_opts(wscale=20))
    assert c.snd_wscale == 14


def test_tcp_maxseg_before_connect_clamps_announced_mss() -> None:
    h = Harness()
    c = h.connect(options={"TCP_MAXSEG": 1000})
    h.expect(flags="S", mss=1000)
    h.send(SYN | ACK, REMOTE_ISN, L, 65535, options=TcpOptions(mss=1460))
    h.recv()
    assert c.snd_mss == 1000
    assert c.get_option("TCP_MAXSEG") == 1000


def _established_ts(h: Harness):
    c = h.connect()
    h.recv()
    h.send(SYN | ACK, REMOTE_ISN, L, 1000, options=_peer_opts(ts=(500, 0)))
    h.recv()
    return c


def test_ts_recent_follows_in_order_segments() -> None:
    h = _full()
    c = _established_ts(h)
    h.now = 1.0
    h.send(ACK, R, L, 1000, b"abc", options=TcpOptions(timestamp=(600, 0)))
    h.expect(flags="A", ack=R + 3, ts=(1000, 600))
    assert c.ts_recent == 600


def test_paws_drops_old_timestamp_and_acks() -> None:
    h = _full()
    c = _established_ts(h)
    h.send(ACK, R, L, 1000, b"abc", options=TcpOptions(timestamp=(600, 0)))
    h.recv()
    h.send(ACK, R + 3, L, 1000, b"old", options=TcpOptions(timestamp=(599, 0)))
    h.expect(flags="A", ack=R + 3)
    assert c.readable == 3
    assert h.engine.mib["PAWSEstabRejected"] == 1
    # RST is not subject to PAWS
    h.send(0x04, R + 3, options=TcpOptions(timestamp=(1, 0)))
    assert c.state == TcpState.CLOSED


def test_rtt_from_tsecr_after_retransmission() -> None:
    h = _full()
    c = _established_ts(h)
    c.send(b"x")
    h.recv()
    h.advance(1.0)  # RTO (1 s: the handshake gave no sample in this test? it did: 0)
    retrans = [s for _, s in h.sent_at]
    assert retrans
    tsval = retrans[-1].options.timestamp[0]
    h.now += 0.03
    h.send(ACK, R, L + 1, 1000, options=TcpOptions(timestamp=(700, tsval)))
    assert c.rtt.backoff == 0  # a timestamp echo is an unambiguous sample (RFC 7323 §4)


def test_sack_blocks_for_out_of_order_data_most_recent_first() -> None:
    h = _full()
    _established_ts(h)
    ts = TcpOptions(timestamp=(600, 0))
    h.send(ACK, R + 10, L, 1000, bytes(10), options=ts)
    h.expect(flags="A", ack=R, sack_blocks=[(R + 10, R + 20)])
    h.send(ACK, R + 30, L, 1000, bytes(10), options=ts)
    h.expect(flags="A", ack=R, sack_blocks=[(R + 30, R + 40), (R + 10, R + 20)])
    h.send(ACK, R + 20, L, 1000, bytes(5), options=ts)
    h.expect(flags="A", ack=R, sack_blocks=[(R + 10, R + 25), (R + 30, R + 40)])
    h.send(ACK, R, L, 1000, bytes(10), options=ts)
    h.expect(flags="A", ack=R + 25, sack_blocks=[(R + 30, R + 40)])


def test_each_out_of_order_segment_of_one_batch_gets_its_own_ack() -> None:
    """RFC 5681 §4.2, as Linux acks per skb: five out-of-order segments with holes between
    them arrive in one input batch (no poll between); five ACKs leave, and every range is
    the first SACK block of one of them, although only three blocks fit in each."""
    h = _full()
    _established_ts(h)
    ts = TcpOptions(timestamp=(600, 0))
    starts = [10, 30, 50, 70, 90]
    for s in starts:
        h.send(ACK, R + s, L, 1000, bytes(10), options=ts)
    acks = h.recv()
    assert [a.ack for a in acks] == [R] * 5
    assert [a.options.sack_blocks[0] for a in acks] == [(R + s, R + s + 10) for s in starts]
    assert all(len(a.options.sack_blocks) <= 3 for a in acks)


def test_at_most_three_sack_blocks_with_timestamps() -> None:
    h = _full()
    _established_ts(h)
    ts = TcpOptions(timestamp=(600, 0))
    for i in range(5):
        h.send(ACK, R + 10 + 20 * i, L, 1000, bytes(10), options=ts)
        h.recv()
    h.send(ACK, R + 200, L, 1000, bytes(10), options=ts)
    seg = h.recv_one()
    assert len(seg.options.sack_blocks) == 3
    assert seg.options.sack_blocks[0] == (R + 200, R + 210)


def test_dsack_for_duplicate_segment() -> None:
    h = _full()
    _established_ts(h)
    ts = TcpOptions(timestamp=(600, 0))
    h.send(ACK, R, L, 1000, b"abc", options=ts)
    h.expect(flags="A", ack=R + 3, sack_blocks=[])
    h.send(ACK, R, L, 1000, b"abc", options=ts)
    h.expect(flags="A", ack=R + 3, sack_blocks=[(R, R + 3)])
    h.send(ACK, R + 3, L, 1000, b"d", options=ts)
    h.expect(flags="A", ack=R + 4, sack_blocks=[])  # reported once only


def test_dsack_for_duplicate_out_of_order_data() -> None:
    h = _full()
    _established_ts(h)
    ts = TcpOptions(timestamp=(600, 0))
    h.send(ACK, R + 10, L, 1000, bytes(10), options=ts)
    h.recv()
    h.send(ACK, R + 10, L, 1000, bytes(10), options=ts)
    h.expect(flags="A", ack=R, sack_blocks=[(R + 10, R + 20), (R + 10, R + 20)])


def test_no_sack_blocks_when_not_negotiated() -> None:
    h = _full()
    c = h.connect()
    h.recv()
    h.send(SYN | ACK, REMOTE_ISN, L, 1000, options=_peer_opts(sack=False))
    h.recv()
    h.send(ACK, R + 10, L, 1000, bytes(10), options=TcpOptions(timestamp=(600, 0)))
    h.expect(flags="A", ack=R, sack_blocks=[])
    assert "sack" not in c.tcp_info()["options"]


@pytest.mark.parametrize("name", ["tcp_sack", "tcp_timestamps", "tcp_window_scaling"])
def test_passive_side_honours_sysctls(name: str) -> None:
    h = Harness(plain=False, **{name: 0})
    h.listen()
    h.send(SYN, REMOTE_ISN, options=_peer_opts())
    seg = h.expect(flags="SA")
    o = seg.options
    assert {
        "tcp_sack": o.sack_permitted,
        "tcp_timestamps": o.timestamp is not None,
        "tcp_window_scaling": o.wscale is not None,
    }[name] is False
