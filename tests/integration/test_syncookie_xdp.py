"""SYN cookies in the XDP program (bpf/pystack_xdp.h describes them).

Frame by frame through BPF_PROG_TEST_RUN: which SYNs are answered in XDP and what the
SYN-ACK says (held bit for bit to the Python mirror, pystack.xdp.syncookie), the ACK that
completes the handshake (metadata for the control plane), forged and stale cookies, key
rotation. Then on the veth bed with the peer namespace's kernel as the client: its
connect() completes with Python never seeing the SYN, and a forged ACK is dropped."""

from __future__ import annotations

import select
import socket
import struct
import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, IPOption
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from pystack import testbed
from pystack.io.xsk import XskSocket, csum_ok
from pystack.wire.frame import parse_frame
from pystack.xdp import abi
from pystack.xdp.program import IngressProgram, XdpRunResult
from pystack.xdp.program import test_run_frame as xdp_run
from pystack.xdp.syncookie import make_cookie, time_counter, ts_options
from tests.helpers import connect_error

PORT = 7777  # owned for any address
PORT_AT = 7780  # owned for STACK_IP only
KERNEL_PORT = 7790  # not owned
STACK_IP, PEER_IP = "198.18.0.1", "198.18.0.2"
STACK_MAC, PEER_MAC = "02:00:00:00:00:01", "02:00:00:00:00:02"
KEY = bytes(range(16))
ISN = 0x12345678
TSVAL = 0xAABBCC00
LINUX_OPTS = [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (TSVAL, 0)), ("NOP", None),
              ("WScale", 7)]
COUNTERS = abi.SYNCOOKIE_COUNTERS


@pytest.fixture(scope="module")
def veth(program: IngressProgram) -> Iterator[tuple[testbed.Testbed, IngressProgram, XskSocket]]:
    """One bed for the module, with an AF_XDP socket on the stack side's queue 0 in the
    program's map (BPF_PROG_TEST_RUN needs one there to say "redirect"). The program is
    attached only by `wire`: live traffic would disturb the exact counts of test runs."""
    bed = testbed.Testbed.create()
    xsk = None
    try:
        with bed.enter("stack"):
            xsk = XskSocket(bed.stack.ifname, frames=1024, ring_size=256)
            program.set_xsk(0, xsk.fd)
        program.own_port(PORT)
        program.own_port(PORT_AT, STACK_IP)
        yield bed, program, xsk
    finally:
        program.disown_port(PORT)
        program.disown_port(PORT_AT, STACK_IP)
        program.reset_syncookies()
        if xsk is not None:
            xsk.close()
        bed.destroy()


@pytest.fixture
def wire(veth) -> Iterator[tuple[testbed.Testbed, XskSocket]]:
    """The program attached to the stack side's veth for one test."""
    bed, p, xsk = veth
    with bed.enter("stack"):
        ifindex = p.attach(bed.stack.ifname)
    try:
        yield bed, xsk
    finally:
        p.detach(ifindex)


@pytest.fixture
def prog(veth) -> Iterator[IngressProgram]:
    """The program in mode 2 with a known key; everything SYN-cookie reset afterwards."""
    _, p, _ = veth
    p.reset_syncookies()
    p.set_cookie_key(KEY, rotate=False)
    p.set_syncookies(2)
    p.owned_flows.clear()
    yield p
    p.reset_syncookies()
    p.owned_flows.clear()  # valid cookie ACKs own their flows


# ---- frames ----
def tcp_frame(flags: str = "S", *, sport: int = 40000, dport: int = PORT, seq: int = ISN,
              ack: int = 0, opts: list | None = None, payload: bytes = b"",
              src: str = PEER_IP, ip_options: object = None) -> bytes:
    ip = IP(src=src, dst=STACK_IP) if ip_options is None else IP(src=src, dst=STACK_IP,
                                                                   options=ip_options)
    pkt = (Ether(src=PEER_MAC, dst=STACK_MAC) / ip /
           TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack, window=64240,
               options=opts or []) / payload)
    return bytes(pkt)


