"""Blind attacks (RFC 5961) on an established connection with a byte stream in flight.

A kernel client in the peer namespace streams through pystack's echo (PeerStream: paced,
both directions hashed); hand-made frames (Injector, AF_PACKET on the peer's veth) carry
the connection's four-tuple with sequence and acknowledgment numbers taken from pystack's
side of the connection at the moment of each try, as the strongest blind attacker (one
who guesses right) would. For every attack: the connection survives (no reset, no error,
the stream's SHA-256 matches end to end) and the counters that must account for it moved
exactly once per try. Attacks that Linux answers without counting anything (out-of-window
RST, data outside the window) are followed by a sentinel frame that is counted
(an ACK of unsent data, TCPAckUnsentData): once the sentinel is counted, the attack frame
before it has been through the engine too (one AF_PACKET socket, one veth, one rx ring:
frames stay in order).

tcp_invalid_ratelimit is 0 (Linux: no per-connection rate limit on challenge and
out-of-window ACKs) so every try is counted as TCPChallengeACK; one test keeps Linux's
500 ms and checks the rate limit instead (TCPACKSkippedChallenge).

Not tested, because no TCP can refuse it: data with an in-window sequence number *and*
an acceptable ACK (RFC 5961 §5 only narrows the ACK range a blind attacker must hit).
"""

from __future__ import annotations

import random
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

from pystack.host import Host
from pystack.tcp import seq as sq
from pystack.wire.errors import WireError
from pystack.wire.tcp import parse_options
from tests.helpers import wait_for
from tests.reliability.support import (
    ACK,
    ECHO_PORT,
    PSH,
    RST,
    SYN,
    Injector,
    PeerStream,
    Tcb,
    counters,
    delta,
    report,
    running_host,
    tcb,
    ts_option,
)

if TYPE_CHECKING:  # imported by name, pytest would try to collect the class
    from pystack.testbed import Testbed

TRIES = 10  # frames of each attack, spread over the stream
WARMUP = 256 * 1024  # bytes echoed before the first try: the connection is busy

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def abed(program) -> Iterator[Testbed]:
    """One bed for the module: each attack runs on its own connection."""
    from pystack.testbed import Testbed

    b = Testbed.create()
    try:
        yield b
    finally:
        b.destroy()


@pytest.fixture(scope="module")
def host(abed, program) -> Iterator[Host]:
    with running_host(abed, program, "net.ipv4.tcp_invalid_ratelimit=0") as h:
        yield h


@pytest.fixture
def inj(abed) -> Iterator[Injector]:
    i = Injector(abed)
    try:
        yield i
    finally:
        i.close()


# ---- what one try sends --------------------------------------------------------------------
@dataclass
class Try:
    """One attack: frames(t) builds the frames of a try from a fresh snapshot t."""

    frames: Callable[[Injector, Tcb, PeerStream], list[bytes]]
    counted: dict[str, int]  # counter -> increase per try (exact)
    sentinel: bool = False  # uncounted attack: follow each try by a counted sentinel
    totals: dict[str, int] | None = None  # exact increases over all tries, if not per try


def _seg(i: Injector, t: Tcb, seq: int, ack: int, flags: int, *, payload: bytes = b"",
         options: bytes | None = None, window: int | None = None) -> bytes:
    """A segment of the attacked connection. No timestamp option by default: a blind
    attacker cannot know TS.Recent, and neither Linux nor pystack apply PAWS to a segment
    without one (an echo of a stale TS.Recent would be PAWS-rejected instead of reaching
    the check under test)."""
    opts = options or b""
    win = (t.snd_wnd >> t.snd_wscale) if window is None else window
    return i.tcp(t.remote_port, t.local_port, seq, ack, flags, window=min(win, 65535),
                 options=opts, payload=payload)


def unsent_ack(t: Tcb) -> int:
    return sq.add(t.snd_nxt, 1 << 20)


def too_old_ack(t: Tcb) -> int:
    """Below SND.UNA - MAX.SND.WND: RFC 5961 §5.2's unacceptable old ACK."""
    return sq.sub(t.snd_una, t.max_window + (1 << 16)) & sq.MASK


