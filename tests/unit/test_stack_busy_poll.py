"""The loop's busy polling (pystack.stack BUSY_POLL_US): a bounded spin on the rx ring only
right after a turn with activity, with a stand-in data path (no AF_XDP needed)."""

from __future__ import annotations

from pystack.stack import RefuseAll, Stack
from pystack.wire.segment import SYN, TcpSegment


class SpinDatapath:
    """Frames come from `queue`; `spin` hands over the next batch in `after_spin`."""

    def __init__(self) -> None:
        self.queue: list[list[TcpSegment]] = []
        self.after_spin: list[list[TcpSegment]] = []
        self.spins: list[int] = []
        self.waits: list[float] = []
        self.sent: list[TcpSegment] = []

    def receive(self) -> list[TcpSegment]:
        return self.queue.pop(0) if self.queue else []

    def spin(self, usec: int) -> bool:
        self.spins.append(usec)
        if self.after_spin:
            self.queue.append(self.after_spin.pop(0))
            return True
        return False

    def wait(self, timeout: float) -> bool:
        self.waits.append(timeout)
        return False

    def send(self, segs: list[TcpSegment]) -> int:
        self.sent += segs
        return len(segs)


def syn(port: int) -> TcpSegment:
    return TcpSegment(0x0A000002, 0x0A000001, port, 80, 1000, 0, SYN, 65535)


def test_idle_loop_sleeps_without_spinning() -> None:
    dp = SpinDatapath()
    stack = Stack(dp, RefuseAll(), busy_poll_us=100)  # type: ignore[arg-type]
    stack.step(0.05)
    stack.step(0.05)
    assert dp.spins == [] and dp.waits == [0.05, 0.05]


def test_spins_after_activity_and_catches_the_next_frame() -> None:
    dp = SpinDatapath()
    stack = Stack(dp, RefuseAll(), busy_poll_us=100)  # type: ignore[arg-type]
    dp.queue.append([syn(1)])
    assert stack.step(0.05) == 1 and len(dp.sent) == 1  # answered (a RST)
    dp.after_spin.append([syn(2)])
    assert stack.step(0.05) == 1  # caught by the spin: no sleep in poll()
    assert dp.spins == [100] and dp.waits == [] and len(dp.sent) == 2
    # Nothing more comes: one bounded spin, then poll(); then idle, no spin at all.
    assert stack.step(0.05) == 0
    assert dp.spins == [100, 100] and dp.waits == [0.05]
    assert stack.step(0.05) == 0
    assert dp.spins == [100, 100] and dp.waits == [0.05, 0.05]


def test_spin_bounded_by_the_wait_and_off_at_zero() -> None:
    dp = SpinDatapath()
    stack = Stack(dp, RefuseAll(), busy_poll_us=100)  # type: ignore[arg-type]
    dp.queue.append([syn(1)])
    stack.step(0.05)
    stack.step(0.00005)  # the next timer is 50 µs away: spin no longer than that
    assert dp.spins == [50]
    off = SpinDatapath()
    stack = Stack(off, RefuseAll(), busy_poll_us=0)  # type: ignore[arg-type]
    off.queue.append([syn(1)])
    stack.step(0.05)
    stack.step(0.05)
    assert off.spins == [] and off.waits == [0.05]
