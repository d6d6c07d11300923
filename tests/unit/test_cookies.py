"""SYN cookies in the engine (pystack/tcp/cookies.py), with explicit segments and clock.

The XDP program's part (cookie SYN-ACKs, checking ACKs) is played by SynCookies, the
Python twin of its cookie code: a cookie ACK reaches the engine with the info word the
program would have written (TcpSegment.syncookie)."""

from __future__ import annotations

import pytest

from pystack.tcp import cookies
from pystack.tcp.constants import F_SACK, F_TS, F_WSCALE
from pystack.tcp.cookies import SynCookies, info_word
from pystack.tcp.settings import Settings
from pystack.tcp.state import TcpState
from pystack.tcp.testing import (
    LOCAL_IP,
    LOCAL_PORT,
    REMOTE_IP,
    REMOTE_ISN,
    REMOTE_PORT,
    Harness,
)
from pystack.wire.segment import ACK, FIN, PSH, RST, SYN, FourTuple, TcpOptions, TcpSegment
from pystack.xdp import abi
from pystack.xdp.syncookie import check_cookie, make_cookie, time_counter

KEY = bytes(range(16))
COOKIE = 0x5EED0003  # any ISS: the engine takes it from SEG.ACK - 1
T0 = 1000.0  # seconds of CLOCK_MONOTONIC: the clock cookies and TSvals are made from
PEER_TS = 777_000
FULL = info_word(1460, 7, 7, sack=True, ts=True, ecn=False)


def harness(**sysctls: object) -> tuple[Harness, SynCookies]:
    """Options on (as Linux), SYN cookies attached with a known key, the clock at T0."""
    s = Settings()
    for k, v in sysctls.items():
        s.set(k, v)
    h = Harness(s)
    sc = SynCookies(KEY)
    cookies.attach(h.engine, sc)
    h.now = T0
    return h, sc


def cookie_ack(h: Harness, word: int, *, seq: int = REMOTE_ISN + 1, ack: int = COOKIE + 1,
               tsecr: int | None = 0, flags: int = ACK, payload: bytes = b"",
               window: int = 1000, src_port: int = REMOTE_PORT) -> TcpSegment:
    opts = TcpOptions(timestamp=(PEER_TS, tsecr)) if tsecr is not None else TcpOptions()
    seg = h.seg(flags, seq, ack, window, payload, options=opts, src_port=src_port)
    seg.syncookie = word
    return seg


def deliver(h: Harness, seg: TcpSegment) -> None:
    h.engine.input(seg, h.now)


def only_conn(h: Harness):  # type: ignore[no-untyped-def]
    (c,) = h.engine.connections.values()
    return c


# ---- the connection a cookie ACK makes ----
def test_cookie_ack_establishes_without_any_syn_state() -> None:
    h, sc = harness()
    lst = h.listen()
    added: list[FourTuple] = []
    h.engine.on_add = added.append
    deliver(h, cookie_ack(h, FULL))
    h.expect_none()  # a bare third ACK needs no answer
    c = only_conn(h)
    assert c.state == TcpState.ESTABLISHED and lst.pending == 1 and lst._syn_recv == 0
    assert (c.iss, c.snd_una, c.snd_nxt) == (COOKIE, COOKIE + 1, COOKIE + 1)
    assert (c.irs, c.rcv_nxt) == (REMOTE_ISN, REMOTE_ISN + 1)
    assert c._f & (F_TS | F_SACK | F_WSCALE) == F_TS | F_SACK | F_WSCALE
    assert (c.snd_wscale, c.rcv_wscale) == (7, 7)
    assert c.snd_mss == 1460 - 12  # the cookie's MSS, less the timestamp option
    assert c.snd_wnd == 1000 << 7  # the ACK's window is scaled already
    assert c.ts_recent == PEER_TS
    mib = h.engine.mib
    assert mib["PassiveOpens"] == 1 and mib["CurrEstab"] == 1
    assert added == [FourTuple(LOCAL_IP, LOCAL_PORT, REMOTE_IP, REMOTE_PORT)]
    assert ("accept" in [k for _, k in h.events])
    assert lst.accept() is c