def now_count() -> int:
    return time_counter(time.clock_gettime_ns(time.CLOCK_MONOTONIC))


def run(p: IngressProgram, frame: bytes) -> XdpRunResult:
    """One test run; checks the action was counted exactly once, under its own name."""
    a0 = p.actions()
    r = xdp_run(p.prog_fd, frame)
    a1 = p.actions()
    delta = {k: a1[k] - a0[k] for k in a1 if a1[k] != a0[k]}
    assert delta == {r.action: 1}, (r.action, delta)
    return r


def counters_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in after if after[k] != before[k]}


def syn_ack_of(p: IngressProgram, syn: bytes) -> tuple[Ether, int]:
    """Run a SYN that must be answered: the SYN-ACK (checked for the basics) and the
    time counter its cookie was made with."""
    c0, s0 = now_count(), p.syncookie_counters()
    r = run(p, syn)
    c1 = now_count()
    assert r.action == "tx"
    assert counters_delta(s0, p.syncookie_counters()) == {"SyncookiesSent": 1}
    assert csum_ok(r.frame), "SYN-ACK checksums do not verify (pystack's C)"
    sa = Ether(r.frame)
    recomputed = Ether(r.frame)
    del recomputed[IP].chksum, recomputed[TCP].chksum
    recomputed = Ether(bytes(recomputed))
    assert (sa[IP].chksum, sa[TCP].chksum) == (recomputed[IP].chksum, recomputed[TCP].chksum)
    s = Ether(syn)
    assert (sa.src, sa.dst) == (s.dst, s.src)
    assert (sa[IP].src, sa[IP].dst) == (s[IP].dst, s[IP].src)
    assert (sa[TCP].sport, sa[TCP].dport) == (s[TCP].dport, s[TCP].sport)
    assert sa[TCP].flags.S and sa[TCP].flags.A and not sa[TCP].flags & 0x0D  # no FIN RST PSH
    assert sa[TCP].ack == (s[TCP].seq + 1) & 0xFFFFFFFF
    assert sa[IP].ihl == 5 and sa[IP].len == len(r.frame) - 14 and sa[IP].flags.DF
    assert sa[TCP].window == 65535 and sa[IP].ttl == 64
    assert not bytes(sa[TCP].payload)
    return sa, (c0 if c0 == c1 else -1)


def assert_cookie(sa: Ether, count: int, syn: bytes, mss: int | None) -> None:
    """The SYN-ACK's sequence number is the cookie the Python mirror makes."""
    s = Ether(syn)
    counts = [count] if count >= 0 else [now_count() - 1, now_count()]
    want = {make_cookie(KEY, s[IP].src, s[IP].dst, s[TCP].sport, s[TCP].dport, s[TCP].seq,
                        c, mss) for c in counts}
    assert sa[TCP].seq in want, f"cookie {sa[TCP].seq:#x} is not {[hex(w) for w in want]}"


def ack_for(sa: Ether, *, ts: bool = True, seq_delta: int = 0, ack_delta: int = 0,
            src: str = PEER_IP, sport: int = 40000, payload: bytes = b"") -> bytes:
    """The client's third segment for a SYN-ACK (seq = ISN+1, ack = cookie+1)."""
    opts = None
    if ts:
        tsval_ours = dict(sa[TCP].options)["Timestamp"][0]
        opts = [("NOP", None), ("NOP", None), ("Timestamp", (TSVAL + 1, tsval_ours))]
    return tcp_frame("PA" if payload else "A", sport=sport, src=src,
                     seq=(ISN + 1 + seq_delta) & 0xFFFFFFFF,
                     ack=(sa[TCP].seq + 1 + ack_delta) & 0xFFFFFFFF, opts=opts,
                     payload=payload)


