"""TCP Fast Open (RFC 7413), both sides, with explicit segments and clock."""

from __future__ import annotations

import errno

import pytest

from pystack.sim.network import LinkConfig, SimNetwork
from pystack.tcp.engine import TcpEngine
from pystack.tcp.fastopen import format_keys, make_cookie, parse_keys
from pystack.tcp.settings import Settings
from pystack.tcp.state import TcpState
from pystack.tcp.testing import (
    LOCAL_IP,
    LOCAL_ISN,
    LOCAL_PORT,
    REMOTE_IP,
    REMOTE_ISN,
    REMOTE_PORT,
    Harness,
)
from pystack.wire.segment import ACK, FIN, PSH, RST, SYN, TcpOptions, TcpSegment

KEY_A = "00112233-44556677-8899aabb-ccddeeff"
KEY_B = "01010101-02020202-03030303-04040404"
DATA = b"GET / HTTP/1.0\r\n\r\n"


def key_bytes(text: str) -> bytes:
    return parse_keys(text)[0]


def cookie_a(client: int = REMOTE_IP) -> bytes:
    return make_cookie(key_bytes(KEY_A), client, LOCAL_IP)


def server(fastopen: int = 0x3, qlen: int | None = 16, key: str = KEY_A, **kw: object
           ) -> tuple[Harness, object]:
    h = Harness(tcp_fastopen=fastopen, tcp_fastopen_key=key, **kw)
    lst = h.listen()
    if qlen is not None:
        lst.set_option("TCP_FASTOPEN", qlen)
    return h, lst


def fo_syn(h: Harness, cookie: bytes | None, payload: bytes = b"", *, src_port: int = REMOTE_PORT,
           seq: int = REMOTE_ISN, flags: int = SYN) -> None:
    h.send(flags, seq, payload=payload, options=TcpOptions(mss=1460, fastopen_cookie=cookie),
           src_port=src_port)


# =====================================================================================
# Keys and cookies
# =====================================================================================
def test_cookie_is_linux_siphash_of_the_two_addresses() -> None:
    # SipHash-2-4 reference vector (key 00..0f, message 00..07 -> 0x93f5f5799a932462),
    # reached the way Linux does: key words as printed by /proc, addresses in network order.
    key = parse_keys("03020100-07060504-0b0a0908-0f0e0d0c")[0]
    assert key == bytes(range(16))
    assert make_cookie(key, 0x00010203, 0x04050607) == bytes.fromhex("6224939a79f5f593")


def test_key_syntax_as_the_kernel_reads_and_prints_it() -> None:
    s = Settings()
    s.set("net.ipv4.tcp_fastopen_key", "1-2-0x3-FFFFFFFF")
    assert s.tcp_fastopen_key == "00000001-00000002-00000003-ffffffff"
    s.set("tcp_fastopen_key", f"{KEY_B},{KEY_A.upper()}")
    assert s.tcp_fastopen_key == f"{KEY_B},{KEY_A}"
    assert len(parse_keys(s.tcp_fastopen_key)) == 2
    assert format_keys(parse_keys(KEY_A)) == KEY_A
    for bad in ("1-2-3", "1-2-3-4-5", f"{KEY_A},{KEY_A},{KEY_A}", "123456789-1-1-1", "g-1-1-1"):
        with pytest.raises(ValueError, match="invalid key"):
            s.set("tcp_fastopen_key", bad)
    s.set("tcp_fastopen_key", "")
    assert s.tcp_fastopen_key == ""


def test_blackhole_timeout_setting_defaults_to_linux_zero() -> None:
    s = Settings()
    assert s.tcp_fastopen_blackhole_timeout_sec == 0
    s.set("net.ipv4.tcp_fastopen_blackhole_timeout_sec", "3600")
    assert s.tcp_fastopen_blackhole_timeout_sec == 3600