def _bad_checksum(frame: bytes) -> bytes:
    f = bytearray(frame)
    f[14 + 20 + 16] ^= 0xFF  # TCP checksum, high byte
    return bytes(f)


def sentinel(i: Injector, t: Tcb) -> bytes:
    """Counted once as TCPAckUnsentData (RFC 5961 §5.2), changes nothing."""
    return _seg(i, t, t.in_window(), unsent_ack(t), ACK)


JUNK = b"\xa5" * 1000  # never part of the stream: its SHA-256 would show it

ATTACKS: dict[str, Try] = {
    # RFC 5961 §3.2: RST in the window but not at RCV.NXT -> challenge ACK, no reset.
    "rst_in_window": Try(lambda i, t, s: [_seg(i, t, t.in_window(), 0, RST)],
                         {"TCPChallengeACK": 1}),
    "rst_ack_in_window": Try(
        lambda i, t, s: [_seg(i, t, t.in_window(), t.snd_una, RST | ACK)],
        {"TCPChallengeACK": 1}),
    # RFC 9293 §3.10.7.4 / RFC 5961 §3.2: RST outside the window -> silently dropped.
    "rst_out_of_window": Try(
        lambda i, t, s: [_seg(i, t, t.beyond_window(), 0, RST),
                         _seg(i, t, sq.sub(t.rcv_nxt, 1 << 20) & sq.MASK, 0, RST)],
        {"TCPChallengeACK": 0}, sentinel=True),
    # RFC 5961 §4.2: SYN in a synchronized state, in window or not -> challenge ACK.
    "syn_in_window": Try(lambda i, t, s: [_seg(i, t, t.in_window(), 0, SYN)],
                         {"TCPSYNChallenge": 1, "TCPChallengeACK": 1}),
    "syn_out_of_window": Try(lambda i, t, s: [_seg(i, t, t.beyond_window(), 0, SYN)],
                             {"TCPSYNChallenge": 1, "TCPChallengeACK": 1}),
    # Data with a sequence number outside the window: dropped (a duplicate ACK answers it).
    "data_out_of_window": Try(
        lambda i, t, s: [_seg(i, t, t.beyond_window(), t.snd_una, ACK | PSH, payload=JUNK),
                         _seg(i, t, sq.sub(t.rcv_nxt, 1 << 24) & sq.MASK, t.snd_una,
                              ACK | PSH, payload=JUNK)],
        {"TCPChallengeACK": 0}, sentinel=True),
    # RFC 5961 §5.2: in-window data whose ACK is unacceptable is dropped with the ACK check.
    "data_ack_unsent": Try(
        lambda i, t, s: [_seg(i, t, t.in_window(), unsent_ack(t), ACK | PSH, payload=JUNK)],
        {"TCPAckUnsentData": 1}),
    "data_ack_too_old": Try(
        lambda i, t, s: [_seg(i, t, t.in_window(), too_old_ack(t), ACK | PSH, payload=JUNK)],
        {"TCPChallengeACK": 1}),
    # RFC 5961 §5.2: ACK of data never sent -> dropped, answered with an ACK.
    "ack_unsent_data": Try(lambda i, t, s: [_seg(i, t, t.in_window(), unsent_ack(t), ACK)],
                           {"TCPAckUnsentData": 1}),
    "ack_too_old": Try(lambda i, t, s: [_seg(i, t, t.in_window(), too_old_ack(t), ACK)],
                       {"TCPChallengeACK": 1}),
    # Junk at RCV.NXT with an acceptable ACK, which TCP would take, in frames the XDP
    # program must drop first: a bad TCP checksum, an IP fragment.
    "data_bad_checksum": Try(lambda i, t, s: [_bad_checksum(
        _seg(i, t, t.rcv_nxt, t.snd_una, ACK | PSH, payload=JUNK))],
        {"XdpDrop:tcp_checksum": 1}),
    "data_ip_fragment": Try(lambda i, t, s: [i.tcp(
        t.remote_port, t.local_port, t.rcv_nxt, t.snd_una, ACK | PSH, payload=JUNK,
        window=min(t.snd_wnd >> t.snd_wscale, 65535), ip_flags="MF")],
        {"XdpDrop:fragment": 1}),
}