# ---- SYN: answered in XDP or not ----
def test_linux_like_syn_gets_a_cookie_syn_ack_with_all_options(prog):
    syn = tcp_frame(opts=LINUX_OPTS)
    sa, count = syn_ack_of(prog, syn)
    assert_cookie(sa, count, syn, 1460)
    opts = sa[TCP].options
    # Linux's order: MSS, SACK-permitted + timestamps, NOP + window scale.
    assert [o[0] for o in opts] == ["MSS", "SAckOK", "Timestamp", "NOP", "WScale"]
    d = dict(opts)
    assert d["MSS"] == 1460 and d["WScale"] == 7
    tsval, tsecr = d["Timestamp"]
    assert tsecr == TSVAL
    assert tsval & 0x3F == ts_options(7, True, False)  # client's wscale 7, SACK, no ECN
    now_ms = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1_000_000 & 0xFFFFFFFF
    assert 0 <= (now_ms - tsval) & 0xFFFFFFFF < 64 + 5000, "TSval is not our ms clock"
    assert sa[TCP].dataofs == 10 and len(bytes(sa)) == 74


@pytest.mark.parametrize("mss, table", [(None, 536), (100, 536), (1299, 536), (1300, 1300),
                                        (1440, 1440), (1459, 1440), (8960, 1460)])
def test_mss_is_encoded_as_the_largest_table_value_not_above_the_syns(prog, mss, table):
    opts = [] if mss is None else [("MSS", mss)]
    syn = tcp_frame(opts=opts)
    sa, count = syn_ack_of(prog, syn)
    assert_cookie(sa, count, syn, table)
    assert sa[TCP].seq & 3 == abi.MSSTAB.index(table)
    # No timestamps: only MSS is offered, as Linux does (nowhere to keep wscale/SACK).
    assert sa[TCP].options == [("MSS", 1460)]
    if mss is None:
        assert len(syn) == 54 and len(bytes(sa)) == 58  # the frame grew for the option
    # The round trip gives the MSS back.
    r = run(prog, ack_for(sa, ts=False))
    assert r.action == "redirect"
    assert r.meta_flags == abi.META_CSUM_OK | abi.META_COOKIE_OK
    info = abi.decode_cookie_info(r.syncookie)
    assert info.mss == table and info.snd_wscale is None
    assert not (info.sack_permitted or info.timestamps or info.ecn)


def test_timestamps_without_sack_or_window_scale(prog):
    syn = tcp_frame(opts=[("MSS", 1440), ("NOP", None), ("NOP", None),
                          ("Timestamp", (TSVAL, 0))])
    sa, count = syn_ack_of(prog, syn)
    assert_cookie(sa, count, syn, 1440)
    assert [o[0] for o in sa[TCP].options] == ["MSS", "NOP", "NOP", "Timestamp"]
    tsval, tsecr = dict(sa[TCP].options)["Timestamp"]
    assert tsecr == TSVAL and tsval & 0x3F == ts_options(None, False, False)


def test_ecn_setup_syn_gets_ece_and_the_ecn_bit(prog):
    syn = tcp_frame("SEC", opts=LINUX_OPTS)
    sa, _ = syn_ack_of(prog, syn)
    assert sa[TCP].flags.E and not sa[TCP].flags.C
    tsval = dict(sa[TCP].options)["Timestamp"][0]
    assert tsval & 0x3F == ts_options(7, True, True)
    r = run(prog, ack_for(sa))
    info = abi.decode_cookie_info(r.syncookie)
    assert r.meta_flags == abi.META_CSUM_OK | abi.META_COOKIE_OK and info.ecn


def test_options_the_configuration_forbids_are_not_offered(prog):
    prog.configure_syncookies(sack=False, window_scaling=False, ecn=False, mss=1400,
                              window=29200, wscale=9, ttl=99)
    sa = Ether(run(prog, tcp_frame("SEC", opts=LINUX_OPTS)).frame)
    assert [o[0] for o in sa[TCP].options] == ["MSS", "NOP", "NOP", "Timestamp"]
    assert dict(sa[TCP].options)["MSS"] == 1400 and sa[TCP].window == 29200
    assert sa[IP].ttl == 99 and not sa[TCP].flags.E
    assert dict(sa[TCP].options)["Timestamp"][0] & 0x3F == ts_options(None, False, False)
    prog.configure_syncookies(timestamps=False)
    sa = Ether(run(prog, tcp_frame(opts=LINUX_OPTS)).frame)
    assert sa[TCP].options == [("MSS", 1400)], "timestamps off: nothing but MSS"