# =====================================================================================
# Server
# =====================================================================================
def test_cookie_request_gets_a_cookie_bound_to_the_client() -> None:
    h, lst = server()
    fo_syn(h, b"", DATA)  # a request may carry data: it is not accepted
    seg = h.expect(flags="SA", seq=LOCAL_ISN, ack=REMOTE_ISN + 1)
    assert seg.options.fastopen_cookie == cookie_a()
    assert h.engine.mib["TCPFastOpenCookieReqd"] == 1
    assert h.engine.mib["TCPFastOpenPassive"] == 0
    assert lst.accept() is None  # an ordinary request: no child before the ACK
    # The cookie is not sent again on a retransmitted SYN-ACK (Linux).
    h.advance(1.0)
    seg = h.expect(flags="SA", seq=LOCAL_ISN, ack=REMOTE_ISN + 1)
    assert seg.options.fastopen_cookie is None


def test_valid_cookie_data_is_readable_before_the_handshake_completes() -> None:
    h, lst = server()
    fo_syn(h, cookie_a(), DATA, flags=SYN | PSH)
    # The listener's accept returns the child at once, data readable, still SYN-RECEIVED.
    c = lst.accept()
    assert c is not None and c.state == TcpState.SYN_RECEIVED
    assert (lst, "accept") in h.events
    assert c.readable == len(DATA)
    assert c.recv(100) == DATA
    # The SYN-ACK acknowledges the SYN and the data, and grants no new cookie.
    seg = h.expect(flags="SA", seq=LOCAL_ISN, ack=REMOTE_ISN + 1 + len(DATA))
    assert seg.options.fastopen_cookie is None
    mib = h.engine.mib
    assert (mib["TCPFastOpenPassive"], mib["PassiveOpens"]) == (1, 1)
    assert lst._fo_qlen == 1 and lst._syn_recv == 0
    # The reply written before the handshake leaves at once, as Linux sends it (RFC 7413
    # §4.2.2: the server may send data before the handshake completes).
    assert c.send(b"reply") == 5
    h.expect(flags="PA", seq=LOCAL_ISN + 1, ack=REMOTE_ISN + 1 + len(DATA), payload=b"reply")
    assert c.state == TcpState.SYN_RECEIVED
    h.send(ACK, REMOTE_ISN + 1 + len(DATA), LOCAL_ISN + 6)
    assert c.state == TcpState.ESTABLISHED
    h.expect_none()
    assert mib["PassiveOpens"] == 1 and mib["CurrEstab"] == 1
    assert lst._fo_qlen == 0


def test_valid_cookie_without_data_creates_the_child_at_once() -> None:
    h, lst = server()
    fo_syn(h, cookie_a())
    c = lst.accept()
    assert c is not None and c.state == TcpState.SYN_RECEIVED and c.readable == 0
    h.expect(flags="SA", ack=REMOTE_ISN + 1)


def test_invalid_cookie_data_not_acked_and_fresh_cookie_granted() -> None:
    h, lst = server()
    fo_syn(h, b"\x01" * 8, DATA)
    seg = h.expect(flags="SA", seq=LOCAL_ISN, ack=REMOTE_ISN + 1)
    assert seg.options.fastopen_cookie == cookie_a()
    assert h.engine.mib["TCPFastOpenPassiveFail"] == 1
    assert h.engine.mib["TCPFastOpenPassive"] == 0
    assert lst.accept() is None
    # The client retransmits the data after the handshake: accepted the ordinary way.
    h.send(ACK | PSH, REMOTE_ISN + 1, LOCAL_ISN + 1, payload=DATA)
    c = lst.accept()
    assert c is not None and c.recv(100) == DATA


def test_cookie_from_another_address_is_refused() -> None:
    h, lst = server()
    other = REMOTE_IP + 1
    syn = TcpSegment(other, LOCAL_IP, REMOTE_PORT, LOCAL_PORT, REMOTE_ISN, 0, SYN, 65535,
                     options=TcpOptions(mss=1460, fastopen_cookie=cookie_a()), payload=DATA)
    h.engine.input(syn, h.now)
    seg = h.expect(flags="SA", ack=REMOTE_ISN + 1, dst_ip=other)
    assert seg.options.fastopen_cookie == cookie_a(other) != cookie_a()
    assert h.engine.mib["TCPFastOpenPassiveFail"] == 1 and lst.accept() is None


