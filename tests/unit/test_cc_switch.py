"""Congestion control inside the engine: TCP_CONGESTION switched on a live connection
(Linux tcp_reinit_congestion_control), a user-registered algorithm driven by real loss, and
tcp_slow_start_after_idle (RFC 2861 restart, Linux tcp_cwnd_restart)."""

from __future__ import annotations

import errno
import random
from collections.abc import Iterator

import pytest

from pystack import cc
from pystack.cc.base import AckSample, CaEvent, CaState, CcState
from pystack.cc.reno import Reno
from pystack.sim import LinkConfig, SimNetwork, StreamApp, accept_into
from pystack.tcp.engine import TcpEngine
from pystack.tcp.settings import Settings
from pystack.tcp.testing import LOCAL_ISN, REMOTE_ISN, Harness
from pystack.wire.segment import ACK, TcpOptions

A = 0xC6120001
B = 0xC6120002
L = LOCAL_ISN + 1
R = REMOTE_ISN + 1
M = 1460


class Recorder(Reno):
    """Reno that records every hook the engine calls."""

    name = "recorder_test"
    calls: list[str] = []

    def init(self, tp: CcState) -> None:
        self.calls.append("init")
        tp.priv = "mine"

    def release(self, tp: CcState) -> None:
        self.calls.append("release")

    def ssthresh(self, tp: CcState) -> int:
        self.calls.append("ssthresh")
        return super().ssthresh(tp)

    def cong_avoid(self, tp: CcState, ack: int, acked: int) -> None:
        self.calls.append("cong_avoid")
        super().cong_avoid(tp, ack, acked)

    def undo_cwnd(self, tp: CcState) -> int:
        self.calls.append("undo_cwnd")
        return super().undo_cwnd(tp)

    def pkts_acked(self, tp: CcState, sample: AckSample) -> None:
        self.calls.append("pkts_acked")

    def cwnd_event(self, tp: CcState, ev: CaEvent) -> None:
        self.calls.append(ev.name)

    def set_state(self, tp: CcState, new_state: CaState) -> None:
        self.calls.append(new_state.name)


@pytest.fixture
def recorder() -> Iterator[type[Recorder]]:
    Recorder.calls = []
    cc.register(Recorder)
    yield Recorder
    cc.unregister(Recorder.name)


def _pair(seed: int = 1, **sysctls: object) -> tuple[SimNetwork, TcpEngine, TcpEngine]:
    net = SimNetwork(seed=seed, default=LinkConfig(delay=0.005, rate=4e6))
    s = Settings(**sysctls)
    a, b = TcpEngine(s, secret=b"a" * 16), TcpEngine(s, secret=b"b" * 16)
    net.add_host(A, a)
    net.add_host(B, b)
    return net, a, b


def test_switch_on_a_live_connection(recorder: type[Recorder]) -> None:
    net, a, b = _pair()
    data = random.Random(1).randbytes(2_000_000)
    apps = accept_into(b.listen(0, 80), b"")
    cl = StreamApp(a.connect(A, B, 80), data)
    c = cl.conn
    net.run_for(0.2)
    assert c.cc is not None and c.cc.name == "cubic" and c.tcp_info()["cc"] == "cubic"
    cwnd, ssthresh = c.ccs.snd_cwnd, c.ccs.snd_ssthresh
    assert c.ccs.priv is not None  # cubic's BicTcp
    c.set_option("TCP_CONGESTION", recorder.name)
    # Linux tcp_reinit_congestion_control: release the old (cubic clears its state), init
    # the new; cwnd and ssthresh carry over.
    assert c.cc.name == recorder.name and isinstance(c.cc, Recorder)
    assert recorder.calls == ["init"] and c.ccs.priv == "mine"
    assert (c.ccs.snd_cwnd, c.ccs.snd_ssthresh) == (cwnd, ssthresh)
    assert c.get_option("TCP_CONGESTION") == recorder.name
    assert c.tcp_info()["cc"] == recorder.name
    assert net.run(until=60, stop=lambda: cl.done and bool(apps) and apps[0].done)
    assert apps[0].received == data
    assert "cong_avoid" in recorder.calls and "pkts_acked" in recorder.calls
    assert "release" not in recorder.calls


def test_switch_away_releases_the_old_algorithm(recorder: type[Recorder]) -> None:
    net, a, b = _pair(tcp_congestion_control=recorder.name)
    lst = b.listen(0, 80)
    c = a.connect(A, B, 80)
    net.run(until=1, stop=lambda: lst.pending == 1)
    recorder.calls.clear()
    c.set_option("TCP_CONGESTION", "reno")
    assert recorder.calls == ["release"]
    assert c.cc is not None and c.cc.name == "reno" and c.ccs is not None
    assert c.ccs.priv is None  # the old algorithm's private state is gone


def test_switch_to_the_same_algorithm_is_a_no_op(recorder: type[Recorder]) -> None:
    net, a, b = _pair(tcp_congestion_control=recorder.name)
    lst = b.listen(0, 80)
    c = a.connect(A, B, 80)
    net.run(until=1, stop=lambda: lst.pending == 1)
    assert recorder.calls.count("init") == 2  # both ends
    ops = c.cc
    c.set_option("TCP_CONGESTION", recorder.name)
    assert c.cc is ops and recorder.calls.count("init") == 2