def test_ip_options_are_dropped_from_the_reply(prog):
    syn = tcp_frame(opts=LINUX_OPTS, ip_options=IPOption(b"\x94\x04\x00\x00"))
    assert Ether(syn)[IP].ihl == 6
    sa, count = syn_ack_of(prog, syn)
    assert_cookie(sa, count, syn, 1460)
    assert len(bytes(sa)) == 74


@pytest.mark.parametrize("name, frame", [
    ("fast open cookie request", tcp_frame(opts=[("MSS", 1460), (34, b"")])),
    ("fast open cookie", tcp_frame(opts=[("MSS", 1460), (34, b"\x01" * 8)])),
    ("experimental fast open", tcp_frame(opts=[("MSS", 1460), (254, b"\xf9\x89")])),
    ("payload", tcp_frame(opts=[("MSS", 1460)], payload=b"GET / HTTP/1.0\r\n\r\n")),
])
def test_fast_open_and_data_syns_go_to_the_control_plane(prog, name, frame):
    s0 = prog.syncookie_counters()
    r = run(prog, frame)
    assert r.action == "redirect", name
    assert r.meta_flags == abi.META_CSUM_OK and r.frame == frame
    assert prog.syncookie_counters() == s0


def test_a_foreign_experimental_option_does_not_bypass(prog):
    sa, _ = syn_ack_of(prog, tcp_frame(opts=[("MSS", 1460), (254, b"\x12\x34")]))
    assert sa[TCP].flags.S


@pytest.mark.parametrize("flags", ["SA", "SR", "SF", "A", "R"])
def test_only_bare_syns_are_answered(prog, flags):
    r = run(prog, tcp_frame(flags, opts=LINUX_OPTS))
    assert r.action != "tx"


def test_modes_and_pressure(prog):
    syn = tcp_frame(opts=LINUX_OPTS)
    prog.set_syncookies(0)
    assert run(prog, syn).action == "redirect"
    prog.set_syncookies(1)
    assert prog.syncookies() == 1
    assert run(prog, syn).action == "redirect", "mode 1 without pressure"
    prog.set_listener_pressure(PORT)
    assert run(prog, syn).action == "tx", "mode 1 with the listener under pressure"
    prog.set_listener_pressure(PORT, on=False)
    assert run(prog, syn).action == "redirect", "pressure lowered"
    # Pressure is keyed like owned_ports: the key the SYN matched.
    at = tcp_frame(dport=PORT_AT, opts=LINUX_OPTS)
    prog.set_listener_pressure(PORT_AT)  # (any, port): not the listener's key
    assert run(prog, at).action == "redirect"
    prog.set_listener_pressure(PORT_AT, STACK_IP)
    assert run(prog, at).action == "tx"
    prog.set_syncookies(2)
    prog.set_listener_pressure(PORT_AT, STACK_IP, on=False)
    assert run(prog, at).action == "tx", "mode 2 needs no pressure"
    with pytest.raises(ValueError):
        prog.set_syncookies(3)


def test_the_kernels_ports_never_meet_cookies(prog):
    s0 = prog.syncookie_counters()
    assert run(prog, tcp_frame(dport=KERNEL_PORT, opts=LINUX_OPTS)).action == "pass"
    assert run(prog, tcp_frame("A", dport=KERNEL_PORT, ack=5)).action == "pass"
    assert prog.syncookie_counters() == s0