def test_data_without_cookie_option_ignored_unless_0x200() -> None:
    h, lst = server()
    h.send(SYN, REMOTE_ISN, payload=DATA)
    seg = h.expect(flags="SA", ack=REMOTE_ISN + 1)
    assert seg.options.fastopen_cookie is None and lst.accept() is None
    h, lst = server(fastopen=0x202)
    h.send(SYN, REMOTE_ISN, payload=DATA)
    h.expect(flags="SA", ack=REMOTE_ISN + 1 + len(DATA))
    c = lst.accept()
    assert c is not None and c.recv(100) == DATA
    assert h.engine.mib["TCPFastOpenPassive"] == 1


def test_server_side_needs_0x2_and_a_queue() -> None:
    h, lst = server(fastopen=0x1)  # client only
    fo_syn(h, cookie_a(), DATA)
    seg = h.expect(flags="SA", ack=REMOTE_ISN + 1)
    assert seg.options.fastopen_cookie is None and lst.accept() is None
    h, lst = server(qlen=None)  # no TCP_FASTOPEN on the listener, no 0x400
    fo_syn(h, b"")
    assert h.expect(flags="SA").options.fastopen_cookie is None
    assert h.engine.mib["TCPFastOpenCookieReqd"] == 1  # counted all the same (Linux)


def test_0x400_enables_every_listener_with_the_backlog_as_queue() -> None:
    h, lst = server(fastopen=0x403, qlen=None)
    assert lst.get_option("TCP_FASTOPEN") == 16  # Harness.listen backlog
    fo_syn(h, cookie_a(), DATA)
    h.expect(flags="SA", ack=REMOTE_ISN + 1 + len(DATA))
    h, lst = server(fastopen=0x401, qlen=None)  # 0x400 without the server bit: nothing
    assert lst.get_option("TCP_FASTOPEN") == 0


def test_queue_full_falls_back_to_the_normal_handshake() -> None:
    h, lst = server(qlen=1)
    fo_syn(h, cookie_a(), DATA, src_port=1000)
    h.expect(flags="SA", ack=REMOTE_ISN + 1 + len(DATA), dst_port=1000)
    first = lst.accept()
    fo_syn(h, cookie_a(), DATA, src_port=1001)
    seg = h.expect(flags="SA", ack=REMOTE_ISN + 1, dst_port=1001)
    assert seg.options.fastopen_cookie is None  # Linux grants nothing either
    assert h.engine.mib["TCPFastOpenListenOverflow"] == 1
    assert lst.accept() is None
    # The first child completes its handshake: the queue has room again.
    h.send(ACK, REMOTE_ISN + 1 + len(DATA), LOCAL_ISN + 1, src_port=1000)
    assert first is not None and first.state == TcpState.ESTABLISHED
    fo_syn(h, cookie_a(), DATA, src_port=1002)
    h.expect(flags="SA", ack=REMOTE_ISN + 1 + len(DATA), dst_port=1002)
    assert h.engine.mib["TCPFastOpenPassive"] == 2


def test_reset_child_leaves_the_queue_and_reports_econnreset() -> None:
    h, lst = server(qlen=1)
    fo_syn(h, cookie_a(), DATA)
    h.expect(flags="SA")
    c = lst.accept()
    assert c is not None
    h.send(RST, REMOTE_ISN + 1 + len(DATA))
    assert c.state == TcpState.CLOSED and c.error == errno.ECONNRESET
    assert lst._fo_qlen == 0


def test_key_rotation_accepts_the_backup_key() -> None:
    h, lst = server()
    old_cookie = cookie_a()
    h.engine.settings.set("tcp_fastopen_key", f"{KEY_B},{KEY_A}")  # rotate: A is backup
    fo_syn(h, old_cookie, DATA, src_port=1000)
    seg = h.expect(flags="SA", ack=REMOTE_ISN + 1 + len(DATA))
    # Accepted, and the client is handed the primary key's cookie.
    assert seg.options.fastopen_cookie == make_cookie(key_bytes(KEY_B), REMOTE_IP, LOCAL_IP)
    assert h.engine.mib["TCPFastOpenPassiveAltKey"] == 1
    h.engine.settings.set("tcp_fastopen_key", KEY_B)  # A retired
    fo_syn(h, old_cookie, DATA, src_port=1001)
    h.expect(flags="SA", ack=REMOTE_ISN + 1)
    assert h.engine.mib["TCPFastOpenPassiveFail"] == 1