# ---- option bombs: pure ACKs in the window with an acceptable ACK and hostile options ----------
_rnd = random.Random(5961)
JUNK_OPTIONS = [bytes(_rnd.randrange(256) for _ in range(40)) for _ in range(TRIES)]
MALFORMED = {
    # a length below 2 never advances (RFC 9293 §3.2): the whole segment is refused
    "opt_zero_length": b"\x08\x00" + b"\x01" * 10,
    "opt_length_one": b"\x01\x01\xfe\x01",
    # lengths running past the header
    "opt_overlong_mss": b"\x02\x28\x05\xb4",
    "opt_overlong_unknown": b"\x01" * 30 + b"\x99\x0b\x00\x00",
    "opt_truncated_timestamp": b"\x01" * 34 + b"\x08\x0a\x00\x00",
    # known kinds with the wrong length
    "opt_bad_sack_length": b"\x01\x01\x05\x0b" + b"\x00" * 9,
}
# Well-formed but meaningless here: must be parsed and ignored.
VALID_BOMBS = {
    # SYN-only options on an ACK, a Fast Open cookie, timestamps echoing nothing, an
    # unknown kind: 40 bytes in all
    "opt_syn_options_on_ack": (b"\x02\x04\x00\x10" + b"\x03\x03\x0e" + b"\x04\x02"
                               + b"\x22\x0a" + b"\xc0" * 8 + b"\x99\x0b" + b"\xee" * 9
                               + b"\x01\x01"),
    "opt_40_nops": b"\x01" * 40,
}


def _sack_bogus(t: Tcb) -> bytes:
    """Four SACK blocks no ACK can justify: beyond SND.NXT, inverted, far below SND.UNA,
    and one straddling SND.NXT (RFC 2018 §3; Linux tcp_is_sackblock_valid)."""
    nxt, una = t.snd_nxt, t.snd_una
    blocks = [(sq.add(nxt, 1000), sq.add(nxt, 5000)), (sq.add(una, 3000), sq.add(una, 1000)),
              (sq.sub(una, 1 << 30) & sq.MASK, sq.sub(una, (1 << 30) - 1448) & sq.MASK),
              (sq.sub(nxt, 100) & sq.MASK, sq.add(nxt, 100))]
    return b"\x01\x01\x05\x22" + b"".join(struct.pack("!II", a, b) for a, b in blocks)


def _parses(options: bytes) -> bool:
    try:
        parse_options(options + b"\x00" * (-len(options) % 4))
    except WireError:
        return False
    return True


def _bomb(options: Callable[[Tcb, int], bytes]) -> Callable[[Injector, Tcb, PeerStream],
                                                            list[bytes]]:
    n = [0]

    def frames(i: Injector, t: Tcb, s: PeerStream) -> list[bytes]:
        n[0] += 1
        return [_seg(i, t, t.in_window(), t.snd_una, ACK, options=options(t, n[0] - 1))]

    return frames


for _name, _opt in MALFORMED.items():
    ATTACKS[_name] = Try(_bomb(lambda t, k, o=_opt: o), {"PystackMalformed:bad_option": 1})
for _name, _opt in VALID_BOMBS.items():
    ATTACKS[_name] = Try(_bomb(lambda t, k, o=_opt: o), {"PystackMalformed:bad_option": 0},
                         sentinel=True)
# 40 bytes of random junk: refused as bad_option exactly when the Python reference parser
# refuses it (the data path parses in C: the two must agree), otherwise parsed and ignored.
ATTACKS["opt_junk_40"] = Try(_bomb(lambda t, k: JUNK_OPTIONS[k]), {}, sentinel=True,
                             totals={"PystackMalformed:bad_option":
                                     sum(not _parses(o) for o in JUNK_OPTIONS)})
ATTACKS["opt_sack_bogus"] = Try(_bomb(lambda t, k: _sack_bogus(t)),
                                {"PystackMalformed:bad_option": 0}, sentinel=True)