# ---- the ACK ----
def test_round_trip_gives_the_control_plane_the_options(prog):
    syn = tcp_frame(opts=LINUX_OPTS)
    sa, _ = syn_ack_of(prog, syn)
    s0, d0 = prog.syncookie_counters(), prog.drops()
    ack = ack_for(sa)
    r = run(prog, ack)
    assert r.action == "redirect" and r.frame == ack
    assert r.meta_flags == abi.META_CSUM_OK | abi.META_COOKIE_OK
    info = abi.decode_cookie_info(r.syncookie)
    assert (info.mss, info.snd_wscale, info.rcv_wscale) == (1460, 7, 7)
    assert info.sack_permitted and info.timestamps and not info.ecn
    assert counters_delta(s0, prog.syncookie_counters()) == {"SyncookiesRecv": 1}
    assert prog.drops() == d0
    # The valid ACK made the flow pystack's (as Linux makes the socket in softirq): the
    # client's next segments, whose seq no longer carries the cookie, are steered as an
    # owned flow instead of being judged as cookies (and failing).
    assert len(prog.owned_flows) == 1
    r = run(prog, ack_for(sa, payload=b"hello", seq_delta=5))
    assert r.action == "redirect" and r.meta_flags == abi.META_CSUM_OK
    assert counters_delta(s0, prog.syncookie_counters()) == {"SyncookiesRecv": 1}


@pytest.mark.parametrize("wrong", ["ack+1", "ack-1", "seq+1", "source address", "port"])
def test_wrong_cookie_is_dropped_and_counted(prog, wrong):
    sa, _ = syn_ack_of(prog, tcp_frame(opts=LINUX_OPTS))
    kw = {"ack+1": {"ack_delta": 1}, "ack-1": {"ack_delta": -1}, "seq+1": {"seq_delta": 1},
          "source address": {"src": "198.18.0.3"}, "port": {"sport": 40001}}[wrong]
    s0, d0 = prog.syncookie_counters(), prog.drops()
    r = run(prog, ack_for(sa, **kw))
    assert r.action == "drop"
    assert counters_delta(d0, prog.drops()) == {"syncookie_failed": 1}
    assert counters_delta(s0, prog.syncookie_counters()) == {"SyncookiesFailed": 1}


def test_previous_key_validates_after_one_rotation_not_two(prog):
    syn = tcp_frame(opts=LINUX_OPTS)
    sa, _ = syn_ack_of(prog, syn)
    ack = ack_for(sa)
    prog.rotate_cookie_key()
    r = run(prog, ack)
    assert r.action == "redirect" and r.meta_flags & abi.META_COOKIE_OK
    prog.owned_flows.clear()  # the valid ACK owned its flow; judge the replays again
    sa2 = Ether(run(prog, syn).frame)
    assert sa2[TCP].seq != sa[TCP].seq, "new cookies use the new key"
    prog.rotate_cookie_key()
    d0 = prog.drops()
    assert run(prog, ack).action == "drop"
    assert counters_delta(d0, prog.drops()) == {"syncookie_failed": 1}
    prog.set_cookie_key(KEY, rotate=False)
    assert run(prog, ack).action == "redirect", "the same key again: valid"


def test_acks_the_cookie_code_leaves_alone(prog):
    bogus = tcp_frame("A", seq=1, ack=12345)
    # No cookie sent yet and no pressure: an ACK to the listener is the control plane's.
    r = run(prog, bogus)
    assert r.action == "redirect" and r.meta_flags == abi.META_CSUM_OK
    syn_ack_of(prog, tcp_frame(opts=LINUX_OPTS))  # now the listener has sent cookies
    assert run(prog, bogus).action == "drop"
    # An owned flow (an established connection) is never judged as a cookie.
    prog.own_flow((STACK_IP, PORT), (PEER_IP, 40000))
    try:
        r = run(prog, bogus)
        assert r.action == "redirect" and r.meta_flags == abi.META_CSUM_OK
    finally:
        prog.disown_flow((STACK_IP, PORT), (PEER_IP, 40000))
    # Neither is a RST, nor anything in mode 0.
    assert run(prog, tcp_frame("R", seq=1)).action == "redirect"
    prog.set_syncookies(0)
    r = run(prog, bogus)
    assert r.action == "redirect" and r.meta_flags == abi.META_CSUM_OK