def test_random_key_when_none_configured() -> None:
    h, lst = server(key="")
    fo_syn(h, b"")
    cookie = h.expect(flags="SA").options.fastopen_cookie
    assert cookie is not None and len(cookie) == 8 and cookie != cookie_a()
    fo_syn(h, cookie, DATA, src_port=1000)
    h.expect(flags="SA", ack=REMOTE_ISN + 1 + len(DATA))


def test_tcp_fastopen_option_checks() -> None:
    h, lst = server(qlen=None)
    with pytest.raises(OSError) as ei:
        lst.set_option("TCP_FASTOPEN", -1)
    assert ei.value.errno == errno.EINVAL
    lst.set_option("TCP_FASTOPEN", 10**9)
    assert lst.get_option("TCP_FASTOPEN") == h.engine.settings.somaxconn
    with pytest.raises(OSError) as ei:
        lst.set_option("TCP_FASTOPEN_CONNECT", 1)  # not on a listener
    assert ei.value.errno == errno.EINVAL


# =====================================================================================
# Client
# =====================================================================================
def client(fastopen: int = 0x1, **kw: object) -> Harness:
    return Harness(tcp_fastopen=fastopen, **kw)


def get_cookie(h: Harness, cookie: bytes = b"COOKIE01", mss: int = 1460) -> None:
    """A first Fast Open connection that requests and receives a cookie, then goes away."""
    c = h.connect(fastopen=True)
    h.expect(flags="S")
    h.send(SYN | ACK, REMOTE_ISN, LOCAL_ISN + 1,
           options=TcpOptions(mss=mss, fastopen_cookie=cookie))
    h.recv()
    c.abort()
    h.recv()
    assert h.engine.fastopen_cookie(REMOTE_IP) == cookie


def test_sendto_style_without_cookie_requests_one_and_sends_data_after() -> None:
    h = client()
    assert h.engine.fastopen_cookie(REMOTE_IP) is None
    c = h.connect(fastopen=True, data=DATA)
    assert c.fastopen_queued == len(DATA) and not c.fastopen_deferred
    syn = h.expect(flags="S", seq=LOCAL_ISN, len=0)
    assert syn.options.fastopen_cookie == b""  # RFC 7413 §4.1.3 cookie request
    h.send(SYN | ACK, REMOTE_ISN, LOCAL_ISN + 1,
           options=TcpOptions(mss=1460, fastopen_cookie=b"COOKIE01"))
    h.expect(flags="PA", seq=LOCAL_ISN + 1, payload=DATA)
    assert c.state == TcpState.ESTABLISHED
    assert h.engine.fastopen_cookie(REMOTE_IP) == b"COOKIE01"
    assert h.engine.mib["TCPFastOpenActive"] == 0


def test_sendto_style_with_cookie_puts_data_in_the_syn() -> None:
    h = client()
    get_cookie(h)
    c = h.connect(fastopen=True, data=DATA)
    syn = h.expect(flags="S", seq=LOCAL_ISN, payload=DATA)
    assert syn.options.fastopen_cookie == b"COOKIE01"
    assert c.snd_nxt == LOCAL_ISN + 1 + len(DATA)
    h.send(SYN | ACK, REMOTE_ISN, LOCAL_ISN + 1 + len(DATA), options=TcpOptions(mss=1460))
    h.expect(flags="A", seq=LOCAL_ISN + 1 + len(DATA), ack=REMOTE_ISN + 1)
    assert c.outq == 0 and c.bytes_acked == 1 + len(DATA)
    assert h.engine.mib["TCPFastOpenActive"] == 1
    assert h.engine.mib["RetransSegs"] == 0
    assert (c, "drained") in h.events


def test_syn_carries_one_segment_the_rest_follows() -> None:
    h = client()
    get_cookie(h, mss=1000)  # the server's MSS is cached with the cookie
    big = bytes(range(256)) * 20
    c = h.connect(fastopen=True, data=big)
    assert c.fastopen_queued == len(big)
    syn = h.expect(flags="S")
    assert bytes(syn.payload) == big[:960]  # cached MSS less 40 bytes of option room
    h.send(SYN | ACK, REMOTE_ISN, LOCAL_ISN + 1 + 960, options=TcpOptions(mss=1000))
    rest = h.recv()
    assert b"".join(bytes(s.payload) for s in rest) == big[960:]
    assert rest[0].seq == LOCAL_ISN + 1 + 960