def test_connections_from_cookies_are_compacted() -> None:
    """Memory: equal window and MSS values are one shared object (Connection._compact),
    as for a connection from a full handshake."""
    h, sc = harness()
    h.listen()
    for port in (REMOTE_PORT, REMOTE_PORT + 1):
        deliver(h, cookie_ack(h, FULL, src_port=port))
    a, b = h.engine.connections.values()
    assert a.snd_mss == 1448 and a.snd_mss is b.snd_mss and a.snd_wnd is b.snd_wnd
    assert a.snd_nxt is a.snd_una and a._write_seq is a.snd_una


def test_first_data_continues_the_sequence_and_the_timestamp_clock() -> None:
    h, sc = harness()
    h.listen()
    deliver(h, cookie_ack(h, FULL))
    c = only_conn(h)
    h.now += 0.5
    c.send(b"hello")
    seg = h.expect(flags="PA", seq=COOKIE + 1, ack=REMOTE_ISN + 1, payload=b"hello")
    tsval, tsecr = seg.options.timestamp
    assert tsecr == PEER_TS
    # The XDP clock: CLOCK_MONOTONIC ms + the shared offset (bpf/pystack_xdp.h).
    assert tsval == (int(h.now * 1000) + sc.ts_offset) & 0xFFFFFFFF
    # The window we advertise is scaled by the shift the cookie SYN-ACK offered.
    assert seg.window == c.rcv_wnd >> 7


def test_data_on_the_third_segment_is_received() -> None:
    h, _ = harness()
    lst = h.listen()
    deliver(h, cookie_ack(h, FULL, flags=ACK | PSH, payload=b"GET /"))
    c = lst.accept()
    assert c is not None and c.recv() == b"GET /"
    h.advance(0.5)  # the delayed ACK
    h.expect(flags="A", ack=REMOTE_ISN + 1 + 5)


def test_fin_on_the_third_segment_goes_to_close_wait() -> None:
    h, _ = harness()
    h.listen()
    deliver(h, cookie_ack(h, FULL, flags=ACK | FIN))
    c = only_conn(h)
    assert c.state == TcpState.CLOSE_WAIT and c.rcv_nxt == REMOTE_ISN + 2
    h.expect(flags="A", ack=REMOTE_ISN + 2)


def test_without_timestamps_only_the_mss_survives() -> None:
    h, _ = harness()
    h.listen()
    deliver(h, cookie_ack(h, info_word(536, None, 7, False, False, False), tsecr=None,
                          window=30000))
    c = only_conn(h)
    assert not c._f & (F_TS | F_SACK | F_WSCALE)
    assert (c.snd_wscale, c.rcv_wscale, c.snd_mss) == (0, 0, 536)
    assert c.snd_wnd == 30000 and c.rcv_wnd <= 65535
    c.send(b"x")
    seg = h.expect(flags="PA", seq=COOKIE + 1)
    assert seg.options.timestamp is None and seg.window == c.rcv_wnd


def test_ecn_in_the_cookie_is_not_taken() -> None:
    h, _ = harness()
    h.listen()
    deliver(h, cookie_ack(h, info_word(1460, 7, 7, True, True, ecn=True)))
    assert only_conn(h).state == TcpState.ESTABLISHED  # and no ECN state exists to set