# ---- overlapping segments carrying the stream's own bytes ------------------------------------
def _overlaps(i: Injector, t: Tcb, s: PeerStream) -> list[bytes]:
    """A segment straddling RCV.NXT whose part below it is junk (already received: it must
    be trimmed, RFC 9293 §3.10.7.4) and whose new part is the stream's true bytes, plus two
    overlapping out-of-order segments of true bytes if the kernel has that much in flight.
    Only bytes the kernel has sent already: a segment of bytes it has not sent yet makes
    the receiver acknowledge data the kernel never sent, and the kernel then drops every
    ACK (RFC 9293 §3.10.7.4) - the connection stands still (found by this suite; no TCP
    can do better). test_overlapping_segments_fill_a_hole makes room for the ofo case."""
    ahead = s.kernel_sent() - t.bytes_received  # bytes in flight towards pystack
    out = []
    old, new = 700, min(300, max(ahead, 0))
    seq = sq.sub(t.rcv_nxt, old) & sq.MASK
    out.append(_seg(i, t, seq, t.snd_una, ACK,
                    payload=JUNK[:old] + s.bytes_at(t.bytes_received, new)))
    if ahead >= 4000:
        for a, b in ((ahead - 2400, ahead - 1200), (ahead - 1800, ahead - 600)):
            out.append(_seg(i, t, sq.add(t.rcv_nxt, a), t.snd_una, ACK,
                            payload=s.bytes_at(t.bytes_received + a, b - a)))
    return out


ATTACKS["stale_overlap_junk"] = Try(_overlaps, {"TCPChallengeACK": 0}, sentinel=True)


def run_attack(abed: Testbed, h: Host, inj: Injector, name: str,
               attacks: list[tuple[str, Try]], tries: int = TRIES,
               check: Callable[[Tcb], None] | None = None) -> dict[str, int]:
    """Stream through the echo; send `tries` tries of each attack while it flows; check the
    stream and the counters; returns the counter deltas. `check` looks at the connection
    before the first try."""
    stream = PeerStream(abed, ECHO_PORT)
    try:
        wait_for(lambda: stream.received >= WARMUP, 30, "the stream to get going")
        t0 = tcb(h, stream.local_port)
        assert t0 is not None and t0.state == "ESTABLISHED"
        if check is not None:
            check(t0)
        c0 = counters(h)
        sent0 = stream.sent
        for aname, attack in attacks:
            for k in range(tries):
                before = counters(h)
                t = tcb(h, stream.local_port)
                assert t is not None and t.state == "ESTABLISHED", f"{aname} try {k}: {t}"
                frames = attack.frames(inj, t, stream)
                want = dict(attack.counted)
                if attack.sentinel:
                    frames.append(sentinel(inj, t))
                    want["TCPAckUnsentData"] = want.get("TCPAckUnsentData", 0) + 1
                inj.send(*frames)
                key = max(want, key=lambda n: want[n])
                wait_for(lambda b=before, n=key, w=want[key]:
                         counters(h).get(n, 0) - b.get(n, 0) >= w, 10,
                         f"{aname} try {k}: {key} to count it")
        streamed = stream.sent - sent0  # bytes the kernel wrote while the tries went on
        c1 = counters(h)
        t1 = tcb(h, stream.local_port)
        sent, echoed, same = stream.stop()
    finally:
        stream.close()
    d = delta(c0, c1)
    report(f"attack {name}", tries=tries * len(attacks), frames=inj.sent, stream_bytes=sent,
           echoed=echoed, sha256_match=same, streamed_during_tries=streamed,
           counters={k: v for k, v in d.items() if not k.startswith(("XdpAction", "InSegs",
                                                                      "OutSegs"))})
    assert not stream.errors, stream.errors
    assert same and echoed == sent, f"stream corrupted: sent {sent}, echoed {echoed}"
    assert t1 is not None and t1.state == "ESTABLISHED" and t1.error == 0
    assert d.get("EstabResets", 0) == 0
    assert streamed > 0, "the stream stood still during the tries"
    expect: dict[str, int] = {}
    for _, attack in attacks:
        totals = {k: v * tries for k, v in attack.counted.items()}
        totals.update(attack.totals or {})
        if attack.sentinel:
            totals["TCPAckUnsentData"] = totals.get("TCPAckUnsentData", 0) + tries
        for k, v in totals.items():
            expect[k] = expect.get(k, 0) + v
    for cname, total in expect.items():
        assert d.get(cname, 0) == total, f"{cname}: want {total}, counters moved {d}"
    return d