def test_fastopen_queued_is_bounded_by_the_send_buffer() -> None:
    h = client()
    c = h.connect(fastopen=True, data=bytes(100_000), options={"SO_SNDBUF": 4096})
    assert c.fastopen_queued == c.get_option("SO_SNDBUF") < 100_000


def test_synack_acking_only_the_syn_retransmits_the_data() -> None:
    h = client()
    get_cookie(h)
    c = h.connect(fastopen=True, data=DATA)
    h.expect(flags="S", payload=DATA)
    h.send(SYN | ACK, REMOTE_ISN, LOCAL_ISN + 1,
           options=TcpOptions(mss=1460, fastopen_cookie=b"COOKIE02"))
    h.expect(flags="PA", seq=LOCAL_ISN + 1, payload=DATA, ack=REMOTE_ISN + 1)
    mib = h.engine.mib
    assert (mib["TCPFastOpenActiveFail"], mib["TCPFastOpenActive"]) == (1, 0)
    assert mib["RetransSegs"] == 1
    assert h.engine.fastopen_cookie(REMOTE_IP) == b"COOKIE02"  # the new cookie replaces it
    h.send(ACK, REMOTE_ISN + 1, LOCAL_ISN + 1 + len(DATA))
    assert c.outq == 0 and c.state == TcpState.ESTABLISHED


def test_retransmitted_syn_has_no_data_and_no_cookie() -> None:
    h = client()
    get_cookie(h)
    c = h.connect(fastopen=True, data=DATA)
    h.expect(flags="S", payload=DATA)
    h.advance(1.0)  # the SYN with data is lost
    syn = h.expect(flags="S", seq=LOCAL_ISN, len=0)
    assert syn.options.fastopen_cookie is None
    h.send(SYN | ACK, REMOTE_ISN, LOCAL_ISN + 1, options=TcpOptions(mss=1460))
    h.expect(flags="PA", seq=LOCAL_ISN + 1, payload=DATA)
    assert h.engine.mib["TCPFastOpenActiveFail"] == 1
    assert h.engine.fastopen._cache[REMOTE_IP].syn_loss == 1
    assert c.state == TcpState.ESTABLISHED


def test_unsolicited_cookie_is_not_cached() -> None:
    h = client()
    h.connect()
    h.expect(flags="S")
    h.send(SYN | ACK, REMOTE_ISN, LOCAL_ISN + 1, options=TcpOptions(fastopen_cookie=b"UNASKED1"))
    h.expect(flags="A")
    assert h.engine.fastopen_cookie(REMOTE_IP) is None


def test_0x4_sends_data_without_any_option() -> None:
    h = client(fastopen=0x5)
    h.connect(fastopen=True, data=DATA)
    syn = h.expect(flags="S", payload=DATA)
    assert syn.options.fastopen_cookie is None


def test_fastopen_needs_the_client_bit() -> None:
    h = client(fastopen=0x2)
    with pytest.raises(OSError) as ei:
        h.connect(fastopen=True, data=DATA)
    assert ei.value.errno == errno.EOPNOTSUPP
    assert not h.engine.connections
    with pytest.raises(OSError) as ei:
        h.connect(options={"TCP_FASTOPEN_CONNECT": 1})
    assert ei.value.errno == errno.EOPNOTSUPP
    h = client()
    with pytest.raises(OSError) as ei:
        h.connect(options={"TCP_FASTOPEN_CONNECT": 2})
    assert ei.value.errno == errno.EINVAL


def test_fastopen_connect_without_cookie_sends_a_cookie_request_at_once() -> None:
    h = client()
    c = h.connect(options={"TCP_FASTOPEN_CONNECT": 1})
    assert not c.fastopen_deferred and c.get_option("TCP_FASTOPEN_CONNECT") == 1
    syn = h.expect(flags="S", len=0)
    assert syn.options.fastopen_cookie == b""