def test_cookies_stay_checkable_after_pressure_drops(prog):
    prog.set_syncookies(1)
    prog.set_listener_pressure(PORT)
    sa, _ = syn_ack_of(prog, tcp_frame(opts=LINUX_OPTS))
    prog.set_listener_pressure(PORT, on=False)
    # The listener sent a cookie less than two minutes ago: its ACKs are still checked.
    r = run(prog, ack_for(sa))
    assert r.action == "redirect" and r.meta_flags & abi.META_COOKIE_OK
    prog.owned_flows.clear()  # the valid ACK owned its flow; judge the next one again
    assert run(prog, ack_for(sa, ack_delta=1)).action == "drop"
    prog.reset_syncookies()  # forgets that cookies were sent
    prog.set_cookie_key(KEY, rotate=False)
    r = run(prog, ack_for(sa, ack_delta=1))
    assert r.action == "redirect" and r.meta_flags == abi.META_CSUM_OK


@settings(max_examples=250, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(opts=st.binary(max_size=40), flags=st.sampled_from(["S", "SEC", "A", "PA", "FA"]),
       payload=st.sampled_from([b"", b"x"]), seq=st.integers(0, 2**32 - 1))
def test_any_option_bytes_in_cookie_mode(prog, opts, flags, payload, seq):
    """Whatever the options (malformed, truncated, EOL early, 40 bytes of NOPs...): one
    counted action, never aborted; a reply is a well-formed SYN-ACK Python can parse."""
    opts += b"\0" * (-len(opts) % 4)
    tcp = TCP(sport=40000, dport=PORT, flags=flags, seq=seq, ack=seq ^ 0x5555,
              dataofs=5 + len(opts) // 4, window=1000)
    frame = bytes(Ether(src=PEER_MAC, dst=STACK_MAC) / IP(src=PEER_IP, dst=STACK_IP) / tcp /
                  Raw(opts + payload))
    d0 = prog.drops()
    r = run(prog, frame)
    assert r.action in ("tx", "redirect", "drop")
    if r.action == "tx":
        assert flags in ("S", "SEC") and not payload
        assert csum_ok(r.frame)
        seg = parse_frame(r.frame, verify_checksums=True).segment
        assert seg.ack == (seq + 1) & 0xFFFFFFFF and seg.options.mss == 1460
        assert Ether(r.frame)[TCP].flags.S and Ether(r.frame)[TCP].flags.A
    elif r.action == "drop":
        assert counters_delta(d0, prog.drops()) == {"syncookie_failed": 1}
    else:
        assert r.frame == frame and r.meta_flags is not None
        assert r.meta_flags & abi.META_CSUM_OK


# ---- the Linux kernel as the client, over the veth pair ----
def drain(xsk: XskSocket) -> list[tuple[int, int, bytes]]:
    """Frames waiting on the AF_XDP socket: (flags, syncookie word, bytes)."""
    out = []
    while True:
        n = xsk.recv()
        if n == 0:
            return out
        for i in range(n):
            d = xsk.rx_descs[i]
            out.append((int(d.flags), int(d.syncookie), bytes(xsk.frame(d))))
        xsk.release(xsk.rx_descs, n)


def frames_until(xsk: XskSocket, done, timeout: float = 5.0) -> list[tuple[int, int, bytes]]:
    got: list[tuple[int, int, bytes]] = []
    deadline = time.monotonic() + timeout
    while not any(done(f) for f in got):
        left = deadline - time.monotonic()
        assert left > 0, f"timed out; frames so far: {[Ether(f[2]).summary() for f in got]}"
        xsk.wait(left)
        got += drain(xsk)
    return got


def tcp_info(sock: socket.socket) -> tuple[int, int, int]:
    """(tcpi_options, tcpi_snd_wscale, tcpi_rcv_wscale) of a kernel socket."""
    raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    return raw[5], raw[6] & 0xF, raw[6] >> 4


def kernel_handshake(bed: testbed.Testbed, xsk: XskSocket) -> tuple[socket.socket, list]:
    c = bed.socket("peer", socket.AF_INET, socket.SOCK_STREAM)
    assert connect_error(c, (bed.stack.ip, PORT)) == 0, "the kernel client did not connect"
    sport = c.getsockname()[1]
    frames = frames_until(xsk, lambda f: TCP in Ether(f[2]) and Ether(f[2])[TCP].sport == sport)
    return c, frames


def close_hard(c: socket.socket) -> None:
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()


def test_kernel_client_connects_through_xdp_cookies(prog, wire):
    bed, xsk = wire
    drain(xsk)
    s0, a0 = prog.syncookie_counters(), prog.actions()
    kernel_before = bed.snmp("stack")
    c, frames = kernel_handshake(bed, xsk)
    try:
        tcpi_options, snd_wscale, rcv_wscale = tcp_info(c)
        # The client took our SYN-ACK's options: timestamps 1, SACK 2, window scale 4.
        assert tcpi_options & 0x7 == 0x7 and snd_wscale == 7
        assert len(frames) == 1, [Ether(f[2]).summary() for f in frames]
        flags, word, raw = frames[0]
        seg = Ether(raw)[TCP]
        assert seg.flags == "A" and not bytes(seg.payload), "Python got something but the ACK"
        assert flags == abi.META_CSUM_OK | abi.META_COOKIE_OK
        info = abi.decode_cookie_info(word)
        assert info.mss == 1460 and info.snd_wscale == rcv_wscale and info.rcv_wscale == 7
        assert info.sack_permitted and info.timestamps
        assert counters_delta(s0, prog.syncookie_counters()) == {"SyncookiesSent": 1,
                                                                 "SyncookiesRecv": 1}
        a1 = prog.actions()
        assert a1["tx"] - a0["tx"] == 1 and a1["redirect"] - a0["redirect"] == 1
        kernel_after = bed.snmp("stack")
        assert kernel_after["InSegs"] == kernel_before["InSegs"], "the stack-side kernel saw it"
        assert kernel_after["OutSegs"] == kernel_before["OutSegs"]
    finally:
        close_hard(c)


def test_forged_ack_from_the_wire_is_dropped_under_pressure(prog, wire):
    bed, xsk = wire
    prog.set_syncookies(1)
    prog.set_listener_pressure(PORT)
    drain(xsk)
    c, frames = kernel_handshake(bed, xsk)  # mode 1 under pressure: cookies too
    close_hard(c)
    assert [f[0] for f in frames] == [abi.META_CSUM_OK | abi.META_COOKIE_OK]
    with bed.enter("peer"):
        raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    try:
        raw.bind((bed.peer.ifname, 0))
        eth = Ether(src=bed.peer.mac, dst=bed.stack.mac)
        ip = IP(src=bed.peer.ip, dst=bed.stack.ip)
        # A bare SYN (no options: the reply must grow) is answered in XDP on the wire too.
        raw.send(bytes(eth / ip / TCP(sport=41000, dport=PORT, flags="S", seq=ISN)))
        deadline = time.monotonic() + 5
        while True:
            assert select.select([raw], [], [], max(0, deadline - time.monotonic()))[0], \
                "no SYN-ACK reached the peer"
            pkt = Ether(raw.recv(2048))
            if TCP in pkt and pkt[IP].src == bed.stack.ip and pkt[TCP].dport == 41000:
                break
        assert pkt[TCP].flags == "SA" and pkt[TCP].options == [("MSS", 1460)]
        assert pkt[TCP].ack == ISN + 1 and csum_ok(bytes(pkt))
        s0, d0 = prog.syncookie_counters(), prog.drops()
        forged = eth / ip / TCP(sport=41001, dport=PORT, flags="A", seq=ISN + 1,
                                ack=(pkt[TCP].seq + 1) & 0xFFFFFFFF)  # another port's cookie
        raw.send(bytes(forged))
        # A RST to the listener is the control plane's: once it arrives, the ACK was judged.
        raw.send(bytes(eth / ip / TCP(sport=41002, dport=PORT, flags="R", seq=1)))
        got = frames_until(xsk, lambda f: Ether(f[2])[TCP].sport == 41002)
        assert not [f for f in got if Ether(f[2])[TCP].sport == 41001], "forged ACK got in"
        assert counters_delta(d0, prog.drops()) == {"syncookie_failed": 1}
        assert counters_delta(s0, prog.syncookie_counters()) == {"SyncookiesFailed": 1}
    finally:
        raw.close()