@pytest.mark.parametrize("name", list(ATTACKS))
def test_blind_attack_does_not_break_the_stream(abed, host, inj, name):
    run_attack(abed, host, inj, name, [(name, ATTACKS[name])])


# ---- sequence numbers across 2**32 ----------------------------------------------------------
WRAP_ISS = (1 << 32) - 100_000  # pystack's send sequence wraps within the warm-up


def _half_space(i: Injector, t: Tcb, s: PeerStream) -> list[bytes]:
    """Numbers 2**31 - 1 away, the farthest either side a modular comparison still orders:
    a RST and data that far ahead of RCV.NXT (outside any window), an ACK that far past
    SND.NXT (unsent data) and one that far below SND.NXT (too old: RFC 5961 §5.2)."""
    far = (1 << 31) - 1
    return [_seg(i, t, sq.add(t.rcv_nxt, far), 0, RST),
            _seg(i, t, sq.add(t.rcv_nxt, far), t.snd_una, ACK | PSH, payload=JUNK),
            _seg(i, t, t.in_window(), sq.add(t.snd_nxt, far), ACK),
            # one sequence number lower: two pure ACKs with the same one would be merged by
            # the data path's GRO (the later "advancing" ACK replaces the earlier)
            # (1 MiB short of the edge: SND.NXT moves on while the frame is on its way)
            _seg(i, t, sq.sub(t.in_window(), 1) & sq.MASK,
                 sq.sub(t.snd_nxt, far - (1 << 20)) & sq.MASK, ACK)]


WRAP_ATTACKS = ["rst_in_window", "rst_out_of_window", "syn_in_window", "data_out_of_window",
                "data_ack_unsent", "data_ack_too_old", "ack_unsent_data", "ack_too_old",
                "stale_overlap_junk"]


def test_blind_attacks_across_the_sequence_wrap(abed, host, inj):
    """pystack's ISS just below 2**32 (its send sequence wraps during the warm-up), then the
    RFC 5961 attacks with numbers computed modulo 2**32, and numbers half the space away."""

    def isn(t: object, now: float) -> int:
        return WRAP_ISS

    def wrapped(t: Tcb) -> None:
        assert t.iss == WRAP_ISS and t.snd_una < t.iss, f"no wrap yet: {t}"

    # The engine's ISN function (TcpEngine(isn=...), what unit tests' Harness sets), here
    # for this host only.
    host.call(lambda: setattr(host.engine, "_isn_fn", isn))
    try:
        attacks = [(n, ATTACKS[n]) for n in WRAP_ATTACKS]
        attacks.append(("half_space", Try(_half_space, {"TCPAckUnsentData": 1,
                                                         "TCPChallengeACK": 1})))
        run_attack(abed, host, inj, "across_sequence_wrap", attacks, tries=3, check=wrapped)
    finally:
        host.call(lambda: setattr(host.engine, "_isn_fn", None))


# ---- RFC 5961 §7 rate limits ----------------------------------------------------------------
def test_challenge_acks_are_rate_limited(abed, host, inj):
    """tcp_invalid_ratelimit (per connection, Linux's 500 ms): of a burst of in-window RSTs
    one is answered, the rest are counted as TCPACKSkippedChallenge. tcp_challenge_ack_limit
    (per second, for the whole stack): past it nothing is sent, as Linux."""
    burst = 20
    stream = PeerStream(abed, ECHO_PORT)
    try:
        wait_for(lambda: stream.received >= WARMUP, 30, "the stream to get going")
        figures = {}
        for setting, value in (("tcp_invalid_ratelimit", 500), ("tcp_challenge_ack_limit", 3)):
            host.sysctl(f"net.ipv4.{setting}", value)
            try:
                # The global budget is per second of the loop's clock (time.monotonic):
                # start the burst in a second nothing else has used.
                s0 = int(time.monotonic())
                wait_for(lambda s0=s0: int(time.monotonic()) > s0, 2, "the next second")
                c0 = counters(host)
                t = tcb(host, stream.local_port)
                assert t is not None
                frames = [_seg(inj, t, t.in_window(), 0, RST)] * burst + [sentinel(inj, t)]
                inj.send(*frames)
                wait_for(lambda c=c0: counters(host)["TCPAckUnsentData"]
                         > c["TCPAckUnsentData"], 10, "the burst to be judged")
                d = delta(c0, counters(host))
            finally:
                host.sysctl(f"net.ipv4.{setting}", 0 if setting == "tcp_invalid_ratelimit"
                            else 1000)
            figures[setting] = (d.get("TCPChallengeACK", 0), d.get("TCPACKSkippedChallenge", 0))
        sent, echoed, same = stream.stop()
    finally:
        stream.close()
    report("attack challenge_ack_rate_limits", burst=burst,
           ratelimit_500ms_sent_skipped=figures["tcp_invalid_ratelimit"],
           limit_3_per_s_sent_skipped=figures["tcp_challenge_ack_limit"],
           stream_bytes=sent, sha256_match=same)
    assert same and echoed == sent and not stream.errors
    sent_, skipped = figures["tcp_invalid_ratelimit"]
    assert sent_ + skipped == burst and 1 <= sent_ <= 2, figures
    # A burst straddling two seconds would get two budgets.
    sent_, skipped = figures["tcp_challenge_ack_limit"]
    assert skipped == 0 and 3 <= sent_ <= 6, figures