def test_fastopen_connect_with_cookie_defers_the_syn_to_the_first_write() -> None:
    h = client()
    get_cookie(h)
    c = h.connect(options={"TCP_FASTOPEN_CONNECT": 1})
    assert c.fastopen_deferred and c.state == TcpState.SYN_SENT
    h.expect_none()
    h.advance(10.0)  # no timer runs for it either
    h.expect_none()
    assert c.send(DATA) == len(DATA)
    syn = h.expect(flags="S", seq=LOCAL_ISN, payload=DATA)
    assert syn.options.fastopen_cookie == b"COOKIE01" and not c.fastopen_deferred
    h.send(SYN | ACK, REMOTE_ISN, LOCAL_ISN + 1 + len(DATA), options=TcpOptions(mss=1460))
    h.expect(flags="A")
    assert h.engine.mib["TCPFastOpenActive"] == 1


def test_four_tuple_in_use_raises_as_connect_does() -> None:
    h = client()
    h.connect(fastopen=True, data=DATA)
    with pytest.raises(OSError) as ei:
        h.connect(fastopen=True, data=DATA)
    assert ei.value.errno == errno.EADDRINUSE


# =====================================================================================
# Blackhole detection
# =====================================================================================
def test_three_syn_timeouts_pause_fast_open() -> None:
    h = client(tcp_fastopen_blackhole_timeout_sec=60)
    get_cookie(h)
    c = h.connect(fastopen=True, data=DATA)
    h.expect(flags="S", payload=DATA)
    h.advance(1.0 + 2.0)  # two timeouts: not yet
    assert h.engine.mib["TCPFastOpenBlackhole"] == 0
    h.advance(4.0)  # the third consecutive timeout
    mib = h.engine.mib
    assert (mib["TCPFastOpenBlackhole"], mib["TCPFastOpenActiveFail"]) == (1, 1)
    c.abort()
    h.recv()
    # Paused: a plain SYN, no option and no data, although a cookie is cached.
    c = h.connect(fastopen=True, data=DATA)
    syn = h.expect(flags="S", len=0)
    assert syn.options.fastopen_cookie is None and c.fastopen_queued == len(DATA)
    c.abort()
    h.recv()
    # After the pause (60 s from the detection), Fast Open is tried again; data received
    # on that connection ends the pause count.
    h.advance(60.0)
    c = h.connect(fastopen=True, data=DATA, now=h.now)
    syn = h.expect(flags="S", payload=DATA)
    assert syn.options.fastopen_cookie == b"COOKIE01"
    h.send(SYN | ACK, REMOTE_ISN, LOCAL_ISN + 1 + len(DATA), options=TcpOptions(mss=1460))
    h.send(ACK | PSH, REMOTE_ISN + 1, LOCAL_ISN + 1 + len(DATA), payload=b"answer")
    assert h.engine.fastopen.disable_times == 1
    c.abort()
    assert h.engine.fastopen.disable_times == 0


def test_blackhole_detector_off_by_default() -> None:
    h = client()
    get_cookie(h)
    h.connect(fastopen=True, data=DATA)
    h.expect(flags="S", payload=DATA)
    h.advance(1.0 + 2.0 + 4.0 + 8.0)
    assert h.engine.mib["TCPFastOpenBlackhole"] == 0
    assert h.engine.mib["TCPFastOpenActiveFail"] == 1  # counted, nothing paused


def test_fin_without_data_pauses_fast_open() -> None:
    h = client(tcp_fastopen_blackhole_timeout_sec=60)
    get_cookie(h)
    c = h.connect(fastopen=True, data=DATA)
    h.expect(flags="S", payload=DATA)
    h.send(SYN | ACK, REMOTE_ISN, LOCAL_ISN + 1 + len(DATA), options=TcpOptions(mss=1460))
    h.recv()
    # The server's answer was dropped by a middlebox; only its FIN arrives.
    h.send(FIN | ACK, REMOTE_ISN + 1 + 100, LOCAL_ISN + 1 + len(DATA))
    c.abort()
    assert h.engine.mib["TCPFastOpenBlackhole"] == 1