@pytest.mark.parametrize("abort", [0, 1])
def test_accept_queue_full_drops_the_ack_silently(abort: int) -> None:
    """Linux: tcp_v4_syn_recv_sock fails (ListenOverflows, ListenDrops) and the ACK is
    discarded: no RST whatever tcp_abort_on_overflow says, no state kept."""
    h, _ = harness(tcp_abort_on_overflow=abort)
    lst = h.listen(backlog=1)
    for port in (1000, 1001):
        deliver(h, cookie_ack(h, FULL, src_port=port))
    assert lst.pending == 2  # Linux admits backlog + 1
    deliver(h, cookie_ack(h, FULL, src_port=1002))
    h.expect_none()
    assert lst.pending == 2 and len(h.engine.connections) == 2
    mib = h.engine.mib
    assert (mib["ListenOverflows"], mib["ListenDrops"], mib["OutRsts"]) == (1, 1, 0)
    # Room again: the client's next segment (it thinks it is connected) gets in.
    lst.accept()
    deliver(h, cookie_ack(h, FULL, src_port=1002, flags=ACK | PSH, payload=b"hi"))
    assert lst.pending == 2 and mib["PassiveOpens"] == 3


def test_a_cookie_segment_of_a_known_connection_is_an_ordinary_segment() -> None:
    h, _ = harness()
    h.listen()
    deliver(h, cookie_ack(h, FULL))
    deliver(h, cookie_ack(h, FULL, flags=ACK | PSH, payload=b"abc"))  # XDP marked it too
    c = only_conn(h)
    assert c.recv() == b"abc" and h.engine.mib["PassiveOpens"] == 1


def test_removal_calls_on_remove() -> None:
    h, _ = harness()
    h.listen()
    gone: list[FourTuple] = []
    h.engine.on_remove = gone.append
    deliver(h, cookie_ack(h, FULL))
    deliver(h, cookie_ack(h, FULL, flags=RST))
    assert gone == [FourTuple(LOCAL_IP, LOCAL_PORT, REMOTE_IP, REMOTE_PORT)]
    assert not h.engine.connections


# ---- SYN admission (Linux tcp_conn_request) ----
def syn(h: Harness, port: int, *, ts: bool = True) -> None:
    opts = TcpOptions(mss=1460, wscale=7, sack_permitted=True,
                      timestamp=(PEER_TS, 0) if ts else None)
    h.send(SYN, REMOTE_ISN, window=64240, options=opts, src_port=port)


def test_request_queue_full_answers_with_a_cookie_and_raises_pressure() -> None:
    h, sc = harness()
    raised: list[tuple[int, bool]] = []
    sc.on_pressure = lambda lst, up: raised.append((lst.port, up))
    lst = h.listen(backlog=2)
    for port in (1000, 1001, 1002):  # Linux >= 6.13: a backlog of 2 holds 3 requests
        syn(h, port)
        h.expect(flags="SA", dst_port=port)
    assert lst._syn_recv == 3 and raised == []
    syn(h, 1003)
    sa = h.expect(flags="SA", dst_port=1003, ack=REMOTE_ISN + 1, window=sc.window,
                  mss=sc.mss, wscale=sc.wscale, sack_permitted=True)
    # A cookie, no state: the XDP program's check accepts it.
    count = time_counter(int(T0 * 1e9))
    assert sa.seq == make_cookie(KEY, REMOTE_IP, LOCAL_IP, 1003, LOCAL_PORT, REMOTE_ISN,
                                 count, 1460)
    assert check_cookie([KEY], REMOTE_IP, LOCAL_IP, 1003, LOCAL_PORT, REMOTE_ISN, sa.seq,
                        count) == 1460
    tsval, tsecr = sa.options.timestamp
    assert tsecr == PEER_TS and tsval & 0x3F == 7 | 0x10  # wscale 7, SACK (no ECN)
    now_ms = int(T0 * 1000) + sc.ts_offset & 0xFFFFFFFF
    assert 0 <= (now_ms - tsval) & 0xFFFFFFFF < 64
    assert lst._syn_recv == 3 and len(h.engine.connections) == 3
    assert raised == [(LOCAL_PORT, True)] and sc.pressure == {lst}
    mib = h.engine.mib
    assert mib["TCPReqQFullDoCookies"] == 1 and mib["SyncookiesSent"] == 1
    assert mib["ListenDrops"] == 0