# ---- a RST exactly at RCV.NXT -----------------------------------------------------------------
def test_rst_at_rcv_nxt_resets_the_connection(abed, host, inj):
    """RFC 5961 §3.2: a RST whose sequence number is exactly RCV.NXT resets the connection
    (the stream is paused first so that RCV.NXT is known exactly); the kernel client then
    gets a reset from pystack for its next segment."""
    stream = PeerStream(abed, ECHO_PORT)
    try:
        wait_for(lambda: stream.received >= WARMUP, 30, "the stream to get going")
        stream.pause()
        t = wait_for(lambda: (x := tcb(host, stream.local_port)) and x.snd_una == x.snd_nxt
                     and x.bytes_received == stream.sent and x, 10, "a quiet connection")
        c0 = counters(host)
        inj.send(_seg(inj, t, t.rcv_nxt, 0, RST))
        wait_for(lambda: counters(host)["EstabResets"] > c0["EstabResets"], 10,
                 "the reset to be taken")
        assert tcb(host, stream.local_port) is None, "the connection is still there"
        stream.resume()
        wait_for(lambda: stream.errors, 10, "the kernel client to see the reset")
        d = delta(c0, counters(host))
    finally:
        stream.close()
    report("attack rst_exact", tries=1, estab_resets=d.get("EstabResets", 0),
           out_rsts=d.get("OutRsts", 0), client_errors=stream.errors)
    assert d["EstabResets"] == 1 and d.get("OutRsts", 0) >= 1
    assert any("ConnectionReset" in e or "BrokenPipe" in e for e in stream.errors)