def test_unknown_algorithm_keeps_the_current_one() -> None:
    net, a, b = _pair()
    lst = b.listen(0, 80)
    c = a.connect(A, B, 80)
    net.run(until=1, stop=lambda: lst.pending == 1)
    with pytest.raises(OSError) as info:
        c.set_option("TCP_CONGESTION", "bbr9")
    assert info.value.errno == errno.ENOENT
    assert c.cc is not None and c.cc.name == "cubic"


def test_option_before_connect_selects_the_algorithm(recorder: type[Recorder]) -> None:
    net, a, b = _pair()
    lst = b.listen(0, 80)
    c = a.connect(A, B, 80, options={"TCP_CONGESTION": recorder.name})
    assert c.cc is None and recorder.calls == []
    net.run(until=1, stop=lambda: lst.pending == 1)
    assert c.cc is not None and c.cc.name == recorder.name and recorder.calls == ["init"]
    s = lst.accept()
    assert s is not None and s.cc is not None and s.cc.name == "cubic"


def test_user_algorithm_sees_loss_recovery_hooks(recorder: type[Recorder]) -> None:
    """A real loss on the simulated link drives ssthresh, the state changes and
    COMPLETE_CWR through the user's algorithm."""
    net, a, b = _pair(tcp_congestion_control=recorder.name)
    dropped: list[int] = []

    def drop_one(seg: object) -> bool:
        p = getattr(seg, "payload", b"")
        if p and getattr(seg, "src_ip", 0) == A and not dropped and len(p) > 1000:
            n = getattr(seg, "seq", 0)
            if net.now > 0.05:
                dropped.append(n)
                return False
        return True

    net.filter = drop_one  # type: ignore[assignment]
    data = random.Random(2).randbytes(300_000)
    apps = accept_into(b.listen(0, 80), b"")
    cl = StreamApp(a.connect(A, B, 80), data)
    assert net.run(until=30, stop=lambda: cl.done and bool(apps) and apps[0].done)
    net.run_for(1)  # the last ACKs reach the sender
    assert apps[0].received == data and dropped
    calls = recorder.calls
    i = calls.index("ssthresh")
    assert "RECOVERY" in calls[i:]
    assert "COMPLETE_CWR" in calls[calls.index("RECOVERY"):]
    assert a.mib["TCPSackRecovery"] == 1


def _grown(h: Harness) -> tuple[object, int]:
    c = h.established_client(options=TcpOptions(mss=M))
    c.set_option("SO_SNDBUF", 1 << 22)
    c.send(bytes(M * 200))
    sent = 0
    for _ in range(6):  # six round trips of slow start
        segs = [s for s in h.recv() if s.payload]
        sent += len(segs)
        h.advance(0.01)
        h.send(ACK, R, L + sent * M)
    h.recv()
    return c, sent


def test_slow_start_after_idle_restarts_cwnd() -> None:
    h = Harness(tcp_congestion_control="reno")
    c, sent = _grown(h)
    tp = c.ccs  # type: ignore[attr-defined]
    big = tp.snd_cwnd
    assert big >= 60
    tp.snd_ssthresh = 20  # as after an earlier loss
    rto = c.rtt.rto  # type: ignore[attr-defined]
    h.advance(2.5 * rto)  # idle for 2.5 RTOs
    c.send(bytes(M))  # type: ignore[attr-defined]
    assert len(h.recv()) == 1
    # Linux tcp_cwnd_restart: halve once per RTO idle beyond the first: twice; ssthresh
    # keeps 3/4 of the old cwnd (tcp_current_ssthresh), so slow start climbs back.
    assert tp.snd_cwnd == big >> 2
    assert tp.snd_ssthresh == (big >> 1) + (big >> 2)


def test_slow_start_after_idle_never_below_initial_window() -> None:
    h = Harness(tcp_congestion_control="reno")
    c, _ = _grown(h)
    tp = c.ccs  # type: ignore[attr-defined]
    h.advance(100.0)
    c.send(bytes(M))  # type: ignore[attr-defined]
    h.recv()
    assert tp.snd_cwnd == 10


def test_slow_start_after_idle_disabled() -> None:
    h = Harness(tcp_congestion_control="reno", tcp_slow_start_after_idle=0)
    c, _ = _grown(h)
    tp = c.ccs  # type: ignore[attr-defined]
    big = tp.snd_cwnd
    h.advance(100.0)
    c.send(bytes(M))  # type: ignore[attr-defined]
    h.recv()
    assert tp.snd_cwnd == big


def test_short_idle_keeps_cwnd() -> None:
    h = Harness(tcp_congestion_control="reno")
    c, _ = _grown(h)
    tp = c.ccs  # type: ignore[attr-defined]
    big = tp.snd_cwnd
    h.advance(0.5 * c.rtt.rto)  # type: ignore[attr-defined]
    c.send(bytes(M))  # type: ignore[attr-defined]
    h.recv()
    assert tp.snd_cwnd == big