def test_python_cookie_round_trip_and_the_clock_never_goes_back() -> None:
    h, sc = harness()
    lst = h.listen(backlog=0)
    syn(h, 1000)
    h.expect(flags="SA")
    syn(h, 1001)  # queue full (1 > 0): a cookie
    sa = h.recv_one()
    assert 1001 not in [c.remote_port for c in h.engine.connections.values()]
    h.now += 0.030
    ack = h.seg(ACK, REMOTE_ISN + 1, sa.seq + 1, 1000, src_port=1001,
                options=TcpOptions(timestamp=(PEER_TS + 30, sa.options.timestamp[0])))
    word = sc.check(ack, h.now)  # what the XDP program would say
    info = abi.decode_cookie_info(word)
    assert (info.mss, info.snd_wscale, info.rcv_wscale) == (1460, 7, sc.wscale)
    assert info.sack_permitted and info.timestamps and not info.ecn
    ack.syncookie = word
    h.engine.input(ack, h.now)
    c = lst._accept_q[-1]
    assert c.remote_port == 1001 and c.iss == sa.seq and c.state == TcpState.ESTABLISHED
    c.send(b"x")
    (seg,) = [s for s in h.recv() if s.dst_port == 1001]
    assert 0 < (seg.options.timestamp[0] - sa.options.timestamp[0]) & 0xFFFFFFFF < 64 + 30


def test_check_mirrors_the_xdp_rules() -> None:
    h, sc = harness()
    h.listen(backlog=0)
    syn(h, 1000)
    syn(h, 1001, ts=False)  # a cookie without timestamps
    sa = [s for s in h.recv() if s.dst_port == 1001][0]
    assert sa.options.timestamp is None and sa.options.wscale is None
    ack = h.seg(ACK, REMOTE_ISN + 1, sa.seq + 1, src_port=1001)
    info = abi.decode_cookie_info(sc.check(ack, h.now))
    assert info.mss == 1460 and info.snd_wscale is None and not info.timestamps
    bad = h.seg(ACK, REMOTE_ISN + 1, sa.seq + 2, src_port=1001)
    assert sc.check(bad, h.now) == 0
    assert sc.check(h.seg(ACK | RST, REMOTE_ISN + 1, sa.seq + 1, src_port=1001), h.now) == 0
    # One rotation: still valid; two: not. Two time periods later: not.
    sc.rotate(bytes(16))
    assert sc.check(ack, h.now)
    sc.rotate(bytes([1]) * 16)
    assert sc.check(ack, h.now) == 0
    sc.keys = [KEY]
    assert sc.check(ack, h.now + 64) and sc.check(ack, h.now + 192) == 0


def test_pressure_drops_once_the_queue_has_drained() -> None:
    h, sc = harness(tcp_synack_retries=1)
    ups: list[bool] = []
    sc.on_pressure = lambda lst, up: ups.append(up)
    lst = h.listen(backlog=4)
    for port in range(1000, 1006):
        syn(h, port)
    h.recv()
    assert ups == [True] and sc.drain() == []
    h.advance(10.0)  # one SYN-ACK retransmission, then the requests expire
    h.recv()
    assert lst._syn_recv == 0
    assert sc.drain() == [lst] and ups == [True, False] and not sc.pressure
    syn(h, 2000)  # stateful again
    h.expect(flags="SA", seq=1000)
    assert lst._syn_recv == 1


def test_without_cookie_support_a_full_queue_drops() -> None:
    h = Harness(tcp_syncookies=1)  # no SynCookies attached: nothing can make a cookie
    h.listen(backlog=1)
    for port in (1000, 1001):
        h.send(SYN, REMOTE_ISN, src_port=port)
        h.expect(flags="SA")
    h.send(SYN, REMOTE_ISN, src_port=1002)
    h.expect_none()
    assert h.engine.mib["TCPReqQFullDrop"] == 1 and h.engine.mib["ListenDrops"] == 1