# ---- out-of-order data around a hole, filled by overlapping segments ----------------------------
def _poll(cond: Callable[[], object], timeout: float) -> bool:
    """cond() became true within timeout seconds (wait_for, without failing)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_overlapping_segments_fill_a_hole(abed, host, inj, loss_program):
    """The loss injector drops one kernel segment (and its next 50 retransmissions) so
    that pystack holds out-of-order data behind a hole; then two overlapping forged
    segments of the stream's true bytes (the first starting with junk below RCV.NXT) fill
    the hole before the kernel's retransmission does. The stream must come out exact."""
    from pystack.faults import LossInjector

    tries = 5
    filled_by_us = 0
    no_data_behind = 0  # attempts where the kernel sent nothing past the hole (retried)
    # Attached before the connection exists: the kernel socket takes the veth's
    # gso_max_segs (1 while an egress injector is on) when it connects, so a dropped
    # "segment" is one MSS and not a 64 KiB GSO packet.
    with LossInjector(abed, "peer", "egress", program=loss_program) as loss:
        stream = PeerStream(abed, ECHO_PORT)
        try:
            wait_for(lambda: stream.received >= WARMUP, 30, "the stream to get going")
            c0 = counters(host)
            k = 0
            while k < tries:
                loss.configure(nth=1, rtx=50, port=ECHO_PORT)
                wait_for(lambda: loss.stats().drop_nth == 1, 10, f"try {k}: a dropped segment")
                t = tcb(host, stream.local_port)
                assert t is not None
                if not _poll(lambda t=t: stream.kernel_sent() - t.bytes_received >= 4000, 5):
                    # Rare (once in a full CI run): the kernel sent less than 4000 bytes past
                    # the hole, e.g. a timeout put it in Loss with cwnd 1, where it only
                    # retransmits the hole (which the injector drops). There is no
                    # out-of-order data to fill around: let its retransmission through and
                    # try again (counted, reported, bounded).
                    no_data_behind += 1
                    assert no_data_behind <= tries, "the kernel never sent past a hole"
                    loss.configure()
                    wait_for(lambda t=t: (x := tcb(host, stream.local_port)) is not None
                             and x.bytes_received > t.bytes_received, 30,
                             f"try {k}: the kernel's retransmission to fill the hole")
                    continue
                k += 1
                t = tcb(host, stream.local_port)
                assert t is not None
                a = _seg(inj, t, sq.sub(t.rcv_nxt, 300) & sq.MASK, t.snd_una, ACK,
                         payload=JUNK[:300] + stream.bytes_at(t.bytes_received, 1100))
                b = _seg(inj, t, sq.add(t.rcv_nxt, 600), t.snd_una, ACK,
                         payload=stream.bytes_at(t.bytes_received + 600, 1200))
                inj.send(a, b)
                wait_for(lambda t=t: (x := tcb(host, stream.local_port)) is not None
                         and x.bytes_received >= t.bytes_received + 1800, 10,
                         f"try {k}: the hole to fill")
                st = loss.stats()
                filled_by_us += st.rtx_seen <= st.drop_rtx  # no retransmission got through
            loss.configure()  # drop nothing more
            c1 = counters(host)
            sent, echoed, same = stream.stop()
        finally:
            stream.close()
    d = delta(c0, c1)
    report("attack overlapping_segments_fill_a_hole", tries=tries, filled_by_forged=filled_by_us,
           retried_no_data_behind_hole=no_data_behind, stream_bytes=sent, sha256_match=same,
           counters={k: v for k, v in d.items() if k.startswith("TCP")})
    assert same and echoed == sent and not stream.errors
    assert filled_by_us == tries, "the kernel's retransmission filled a hole first"
    assert d.get("TCPOFOQueue", 0) >= tries and d.get("EstabResets", 0) == 0


# ---- a discarded segment must leave TS.Recent alone ----------------------------------------------
def test_discarded_ack_leaves_ts_recent_alone(abed, host, inj):
    """An ACK of unsent data is discarded (RFC 5961 §5.2: "MUST be discarded"); Linux
    (tcp_ack) returns before tcp_replace_ts_recent, so the segment's TSval is not
    remembered. If it were, one forged segment at RCV.NXT with a TSval far ahead would make
    PAWS (RFC 7323 §5) reject every later segment of the real peer."""
    stream = PeerStream(abed, ECHO_PORT)
    try:
        wait_for(lambda: stream.received >= WARMUP, 30, "the stream to get going")
        stream.pause()
        t = wait_for(lambda: (x := tcb(host, stream.local_port)) and x.snd_una == x.snd_nxt
                     and x.bytes_received == stream.sent and x.rcv_wup == x.rcv_nxt and x,
                     10, "a quiet connection")
        c0 = counters(host)
        inj.send(_seg(inj, t, t.rcv_nxt, unsent_ack(t), ACK,
                      options=ts_option(t.ts_recent + (1 << 30))))
        wait_for(lambda: counters(host)["TCPAckUnsentData"] > c0["TCPAckUnsentData"], 10,
                 "the forged ACK to be judged")
        t1 = tcb(host, stream.local_port)
        report("attack discarded_ack_ts_recent", tries=1, ts_recent_before=t.ts_recent,
               ts_recent_after=t1.ts_recent if t1 else None)
        assert t1 is not None and t1.ts_recent == t.ts_recent, "TS.Recent took a forged TSval"
        stream.resume()
        wait_for(lambda: stream.received >= t.bytes_received + WARMUP, 10,
                 "the stream to go on (PAWS would reject the peer's segments)")
        sent, echoed, same = stream.stop(timeout=20)
        assert same and echoed == sent
    finally:
        stream.close()