# =====================================================================================
# pystack client against pystack server on the simulated link, with loss
# =====================================================================================
@pytest.mark.parametrize(("seed", "drop"), [(1, 0.0), (1, 0.2), (2, 0.2), (3, 0.3)])
def test_engine_to_engine(seed: int, drop: float) -> None:
    net = SimNetwork(seed=seed, default=LinkConfig(drop=drop))
    a = TcpEngine(Settings(tcp_fastopen=1))
    b = TcpEngine(Settings(tcp_fastopen=2, tcp_fastopen_key=KEY_A))
    net.add_host(0x0A000001, a)
    net.add_host(0x0A000002, b)
    lst = b.listen(0, 80)
    lst.set_option("TCP_FASTOPEN", 8)

    def exchange(msg: bytes) -> bytes:
        c = a.connect(0x0A000001, 0x0A000002, 80, fastopen=True, data=msg)
        assert net.run(until=net.now + 120.0, stop=lambda: bool(lst.pending))
        s = lst.accept()
        assert s is not None
        assert net.run(until=net.now + 120.0, stop=lambda: s.readable >= len(msg)
                       and c.state == TcpState.ESTABLISHED)
        got = s.recv(len(msg))
        c.abort()
        s.abort()
        net.run_for(1.0)
        return got

    assert exchange(b"first") == b"first"
    assert exchange(b"second, in the SYN") == b"second, in the SYN"
    if not drop:
        assert a.fastopen_cookie(0x0A000002) == make_cookie(
            key_bytes(KEY_A), 0x0A000001, 0x0A000002)
        assert b.mib["TCPFastOpenPassive"] == 1 and a.mib["TCPFastOpenActive"] == 1
        assert b.mib["TCPFastOpenCookieReqd"] == 1


# =====================================================================================
# A Fast Open child closed before its handshake completed (HTTP/1.0 style)
# =====================================================================================
def answer_and_close(lst: object, kind: str) -> None:
    c = lst.accept()  # type: ignore[attr-defined]
    if c is not None:
        c.send(c.recv(100).upper())
        c.close()


def test_child_answers_and_closes_before_the_handshake_completes() -> None:
    h, lst = server()
    lst.on_event = answer_and_close
    fo_syn(h, cookie_a(), DATA)
    end = REMOTE_ISN + 1 + len(DATA)
    segs = h.recv()
    # The SYN-ACK first, then the answer and the FIN (Linux sends them before the ACK).
    assert [(s.flags, s.seq, s.ack) for s in segs][0] == (SYN | ACK, LOCAL_ISN, end)
    assert b"".join(bytes(s.payload) for s in segs[1:]) == DATA.upper()
    assert segs[-1].flags & FIN
    (c,) = h.engine.connections.values()
    assert c.state == TcpState.FIN_WAIT_1
    # The client's ACK covers SYN-ACK, answer and FIN.
    h.send(ACK, end, LOCAL_ISN + 2 + len(DATA))
    assert c.state == TcpState.FIN_WAIT_2 and c.cc is not None
    h.send(FIN | ACK, end, LOCAL_ISN + 2 + len(DATA))
    h.expect(flags="A", ack=end + 1)
    assert c.state == TcpState.TIME_WAIT


def test_closed_child_still_retransmits_its_syn_ack() -> None:
    h, lst = server()
    lst.on_event = answer_and_close
    fo_syn(h, cookie_a(), DATA)
    end = REMOTE_ISN + 1 + len(DATA)
    h.recv()  # lost on the way, all of it
    h.advance(1.0)
    segs = h.recv()
    assert segs and segs[0].flags == SYN | ACK and segs[0].ack == end and not segs[0].payload
    assert h.engine.mib["TCPSynRetrans"] == 1
    # The client's SYN retransmission is answered with the SYN-ACK as well.
    h.send(SYN, REMOTE_ISN, options=TcpOptions(mss=1460))
    h.expect(flags="SA", seq=LOCAL_ISN, ack=end)
    # The client acknowledges the SYN-ACK only: the answer and FIN are sent again.
    h.send(ACK, end, LOCAL_ISN + 1)
    h.advance(3.0)
    again = h.recv()
    assert b"".join(bytes(s.payload) for s in again) == DATA.upper()
    (c,) = h.engine.connections.values()
    h.send(ACK, end, LOCAL_ISN + 2 + len(DATA))
    assert c.state == TcpState.FIN_WAIT_2