def test_syncookies_off_drops_on_a_full_queue() -> None:
    h, _ = harness(tcp_syncookies=0)
    h.listen(backlog=1)
    for port in (1000, 1001):
        syn(h, port)
        h.expect(flags="SA")
    syn(h, 1002)
    h.expect_none()
    mib = h.engine.mib
    assert (mib["TCPReqQFullDrop"], mib["ListenDrops"], mib["SyncookiesSent"]) == (1, 1, 0)


@pytest.mark.parametrize("syncookies, admitted", [(0, 7), (1, 9)])
def test_last_quarter_of_max_syn_backlog_is_kept_without_cookies(syncookies: int,
                                                                  admitted: int) -> None:
    """Linux: without cookies a request is dropped while fewer than max_syn_backlog / 4
    slots are left (8 - qlen < 2: from the 8th request on)."""
    h, _ = harness(tcp_syncookies=syncookies, tcp_max_syn_backlog=8)
    lst = h.listen(backlog=128)
    for port in range(1000, 1009):
        syn(h, port)
    h.recv()
    assert lst._syn_recv == admitted
    assert h.engine.mib["ListenDrops"] == 9 - admitted
    assert h.engine.mib["TCPReqQFullDrop"] == 0


def test_accept_queue_full_drops_the_syn_before_any_cookie() -> None:
    """Linux order: the request queue is full (cookies wanted, pressure up), then the
    accept queue is full too: the SYN is dropped (ListenOverflows), no cookie leaves."""
    h, sc = harness()
    lst = h.listen(backlog=1)
    for port in (1000, 1001):
        syn(h, port)
        h.expect(flags="SA")
    for port in (900, 901):
        deliver(h, cookie_ack(h, FULL, src_port=port))
    assert lst.pending == 2 and lst._syn_recv == 2
    syn(h, 1002)
    h.expect_none()
    mib = h.engine.mib
    assert (mib["ListenOverflows"], mib["ListenDrops"], mib["SyncookiesSent"]) == (1, 1, 0)
    assert mib["TCPReqQFullDoCookies"] == 1 and sc.pressure == {lst}


def test_syn_admitted_statefully_calls_on_add() -> None:
    h, _ = harness(tcp_syncookies=2)  # in mode 2 only Fast Open/data SYNs reach Python
    h.listen()
    added: list[FourTuple] = []
    h.engine.on_add = added.append
    syn(h, 1000)
    h.expect(flags="SA", seq=1000)  # stateful while the queue has room (Fast Open decides)
    assert added == [FourTuple(LOCAL_IP, LOCAL_PORT, REMOTE_IP, 1000)]


# ---- what cookie SYN-ACKs offer ----
def test_configure_follows_the_settings_and_the_engines_own_syn_ack() -> None:
    h, sc = harness()
    lst = h.listen()
    assert (sc.mss, sc.wscale, sc.timestamps, sc.sack) == (1460, 7, True, True)
    syn(h, 1000)
    own = h.recv_one()  # the engine's stateful SYN-ACK offers the same
    assert own.options.wscale == sc.wscale and own.options.mss == sc.mss
    assert sc.window <= own.window
    assert lst._syn_recv == 1
    h.engine.settings.set("tcp_timestamps", "2")
    h.engine.settings.set("tcp_window_scaling", "0")
    sc.configure(h.engine)
    assert sc.ts_offset == 0 and sc.wscale == 0 and not sc.window_scaling
    h.engine.settings.set("tcp_timestamps", "1")
    sc.configure(h.engine)
    assert sc.ts_offset == sc._ts_secret


def test_bad_keys_are_refused() -> None:
    with pytest.raises(ValueError):
        SynCookies(b"short")
    with pytest.raises(ValueError):
        SynCookies().rotate(b"x" * 15)
