"""Two engines over the simulated link: transfers, closes, resets, timeouts, keepalive,
and loss recovery with scripted losses (SACK on and off) plus a seeded property test."""

import errno
import random

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from pystack.sim import LinkConfig, SimNetwork, StreamApp, accept_into, copy_segment
from pystack.tcp.engine import TcpEngine
from pystack.tcp.settings import Settings
from pystack.tcp.state import TcpState
from pystack.wire.segment import TcpSegment

A = 0xC6120001
B = 0xC6120002


def _pair(seed: int = 1, link: LinkConfig | None = None, **sysctls):
    net = SimNetwork(seed=seed, default=link or LinkConfig(delay=0.005))
    s = Settings(**sysctls)
    a = TcpEngine(s, secret=b"a" * 16)
    b = TcpEngine(s, secret=b"b" * 16)
    net.add_host(A, a)
    net.add_host(B, b)
    return net, a, b


def _data(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def test_transfer_both_ways_and_clean_close() -> None:
    net, a, b = _pair()
    up, down = _data(300_000, 1), _data(200_000, 2)
    apps = accept_into(b.listen(0, 80), down)
    client = StreamApp(a.connect(A, B, 80), up)
    assert net.run(until=60, stop=lambda: client.done and apps and apps[0].done)
    server = apps[0]
    assert server.received == up
    assert client.received == down
    net.run_for(1)
    done = {TcpState.TIME_WAIT, TcpState.CLOSED}
    assert client.conn.state in done and server.conn.state in done
    assert client.conn.error == 0 and server.conn.error == 0
    net.run_for(61)
    assert not a.connections and not b.connections
    assert a.mib["CurrEstab"] == 0 and b.mib["CurrEstab"] == 0
    assert a.mib["ActiveOpens"] == 1 and b.mib["PassiveOpens"] == 1


def test_half_close_data_keeps_flowing_the_other_way() -> None:
    net, a, b = _pair()
    lst = b.listen(0, 80)
    c = a.connect(A, B, 80)
    net.run(until=1, stop=lambda: lst.pending == 1)
    s = lst.accept()
    c.shutdown_write()
    net.run_for(0.1)
    assert s.recv(10) == b""
    assert c.state == TcpState.FIN_WAIT_2 and s.state == TcpState.CLOSE_WAIT
    payload = _data(50_000, 3)
    srv = StreamApp(s, payload)
    cli = StreamApp(c)
    assert net.run(until=10, stop=lambda: cli.eof)
    assert cli.received == payload
    net.run_for(0.1)
    assert srv.conn.state == TcpState.CLOSED
    assert c.state == TcpState.TIME_WAIT


def test_abort_sends_rst_and_peer_sees_econnreset() -> None:
    net, a, b = _pair()
    lst = b.listen(0, 80)
    c = a.connect(A, B, 80)
    net.run(until=1, stop=lambda: lst.pending == 1)
    s = lst.accept()
    events: list[str] = []
    s.on_event = lambda conn, kind: events.append(kind)
    c.abort()
    net.run_for(0.1)
    assert s.state == TcpState.CLOSED
    assert s.error == errno.ECONNRESET
    assert "closed" in events
    assert a.mib["OutRsts"] == 1 and b.mib["EstabResets"] == 1


def test_connect_to_closed_port_is_refused() -> None:
    net, a, b = _pair()
    c = a.connect(A, B, 81)
    net.run_for(1)
    assert c.state == TcpState.CLOSED and c.error == errno.ECONNREFUSED
    assert b.mib["OutRsts"] == 1 and a.mib["AttemptFails"] == 1


def test_connect_to_silent_host_times_out_after_syn_retries() -> None:
    net, a, b = _pair(link=LinkConfig(delay=0.005, drop=1.0))
    c = a.connect(A, B, 80)
    net.run(until=126.9)
    assert c.state == TcpState.SYN_SENT
    net.run(until=127.1)
    assert c.error == errno.ETIMEDOUT
    assert a.mib["RetransSegs"] == 6


def test_established_connection_times_out_when_the_link_dies() -> None:
    net, a, b = _pair()
    lst = b.listen(0, 80)
    c = a.connect(A, B, 80)
    net.run(until=1, stop=lambda: lst.pending == 1)
    lst.accept()
    net.default = LinkConfig(delay=0.005, drop=1.0)
    start = net.now
    c.send(b"into the void")
    assert net.run(until=start + 2000, stop=lambda: c.state == TcpState.CLOSED)
    assert c.error == errno.ETIMEDOUT
    assert 900 < net.now - start < 930  # tcp_retries2 = 15 -> ~924.6 s with RTO 200 ms
    # One tail loss probe (RFC 8985 §7, tcp_early_retrans 3) first, then 15 RTOs.
    assert a.mib["TCPLossProbes"] == 1
    assert a.mib["RetransSegs"] == 1 + 15


def test_keepalive_probes_answered_keep_connection() -> None:
    net, a, b = _pair()
    lst = b.listen(0, 80)
    c = a.connect(A, B, 80, options={"SO_KEEPALIVE": 1, "TCP_KEEPIDLE": 10,
                                      "TCP_KEEPINTVL": 5, "TCP_KEEPCNT": 3})
    net.run(until=1, stop=lambda: lst.pending == 1)
    lst.accept()
    tr = net.capture()
    net.run_for(35)
    probes = [(round(t, 3), s) for t, s in tr if s.src_ip == A]
    assert len(probes) == 3  # every 10 s of idleness (each answer restarts the idle time)
    assert all(s.seq == c.snd_una - 1 and not s.payload for _, s in probes)
    assert c.state == TcpState.ESTABLISHED
    assert a.mib["TCPKeepAlive"] == 3


def test_keepalive_gives_up_after_keepcnt_probes() -> None:
    net, a, b = _pair()
    lst = b.listen(0, 80)
    c = a.connect(A, B, 80, options={"SO_KEEPALIVE": 1, "TCP_KEEPIDLE": 10,
                                      "TCP_KEEPINTVL": 5, "TCP_KEEPCNT": 3})
    net.run(until=1, stop=lambda: lst.pending == 1)
    lst.accept()
    t0 = net.now
    net.default = LinkConfig(delay=0.005, drop=1.0)
    assert net.run(until=t0 + 100, stop=lambda: c.state == TcpState.CLOSED)
    assert c.error == errno.ETIMEDOUT
    assert 24.9 < net.now - t0 < 25.1  # idle 10 s + 3 probes 5 s apart
    assert a.mib["TCPKeepAlive"] == 3
    assert a.mib["OutRsts"] == 1


def test_keepalive_default_times_are_linux() -> None:
    net, a, b = _pair()
    lst = b.listen(0, 80)
    c = a.connect(A, B, 80, options={"SO_KEEPALIVE": 1})
    net.run(until=1, stop=lambda: lst.pending == 1)
    assert c.get_option("TCP_KEEPIDLE") == 7200
    assert c.get_option("TCP_KEEPINTVL") == 75
    assert c.get_option("TCP_KEEPCNT") == 9
    t0 = net.now
    net.default = LinkConfig(delay=0.005, drop=1.0)
    assert net.run(until=t0 + 9000, stop=lambda: c.state == TcpState.CLOSED)
    assert abs(net.now - t0 - (7200 + 9 * 75)) < 1


def test_lossy_link_still_delivers() -> None:
    net, a, b = _pair(seed=7, link=LinkConfig(delay=0.01, drop=0.05, reorder=0.05,
                                              duplicate=0.02, corrupt=0.02))
    up = _data(200_000, 9)
    apps = accept_into(b.listen(0, 80), b"")
    client = StreamApp(a.connect(A, B, 80), up)
    assert net.run(until=300, stop=lambda: client.done and apps and apps[0].done)
    assert apps[0].received == up
    assert a.mib["RetransSegs"] > 0
    assert net.stats["corrupted"] > 0


def test_many_connections_one_listener() -> None:
    net, a, b = _pair()
    apps = accept_into(b.listen(0, 80, 64), b"pong")
    clients = [StreamApp(a.connect(A, B, 80), b"ping%d" % i) for i in range(20)]
    assert net.run(until=10, stop=lambda: all(c.done for c in clients))
    assert sorted(bytes(s.received) for s in apps) == sorted(b"ping%d" % i for i in range(20))
    assert all(c.received == b"pong" for c in clients)
    assert len({c.conn.local_port for c in clients}) == 20


# ---------------------------------------------------------------------------------------
# Loss recovery over the simulated link: scripted losses, SACK on and off
# ---------------------------------------------------------------------------------------
RTT = 0.02  # 10 ms each way


class Transfer:
    """A one-way bulk transfer A -> B with a scripted fault function and a cwnd trace."""

    def __init__(self, sack: int, n: int = 400_000, seed: int = 5, rate: float = 4e6,
                 **sysctls: object) -> None:
        sysctls.setdefault("tcp_congestion_control", "reno")
        # A receive buffer that holds a whole window of out-of-order data.
        sysctls.setdefault("tcp_rmem", (4096, 1 << 20, 6 << 20))
        self.net, self.a, self.b = _pair(seed, LinkConfig(delay=RTT / 2, rate=rate),
                                         tcp_sack=sack, **sysctls)
        self.data = _data(n, seed)
        self.rate = rate
        self.apps = accept_into(self.b.listen(0, 80), b"")
        self.cl = StreamApp(self.a.connect(A, B, 80), self.data)
        self.c = self.cl.conn
        self.sent: dict[int, int] = {}  # data seq -> transmissions so far
        self.rtx: list[tuple[float, int]] = []  # (time, seq) of retransmissions
        self.trace: list[tuple[float, int, int, str]] = []
        self.fault: object = None
        self.net.filter = self._filter

    def off(self, seg: TcpSegment) -> int:
        """Stream offset of a data segment from A."""
        return (seg.seq - self.c.iss - 1) & 0xFFFFFFFF

    def _filter(self, seg: TcpSegment) -> bool:
        if seg.src_ip == A and seg.payload:
            k = self.off(seg)
            n = self.sent.get(k, 0)
            self.sent[k] = n + 1
            if n:
                self.rtx.append((self.net.now, k))
        if seg.src_ip == B:
            tp = self.c.ccs
            if tp is not None:
                self.trace.append((self.net.now, tp.snd_cwnd, tp.snd_ssthresh,
                                   tp.ca_state.name))
        f = self.fault
        return True if f is None else bool(f(self, seg))  # type: ignore[operator]

    def delay(self, seg: TcpSegment, extra: float) -> bool:
        """Deliver ``seg`` ``extra`` seconds later than the link would (reordering): it
        still takes its place in the link's serialisation queue."""
        copy = copy_segment(seg)
        net = self.net
        key = (seg.src_ip, seg.dst_ip)
        depart = max(net.now, net._busy.get(key, 0.0)) + (40 + len(seg.payload)) / self.rate
        net._busy[key] = depart  # (SimNetwork's serialisation clock of this direction)
        at = depart + RTT / 2 + extra
        net.schedule(at, lambda: self.b.input(copy, at))
        return False

    def run(self) -> None:
        assert self.net.run(until=120, stop=lambda: self.cl.done and bool(self.apps)
                            and self.apps[0].done)
        self.net.run_for(1)
        assert self.apps[0].received == self.data
        assert self.c.outq == 0

    def mss(self) -> int:
        return self.c.snd_mss


def nth_data(i: int, copies: int = 1):  # type: ignore[no-untyped-def]
    """Fault: drop the first ``copies`` transmissions of the i-th full data segment."""
    def fault(t: Transfer, seg: TcpSegment) -> bool:
        if seg.src_ip != A or not seg.payload:
            return True
        k = t.off(seg)
        return not (k == i * t.mss() and t.sent[k] <= copies)
    return fault


@pytest.mark.parametrize("sack", [0, 1])
def test_one_loss_one_retransmission(sack: int) -> None:
    t = Transfer(sack)
    t.fault = nth_data(60)
    t.run()
    assert [k for _, k in t.rtx] == [60 * t.mss()]
    assert t.a.mib["TCPTimeouts"] == 0
    assert t.a.mib["TCPSackRecovery" if sack else "TCPRenoRecovery"] == 1
    # cwnd before the loss, ssthresh after it: halved (Reno); cwnd = ssthresh with SACK
    # (RFC 6675), ssthresh + 3 inflated by duplicate ACKs without (RFC 6582); back to
    # ssthresh when recovery ends, about one (queue-inflated) round trip later.
    i = next(i for i, x in enumerate(t.trace) if x[3] == "RECOVERY")
    j = next(j for j in range(i, len(t.trace)) if t.trace[j][3] != "RECOVERY")
    before, entry, after = t.trace[i - 1], t.trace[i], t.trace[j]
    assert entry[2] == before[1] // 2
    if sack:
        assert entry[1] == entry[2]
    else:
        assert entry[1] >= entry[2] + 3
    assert after[1:3] == (entry[2], entry[2]) and after[3] == "OPEN"
    assert after[0] - entry[0] < 4 * RTT


@pytest.mark.parametrize("sack", [0, 1])
def test_burst_of_three_losses(sack: int) -> None:
    t = Transfer(sack)
    m = None

    def fault(tr: Transfer, seg: TcpSegment) -> bool:
        nonlocal m
        m = tr.mss()
        if seg.src_ip == A and seg.payload:
            k = tr.off(seg)
            return not (k in (60 * m, 61 * m, 62 * m) and tr.sent[k] == 1)
        return True

    t.fault = fault
    t.run()
    assert m is not None
    assert sorted(k for _, k in t.rtx) == [60 * m, 61 * m, 62 * m]
    assert t.a.mib["TCPTimeouts"] == 0
    assert t.a.mib["TCPSackRecovery" if sack else "TCPRenoRecovery"] == 1
    times = [x for x, _ in t.rtx]
    if sack:
        assert times[-1] - times[0] < RTT  # all holes within the first round trip
    else:
        assert times[-1] - times[0] >= 2 * RTT  # NewReno: one hole per round trip


@pytest.mark.parametrize("sack", [0, 1])
def test_lost_retransmission(sack: int) -> None:
    t = Transfer(sack)
    t.fault = nth_data(60, copies=2)
    t.run()
    m = t.mss()
    assert [k for _, k in t.rtx] == [60 * m, 60 * m]
    if sack:
        # Found from SACKs of data sent after it: no timeout.
        assert t.a.mib["TCPLostRetransmit"] == 1 and t.a.mib["TCPTimeouts"] == 0
    else:
        assert t.a.mib["TCPTimeouts"] == 1  # NewReno has only the RTO for it


@pytest.mark.parametrize("sack", [0, 1])
def test_ack_loss_needs_no_retransmission(sack: int) -> None:
    t = Transfer(sack)
    rng = random.Random(4)

    def fault(tr: Transfer, seg: TcpSegment) -> bool:
        # Half of the ACKs in the middle of the transfer (not the handshake, not the tail:
        # a lost last ACK is only repaired by a retransmission timeout).
        middle = 0.05 < tr.net.now < 0.5
        return seg.src_ip != B or not middle or rng.random() > 0.5

    t.fault = fault
    t.run()
    assert t.net.stats["filtered"] > 20
    assert t.a.mib["RetransSegs"] == 0 and t.a.mib["TCPTimeouts"] == 0


@pytest.mark.parametrize("sack", [0, 1])
def test_reordering_below_the_threshold(sack: int) -> None:
    t = Transfer(sack)
    done: list[int] = []

    def fault(tr: Transfer, seg: TcpSegment) -> bool:
        if seg.src_ip == A and seg.payload and tr.off(seg) == 60 * tr.mss() and not done:
            done.append(1)
            return tr.delay(seg, 1.5 * 1500 / 4e6)  # overtaken by one or two segments
        return True

    t.fault = fault
    t.run()
    assert done and t.a.mib["RetransSegs"] == 0
    if sack:
        assert t.a.mib["TCPSACKReorder"] == 1


@pytest.mark.parametrize(("ts", "max_reordering"), [(0, 300), (1, 300), (0, 3)])
def test_reordering_above_the_threshold_undone_and_learned(ts: int,
                                                          max_reordering: int) -> None:
    t = Transfer(1, n=1_200_000, tcp_timestamps=ts, tcp_max_reordering=max_reordering)
    late: list[int] = []

    def fault(tr: Transfer, seg: TcpSegment) -> bool:
        if seg.src_ip == A and seg.payload and tr.sent[tr.off(seg)] == 1:
            k = tr.off(seg) // tr.mss()
            if k in (60, 400):
                late.append(k)
                # Overtaken by about six segments, then by about four: either is beyond
                # the initial dupthresh of 3.
                return tr.delay(seg, (6 if k == 60 else 4) * 1500 / 4e6)
        return True

    t.fault = fault
    t.run()
    assert late == [60, 400]
    # The first time: a spurious fast retransmit, undone -- by the timestamp echo of the
    # original (Eifel) when timestamps are on, else by the D-SACK for the duplicate --
    # and the degree is learned (up to tcp_max_reordering), so the second time costs
    # nothing.
    if max_reordering == 3:
        assert t.a.mib["RetransSegs"] >= 2 and t.c.tcp_info()["reordering"] == 3
        return
    assert t.a.mib["RetransSegs"] == 1
    if ts:
        assert t.a.mib["TCPPartialUndo"] == 1 and t.a.mib["TCPTSReorder"] == 1
    else:
        assert t.a.mib["TCPDSACKUndo"] == 1 and t.a.mib["TCPDSACKRecv"] == 1
    assert t.c.tcp_info()["reordering"] >= 6
    assert t.c.tcp_info()["reord_seen"] >= 2


@pytest.mark.parametrize("sack", [0, 1])
def test_rto_when_everything_is_lost_for_a_while(sack: int) -> None:
    t = Transfer(sack)
    t.fault = lambda tr, seg: not (0.1 <= tr.net.now < 0.4)  # a 300 ms blackout
    t.run()
    assert t.a.mib["TCPTimeouts"] >= 1
    assert t.a.mib["TCPSpuriousRTOs"] == 0


@hsettings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    sack=st.booleans(),
    ts=st.booleans(),
    ecn=st.booleans(),
    cubic=st.booleans(),
    drop=st.floats(0, 0.12),
    reorder=st.floats(0, 0.3),
    dup=st.floats(0, 0.05),
    n=st.integers(1, 150_000),
)
def test_property_any_loss_and_reorder_pattern_delivers_exactly(
    seed: int, sack: bool, ts: bool, ecn: bool, cubic: bool, drop: float, reorder: float,
    dup: float, n: int,
) -> None:
    """Loss recovery in every configuration (SACK or NewReno, timestamps, ECN, Reno or
    CUBIC) delivers the stream exactly over a lossy, reordering, duplicating link."""
    link = LinkConfig(delay=0.01, jitter=0.003, drop=drop, reorder=reorder,
                      reorder_delay=0.012, duplicate=dup, rate=3e6)
    net, a, b = _pair(seed, link, tcp_sack=int(sack), tcp_timestamps=int(ts),
                      tcp_ecn=1 if ecn else 0,
                      tcp_congestion_control="cubic" if cubic else "reno")
    data = _data(n, seed)
    apps = accept_into(b.listen(0, 80), b"")
    cl = StreamApp(a.connect(A, B, 80), data)
    assert net.run(until=1500, stop=lambda: cl.done and bool(apps) and apps[0].done)
    assert bytes(apps[0].received) == data
    assert cl.error == 0 and apps[0].error == 0