def test_child_gives_up_with_etimedout() -> None:
    h, lst = server(tcp_synack_retries=1)
    fo_syn(h, cookie_a(), DATA)
    c = lst.accept()
    assert c is not None
    errors: list[str] = []
    c.on_event = lambda conn, kind: errors.append(kind)
    h.recv()
    h.advance(1.0 + 2.0 + 4.0)  # two retransmissions (synack_retries + 1), then give up
    sent = [s for _, s in h.sent_at if s.flags & SYN]
    assert len(sent) == 2
    assert c.state == TcpState.CLOSED and c.error == errno.ETIMEDOUT
    assert "closed" in errors and lst._fo_qlen == 0


# =====================================================================================
# A Fast Open child answers before the client's handshake ACK (as Linux does)
# =====================================================================================
def answer(lst: object, kind: str) -> None:
    c = lst.accept()  # type: ignore[attr-defined]
    if c is not None:
        c.send(c.recv(100).upper())


def test_child_answer_leaves_right_after_the_syn_ack() -> None:
    h, lst = server()
    lst.on_event = answer
    fo_syn(h, cookie_a(), DATA)
    end = REMOTE_ISN + 1 + len(DATA)
    segs = h.recv()
    assert [(s.flags, s.seq, s.ack, bytes(s.payload)) for s in segs] == [
        (SYN | ACK, LOCAL_ISN, end, b""),
        (ACK | PSH, LOCAL_ISN + 1, end, DATA.upper()),
    ]
    (c,) = h.engine.connections.values()
    assert c.state == TcpState.SYN_RECEIVED
    # The client's ACK covers both: nothing is sent again.
    h.send(ACK, end, LOCAL_ISN + 1 + len(DATA))
    assert c.state == TcpState.ESTABLISHED and c.snd_una == c.snd_nxt
    h.advance(5.0)
    assert not [s for s in h.recv() if s.payload]
    assert h.engine.mib["RetransSegs"] == 0


def test_lost_child_answer_is_retransmitted_after_the_handshake() -> None:
    h, lst = server()
    lst.on_event = answer
    fo_syn(h, cookie_a(), DATA)
    end = REMOTE_ISN + 1 + len(DATA)
    assert len(h.recv()) == 2  # the answer is lost; the SYN-ACK arrives
    h.send(ACK, end, LOCAL_ISN + 1)  # acknowledges the SYN-ACK only
    (c,) = h.engine.connections.values()
    assert c.state == TcpState.ESTABLISHED
    h.expect_none()
    h.advance(0.3)  # the RTO: the SYN-ACK's RTT sample (0 here) makes it tcp_rto_min
    again = [s for s in h.recv() if s.payload]
    assert [(s.seq, bytes(s.payload)) for s in again] == [(LOCAL_ISN + 1, DATA.upper())]
    assert h.engine.mib["RetransSegs"] >= 1
    h.send(ACK, end, LOCAL_ISN + 1 + len(DATA))
    assert c.snd_una == c.snd_nxt


def test_answer_waits_while_the_syn_ack_is_retransmitted() -> None:
    h, lst = server()
    fo_syn(h, cookie_a(), DATA)
    end = REMOTE_ISN + 1 + len(DATA)
    c = lst.accept()
    assert c is not None
    h.expect(flags="SA", ack=end)  # lost
    h.advance(1.0)
    h.expect(flags="SA", seq=LOCAL_ISN, ack=end)  # the retransmitted SYN-ACK
    # Written now: held until the handshake completes (the client may not be there).
    c.send(b"late")
    h.expect_none()
    h.send(ACK, end, LOCAL_ISN + 1)
    h.expect(flags="PA", seq=LOCAL_ISN + 1, payload=b"late")


def test_passive_cookie_computed_once_per_syn(monkeypatch: pytest.MonkeyPatch) -> None:
    import pystack.tcp.fastopen as fo_mod

    calls: list[int] = []
    real = fo_mod.siphash24

    def counting(key: bytes, msg: bytes) -> int:
        calls.append(1)
        return real(key, msg)

    cookie = cookie_a()
    monkeypatch.setattr(fo_mod, "siphash24", counting)
    h, lst = server()
    fo_syn(h, cookie, DATA)
    assert lst.accept() is not None and len(calls) <= 1
    fo_syn(h, cookie, DATA, src_port=REMOTE_PORT + 1)
    assert lst.accept() is not None and len(calls) <= 1  # same client: cached
    assert h.engine.mib["TCPFastOpenPassive"] == 2
